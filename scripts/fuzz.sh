#!/usr/bin/env bash
# Coverage-guided fuzzing (libFuzzer through cargo-fuzz) of every decoder of external input:
#
#   datagram      a UDP datagram as the collector receives it, in every format
#   envelope      an event envelope (decode; what decodes re-encodes to the same envelope)
#   client_frame  a WebSocket binary frame from a browser to the gateway
#   jwt           a token presented to the gateway (no token verifies without the key)
#   subject       subjects and subscription patterns (ACL checks agree with each other)
#   flow_config   a pipeline file (sql-flow YAML with Jinja variables) as lt-flow reads it
#   topology      a topology file (streams, consumers, KV, DLQ) and the JetStream requests it makes
#
# Each target runs for --seconds (default 60) on its corpus. A crash, a panic, a failed assertion,
# a leak of more than --rss-limit MB or one input running longer than 10 s stops that target and
# leaves the input in fuzz/artifacts/<target>/; the script then exits 1 naming the input and the
# command that replays it. The corpus grows in $LANGTIAN_FUZZ_CORPUS (default
# ~/.cache/langtian/fuzz-corpus), seeded from fuzz/seeds/<target>/ and config/pipelines/; a
# target with fuzz/dict/<target>.dict gets it as libFuzzer's dictionary.
#
#   scripts/fuzz.sh [--seconds N] [--rss-limit MB] [TARGET...]
#
# Needs scripts/setup.sh to have run (libduckdb, .cargo/config.toml). Builds with the stable
# toolchain (no sanitizer: `-s none`; Rust's own checks — bounds, overflow with debug assertions —
# still panic) into its own target dir ($LANGTIAN_FUZZ_TARGET_DIR, default
# ~/.cache/langtian/target-fuzz); the first build takes about 10 minutes on two cores. Installs
# cargo-fuzz 0.13.2 from crates.io when missing.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
say() { printf '[fuzz] %s\n' "$*" >&2; }
die() { say "error: $*"; exit 2; }

ALL=(datagram envelope client_frame jwt subject flow_config topology)
SECONDS_PER=60
RSS=2048
TARGETS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) SECONDS_PER="${2:?--seconds needs a number}"; shift 2 ;;
    --rss-limit) RSS="${2:?--rss-limit needs megabytes}"; shift 2 ;;
    -h|--help) sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) die "unknown option $1 (see --help)" ;;
    *) TARGETS+=("$1"); shift ;;
  esac
done
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=("${ALL[@]}")
for t in "${TARGETS[@]}"; do
  [[ " ${ALL[*]} " == *" $t "* ]] || die "unknown target \`$t\` (targets: ${ALL[*]})"
done
[[ "$SECONDS_PER" =~ ^[1-9][0-9]*$ ]] || die "--seconds must be a whole number ≥ 1, not \`$SECONDS_PER\`"
[ -f .cargo/config.toml ] || die "run scripts/setup.sh first (.cargo/config.toml is missing)"

CARGO_FUZZ_VERSION=0.13.2
if ! cargo fuzz --version 2>/dev/null | grep -q "$CARGO_FUZZ_VERSION"; then
  say "installing cargo-fuzz $CARGO_FUZZ_VERSION"
  cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked --quiet
fi

# The targets link libduckdb.so (langtian-core's lake feature): found where setup.sh put it.
DUCKDB_LIB_DIR="$(sed -n 's/^DUCKDB_LIB_DIR = "\(.*\)"$/\1/p' .cargo/config.toml)"
[ -f "$DUCKDB_LIB_DIR/libduckdb.so" ] || die "libduckdb.so not found in \`$DUCKDB_LIB_DIR\` (run scripts/setup.sh)"
export LD_LIBRARY_PATH="$DUCKDB_LIB_DIR${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
TARGET_DIR="${LANGTIAN_FUZZ_TARGET_DIR:-$HOME/.cache/langtian/target-fuzz}"
CORPUS="${LANGTIAN_FUZZ_CORPUS:-$HOME/.cache/langtian/fuzz-corpus}"
t0=$(date +%s)
say "building the fuzz targets (target dir $TARGET_DIR)"
(cd fuzz && cargo fuzz build -s none --target-dir "$TARGET_DIR") || die "the fuzz build failed"
say "built in $(( $(date +%s) - t0 )) s"

failed=()
for t in "${TARGETS[@]}"; do
  mkdir -p "$CORPUS/$t" "fuzz/artifacts/$t"
  [ -d "fuzz/seeds/$t" ] && cp -n fuzz/seeds/"$t"/* "$CORPUS/$t/" 2>/dev/null || true
  [ "$t" = flow_config ] && cp -n config/pipelines/*.yml "$CORPUS/$t/" 2>/dev/null || true
  log="$TARGET_DIR/fuzz-$t.log"
  dict=""
  [ -f "fuzz/dict/$t.dict" ] && dict="$ROOT/fuzz/dict/$t.dict"
  say "$t: ${SECONDS_PER} s"
  if (cd fuzz && cargo fuzz run -s none --target-dir "$TARGET_DIR" "$t" "$CORPUS/$t" -- \
        -max_total_time="$SECONDS_PER" -rss_limit_mb="$RSS" -timeout=10 -print_final_stats=1 \
        ${dict:+-dict="$dict"} >"$log" 2>&1); then
    runs=$( { grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" || true; } | grep -o '[0-9]*$' || true)
    cov=$( { grep -o 'cov: [0-9]*' "$log" || true; } | tail -1 | grep -o '[0-9]*' || true)
    say "$t: ok — $runs inputs, $cov coverage points, corpus $(ls "$CORPUS/$t" | wc -l) inputs"
  else
    art=$( { grep -o 'Test unit written to [^ ]*' "$log" || true; } | tail -1 | sed 's/Test unit written to //')
    grep -E 'panicked at|ERROR: libFuzzer|SUMMARY' "$log" | head -5 >&2 || true
    say "$t: FAILED — input ${art:-none written}; replay: LD_LIBRARY_PATH=$DUCKDB_LIB_DIR cargo fuzz run -s none --target-dir $TARGET_DIR $t ${art:-} (in fuzz/); log $log"
    failed+=("$t")
  fi
done
say "done in $(( $(date +%s) - t0 )) s"
[ ${#failed[@]} -eq 0 ] || { say "failed: ${failed[*]}"; exit 1; }
