#!/usr/bin/env bash
# Sets up a fresh machine (scripts/setup.sh) and runs every test suite, printing the duration of
# each stage:  setup · fmt · clippy · buf lint · buf breaking · alerts (promtool) · ui test (vitest) · cargo test ·
# ui e2e (Chromium) · py sdk (maturin wheel + pytest) · node sdk (napi build + node --test) ·
# c# sdk (cargo cdylib + csbindgen, mcs, mono) · bench smoke (bus, flow, ingest, live, ui in the
# browser, Python query).
#
#   scripts/test.sh
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

declare -a STAGES=()
total_start=$(date +%s)
stage() {
  local name="$1"; shift
  local t0; t0=$(date +%s)
  printf '\n==> [%s] %s\n' "$name" "$*"
  "$@"
  local dt=$(( $(date +%s) - t0 ))
  STAGES+=("$(printf '%-14s %5ss' "$name" "$dt")")
  printf '<== [%s] done in %ss\n' "$name" "$dt"
}

buf_breaking() {
  local buf="${LANGTIAN_DEPS:-$ROOT/.deps}/venv/bin/buf"
  # Compare the contracts with the previous commit (append-only evolution). When the working tree
  # has uncommitted proto changes, compare with HEAD instead, so that local edits are checked too.
  local ref="HEAD~1"
  if ! git diff --quiet HEAD -- proto 2>/dev/null; then ref="HEAD"; fi
  if git cat-file -e "$ref:proto/buf.yaml" 2>/dev/null; then
    "$buf" breaking proto --against ".git#ref=$ref,subdir=proto"
    echo "buf breaking: proto/ is wire- and JSON-compatible with $ref"
  else
    echo "buf breaking: $ref has no proto/buf.yaml (first version of the contracts); nothing to compare"
  fi
}

stage setup        scripts/setup.sh
stage fmt          cargo fmt --all --check
stage clippy       cargo clippy --workspace --all-targets -- -D warnings
stage buf-lint     "${LANGTIAN_DEPS:-$ROOT/.deps}/venv/bin/buf" lint proto
stage buf-breaking buf_breaking
# The Prometheus scrape configuration and the alerting rules with their unit tests (promtool).
alerts() {
  (cd "$ROOT/config" && promtool check config prometheus.yml && promtool test rules alerts.test.yml)
}
stage alerts       alerts
ui_test() {
  (cd "$ROOT/ui" && LANGTIAN_BUF="${LANGTIAN_DEPS:-$ROOT/.deps}/venv/bin/buf" npm test --silent)
}
stage ui-test      ui_test
stage cargo-test   cargo test --workspace --no-fail-fast
ui_e2e() {
  # The lt binary cargo test just built, driven by playwright-core in Debian's Chromium.
  local target="${LANGTIAN_TARGET_DIR:-${CARGO_TARGET_DIR:-$HOME/.cache/langtian/target}}"
  cargo build --quiet -p lt -p lt-gateway
  (cd "$ROOT/ui" && LT_BIN="$target/debug/lt" npm run --silent e2e)
}
stage ui-e2e       ui_e2e
py_sdk() {
  # The wheel (maturin, the shared dev profile), installed into the SDK venv, then pytest against
  # real `lt up` processes (the lt binary built above) and the notebook example.
  local target="${LANGTIAN_TARGET_DIR:-${CARGO_TARGET_DIR:-$HOME/.cache/langtian/target}}"
  local venv="${LANGTIAN_DEPS:-$ROOT/.deps}/pysdk"
  cargo build --quiet -p lt
  rm -rf "$target/wheels"
  (cd "$ROOT/bindings/python" && "$venv/bin/maturin" build --quiet --profile dev -i "$venv/bin/python" --out "$target/wheels")
  "$venv/bin/pip" install --quiet --disable-pip-version-check --no-deps --force-reinstall "$target"/wheels/langtian-*.whl
  (cd "$ROOT/bindings/python" && LT_BIN="$target/debug/lt" LANGTIAN_ARTIFACTS="$ROOT/bindings/python/artifacts" \
    LANGTIAN_DUCKDB_EXTENSION_DIR="${LANGTIAN_DEPS:-$ROOT/.deps}/duckdb/extensions" "$venv/bin/python" -m pytest -q)
}
stage py-sdk       py_sdk
node_sdk() {
  # The napi-rs addon (debug = the shared dev profile) with its generated index.js / index.d.ts,
  # then node --test against real `lt up` processes and a bare nats-server.
  local target="${LANGTIAN_TARGET_DIR:-${CARGO_TARGET_DIR:-$HOME/.cache/langtian/target}}"
  (cd "$ROOT/bindings/node" && npm run --silent build && \
    LT_BIN="$target/debug/lt" LANGTIAN_NATS_SERVER="${LANGTIAN_DEPS:-$ROOT/.deps}/venv/bin/nats-server" npm test)
}
stage node-sdk     node_sdk
stage csharp-sdk   env LANGTIAN_NATS_SERVER="${LANGTIAN_DEPS:-$ROOT/.deps}/venv/bin/nats-server" bindings/csharp/build.sh test
bench_smoke() {
  cargo run --quiet -p lt -- bench bus --quick --out "${TMPDIR:-/tmp}/lt-bench-smoke" &&
    cargo run --quiet -p lt -- bench flow --quick --out "${TMPDIR:-/tmp}/lt-bench-smoke" &&
    cargo run --quiet -p lt -- bench ingest --quick --out "${TMPDIR:-/tmp}/lt-bench-smoke" &&
    cargo run --quiet -p lt -- bench live --quick --out "${TMPDIR:-/tmp}/lt-bench-smoke" &&
    (cd "$ROOT/ui" && LT_BIN="${LANGTIAN_TARGET_DIR:-${CARGO_TARGET_DIR:-$HOME/.cache/langtian/target}}/debug/lt" \
      npm run --silent bench -- --quick --out "${TMPDIR:-/tmp}/lt-bench-smoke") &&
    (cd "$ROOT/bindings/python" && LT_BIN="${LANGTIAN_TARGET_DIR:-${CARGO_TARGET_DIR:-$HOME/.cache/langtian/target}}/debug/lt" \
      LANGTIAN_DUCKDB_EXTENSION_DIR="${LANGTIAN_DEPS:-$ROOT/.deps}/duckdb/extensions" \
      "${LANGTIAN_DEPS:-$ROOT/.deps}/pysdk/bin/python" bench/query_bench.py --quick --out "${TMPDIR:-/tmp}/lt-bench-smoke")
}
stage bench-smoke  bench_smoke

printf '\n==> stage durations\n'
for s in "${STAGES[@]}"; do echo "  $s"; done
echo "  total          $(( $(date +%s) - total_start ))s"
