#!/usr/bin/env bash
# Sets up a fresh machine (scripts/setup.sh) and runs the main job: `lt up`, the whole platform
# with an embedded nats-server. Extra arguments go to `lt up` (see `lt up --help`).
#
#   scripts/up.sh                 # run until Ctrl-C
#   scripts/up.sh --duration 30s  # run for 30 s
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
scripts/setup.sh
cargo build -p lt
exec cargo run --quiet -p lt -- up "$@"
