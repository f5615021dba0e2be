"""Summarises two `llvm-cov export -summary-only` documents (unit tests alone; every suite) into a
table per module on stdout and a JSON file. Called by scripts/coverage.sh.

What is counted: the files of langtian-core/src and bins/*/src. Left out, and said so in the
JSON: langtian-core/src/testkit.rs (the test kit itself: servers and helpers for tests), code
generated into the build directory (protobuf types) and the test files.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
from pathlib import Path

NOT_COUNTED = {"langtian-core/src/testkit.rs": "the test kit (servers and helpers used by tests)"}
KINDS = ("lines", "functions", "regions")


def module_of(rel: str) -> str | None:
    """`langtian-core/src/flow/run.rs` → `langtian-core::flow`; `bins/lt/src/main.rs` → `bins/lt`."""
    parts = rel.split("/")
    if parts[0] == "langtian-core" and len(parts) > 2 and parts[1] == "src":
        name = parts[2][:-3] if parts[2].endswith(".rs") else parts[2]
        return f"langtian-core::{name}"
    if parts[0] == "bins" and len(parts) > 3 and parts[2] == "src":
        return f"bins/{parts[1]}"
    return None


def load(path: Path, root: Path) -> dict[str, dict[str, dict[str, int]]]:
    """Per counted file (relative path): {kind: {count, covered}}."""
    doc = json.loads(path.read_text())
    out: dict[str, dict[str, dict[str, int]]] = {}
    for data in doc.get("data", []):
        for f in data.get("files", []):
            try:
                rel = Path(f["filename"]).resolve().relative_to(root).as_posix()
            except ValueError:
                continue
            if rel in NOT_COUNTED or module_of(rel) is None:
                continue
            s = f["summary"]
            out[rel] = {k: {"count": int(s[k]["count"]), "covered": int(s[k]["covered"])} for k in KINDS}
    if not out:
        sys.exit(f"coverage_report: {path} names no file of langtian-core/src or bins/*/src")
    return out


def add(into: dict[str, dict[str, int]], more: dict[str, dict[str, int]]) -> None:
    for k in KINDS:
        into.setdefault(k, {"count": 0, "covered": 0})
        into[k]["count"] += more[k]["count"]
        into[k]["covered"] += more[k]["covered"]


def pct(c: dict[str, int]) -> float:
    return round(100.0 * c["covered"] / c["count"], 2) if c["count"] else 100.0


def figures(c: dict[str, dict[str, int]]) -> dict[str, object]:
    return {k: {**c[k], "percent": pct(c[k])} for k in KINDS}


def by_module(files: dict[str, dict[str, dict[str, int]]]) -> dict[str, dict[str, dict[str, int]]]:
    mods: dict[str, dict[str, dict[str, int]]] = {}
    for rel, c in files.items():
        add(mods.setdefault(module_of(rel) or "?", {}), c)
    return mods


def total(files: dict[str, dict[str, dict[str, int]]]) -> dict[str, dict[str, int]]:
    t: dict[str, dict[str, int]] = {}
    for c in files.values():
        add(t, c)
    return t


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--root", type=Path, required=True)
    ap.add_argument("--unit", type=Path, required=True)
    ap.add_argument("--all", type=Path, required=True)
    ap.add_argument("--suites", required=True)
    ap.add_argument("--failed", default="")
    ap.add_argument("--min", type=float, default=0.0)
    ap.add_argument("--llvm", default="")
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    root = a.root.resolve()
    unit, every = load(a.unit, root), load(a.all, root)
    # A file no unit test reached is absent from nothing: llvm-cov lists every file of every
    # object, so both documents name the same files.
    mods_unit, mods_all = by_module(unit), by_module(every)
    t_unit, t_all = total(unit), total(every)

    w = max(len(m) for m in mods_all) + 2
    print(f"\n{'module':<{w}}{'lines':>8}{'unit %':>9}{'all %':>8}{'functions all %':>17}")
    for m in sorted(mods_all):
        u = mods_unit.get(m)
        print(
            f"{m:<{w}}{mods_all[m]['lines']['count']:>8}"
            f"{(pct(u['lines']) if u else 0.0):>9.1f}{pct(mods_all[m]['lines']):>8.1f}"
            f"{pct(mods_all[m]['functions']):>17.1f}"
        )
    print(
        f"{'total':<{w}}{t_all['lines']['count']:>8}{pct(t_unit['lines']):>9.1f}"
        f"{pct(t_all['lines']):>8.1f}{pct(t_all['functions']):>17.1f}\n"
    )
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True).stdout.strip() != ""
    except (OSError, subprocess.CalledProcessError):
        commit, dirty = "unknown", False
    doc = {
        "what": "LLVM source-based coverage of langtian-core/src and bins/*/src while the test suites run",
        "commit": commit + ("+uncommitted" if dirty else ""),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "tool": f"rustc -C instrument-coverage; llvm-profdata/llvm-cov {a.llvm}".strip(),
        "suites_all": a.suites.split(),
        "suites_with_failures": a.failed.split(),
        "not_counted": {**NOT_COUNTED, "generated code": "protobuf types generated into the build directory",
                        "bindings/*": "measured by the Python, Node and C# suites, not here",
                        "tests/": "integration test files"},
        "unit": figures(t_unit),
        "all": figures(t_all),
        "min_lines_percent_all": a.min,
        "meets_min": pct(t_all["lines"]) >= a.min,
        "seed_001_target": "unit-test coverage > 80 % (lines)",
        "by_module": {
            m: {"unit": figures(mods_unit[m]) if m in mods_unit else None, "all": figures(mods_all[m])}
            for m in sorted(mods_all)
        },
        "host": {"cores": os.cpu_count()},
    }
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {a.out}")
    print(f"lines covered: unit tests {pct(t_unit['lines'])} %, every suite {pct(t_all['lines'])} %")
    if pct(t_all["lines"]) < a.min:
        print(f"below the minimum: {pct(t_all['lines'])} % < {a.min} %", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
