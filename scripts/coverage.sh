#!/usr/bin/env bash
# Line, function and region coverage of Langtian's Rust code (langtian-core and the binaries),
# measured with LLVM source-based coverage while the test suites run for real (nats-server,
# DuckLake files, Chromium: the same suites as scripts/test.sh):
#
#   unit          cargo test --lib --bins          (no servers; the seed's "unit-test coverage")
#   integration   cargo test --test '*'            (real nats-server, DuckLake, WebSocket clients)
#   e2e           the UI's end-to-end tests        (Chromium against the instrumented `lt up`)
#   bench-smoke   lt bench bus|flow|ingest|live --quick
#
# It prints a table per module and writes bench/results/coverage.json with two figures: unit tests
# alone, and every suite together. The language bindings (bindings/*) are not measured: their code
# is exercised by the Python, Node and C# suites, which load separately built libraries.
#
#   scripts/coverage.sh [--min PCT] [--skip-e2e] [--out FILE]
#
#   --min PCT    exit 1 when the line coverage of every suite together is below PCT (default 0:
#                report only)
#   --skip-e2e   leave out the UI end-to-end and bench-smoke suites (faster, lower figure)
#   --out FILE   where to write the JSON (default bench/results/coverage.json)
#
# Needs scripts/setup.sh to have run. Builds into its own target directory
# ($LANGTIAN_COV_TARGET_DIR, default ~/.cache/langtian/target-cov) so the instrumented build never
# replaces the normal one; the first run compiles the workspace once more (about 12 minutes on two
# cores). llvm-profdata and llvm-cov come from Debian's llvm-19 (installed when missing): LLVM 19
# reads the profiles and coverage maps of this toolchain's LLVM.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
DEPS="${LANGTIAN_DEPS:-$ROOT/.deps}"
say() { printf '[coverage] %s\n' "$*" >&2; }
die() { say "error: $*"; exit 2; }

MIN=0
E2E=1
OUT="$ROOT/bench/results/coverage.json"
while [ $# -gt 0 ]; do
  case "$1" in
    --min) MIN="${2:?--min needs a percentage}"; shift 2 ;;
    --skip-e2e) E2E=0; shift ;;
    --out) OUT="${2:?--out needs a file}"; shift 2 ;;
    -h|--help) sed -n '2,27p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done
case "$MIN" in ''|*[!0-9.]*) die "--min takes a number (a percentage), got '$MIN'" ;; esac

[ -f "$ROOT/.cargo/config.toml" ] && [ -x "$DEPS/venv/bin/nats-server" ] \
  || die "run scripts/setup.sh first (no .cargo/config.toml or nats-server in $DEPS)"

LLVM_PROFDATA="${LLVM_PROFDATA:-llvm-profdata-19}"
LLVM_COV="${LLVM_COV:-llvm-cov-19}"
if ! command -v "$LLVM_PROFDATA" >/dev/null || ! command -v "$LLVM_COV" >/dev/null; then
  if [ "$(id -u)" = 0 ]; then
    say "installing Debian's llvm-19 (llvm-profdata, llvm-cov)"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq llvm-19) >/dev/null \
      || die "apt-get install llvm-19 failed"
  else
    die "llvm-profdata-19 and llvm-cov-19 are missing: run 'sudo apt-get install llvm-19'"
  fi
fi

export CARGO_TARGET_DIR="${LANGTIAN_COV_TARGET_DIR:-$HOME/.cache/langtian/target-cov}"
export RUSTC_WRAPPER="$ROOT/scripts/coverage-rustc"
PROF="$CARGO_TARGET_DIR/profiles"
rm -rf "$PROF"
mkdir -p "$PROF"/{build,unit,integration,e2e,bench-smoke}
# Instrumented build scripts write profiles too: keep them out of the source tree.
export LLVM_PROFILE_FILE="$PROF/build/%p-%m.profraw"
EXCLUDE=(--exclude langtian-bindings-py --exclude langtian-bindings-node --exclude langtian-bindings-csharp)

declare -a TIMES=()
started=$(date +%s)
step() {
  local name="$1"; shift
  local t0; t0=$(date +%s)
  say "$name: $*"
  local rc=0
  "$@" || rc=$?
  TIMES+=("$(printf '%-12s %5ss  exit %s' "$name" "$(( $(date +%s) - t0 ))" "$rc")")
  return "$rc"
}
failed=()

# Build once and list every executable that carries coverage maps (test harnesses and binaries).
objects_file="$PROF/objects.txt"
build() {
  cargo test --workspace "${EXCLUDE[@]}" --no-run --message-format=json-render-diagnostics \
    | "$DEPS/venv/bin/python" -c '
import json, sys
seen = set()
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["executable"] not in seen:
        seen.add(m["executable"])
        print(m["executable"])
' > "$objects_file"
  # The binaries the tests run (CARGO_BIN_EXE_*) are among them. No separate `cargo build`: it
  # would build langtian-core without the test kit feature, replace target/debug/lt with a binary
  # whose functions no longer match the profiles, and report its code as never run.
  sort -u -o "$objects_file" "$objects_file"
  grep -q '/debug/lt$' "$objects_file" || die "the test build listed no lt binary"
  say "$(wc -l < "$objects_file") instrumented executables"
}
step build build || die "the instrumented build failed"

LLVM_PROFILE_FILE="$PROF/unit/%p-%m.profraw" \
  step unit cargo test --workspace "${EXCLUDE[@]}" --no-fail-fast --lib --bins || failed+=(unit)
LLVM_PROFILE_FILE="$PROF/integration/%p-%m.profraw" \
  step integration cargo test --workspace "${EXCLUDE[@]}" --no-fail-fast --test '*' || failed+=(integration)
if [ "$E2E" = 1 ]; then
  LLVM_PROFILE_FILE="$PROF/e2e/%p-%m.profraw" \
    step e2e env -C "$ROOT/ui" LT_BIN="$CARGO_TARGET_DIR/debug/lt" npm run --silent e2e || failed+=(e2e)
  bench_smoke() {
    local out="${TMPDIR:-/tmp}/lt-coverage-bench" b
    for b in bus flow ingest live; do
      "$CARGO_TARGET_DIR/debug/lt" bench "$b" --quick --out "$out" || return 1
    done
  }
  LLVM_PROFILE_FILE="$PROF/bench-smoke/%p-%m.profraw" step bench-smoke bench_smoke || failed+=(bench-smoke)
fi

# Merge per scope and export the per-file summaries.
export_scope() {
  local scope="$1"; shift
  local files=()
  local d
  for d in "$@"; do
    while IFS= read -r f; do files+=("$f"); done < <(find "$PROF/$d" -name '*.profraw' -size +0)
  done
  [ "${#files[@]}" -gt 0 ] || die "no profiles were written for '$scope'"
  "$LLVM_PROFDATA" merge -sparse -o "$PROF/$scope.profdata" "${files[@]}"
  local objs=() first=1
  while IFS= read -r o; do
    if [ "$first" = 1 ]; then objs+=("$o"); first=0; else objs+=(-object "$o"); fi
  done < "$objects_file"
  "$LLVM_COV" export -summary-only -instr-profile "$PROF/$scope.profdata" \
    -ignore-filename-regex='(/\.cargo/registry/|/rustc/|/target-cov/|/tests/|^/tmp/)' \
    "${objs[@]}" > "$PROF/$scope.json" 2> "$PROF/$scope.llvm-cov.log" \
    || { cat "$PROF/$scope.llvm-cov.log" >&2; die "llvm-cov export failed for '$scope'"; }
}
suites=(unit integration)
[ "$E2E" = 1 ] && suites+=(e2e bench-smoke)
step report-unit export_scope unit unit
step report-all export_scope all "${suites[@]}"

rc=0
"$DEPS/venv/bin/python" "$ROOT/scripts/coverage_report.py" \
  --root "$ROOT" --unit "$PROF/unit.json" --all "$PROF/all.json" --suites "${suites[*]}" \
  --failed "${failed[*]:-}" --min "$MIN" --llvm "$("$LLVM_COV" --version | grep -o 'version [0-9.]*' | head -1)" \
  --out "$OUT" || rc=$?

printf '\n==> coverage steps\n' >&2
for t in "${TIMES[@]}"; do echo "  $t" >&2; done
echo "  total        $(( $(date +%s) - started ))s" >&2
if [ "${#failed[@]}" -gt 0 ]; then
  say "suites with failing tests: ${failed[*]} (the figures include what ran)"
  exit 1
fi
exit "$rc"
