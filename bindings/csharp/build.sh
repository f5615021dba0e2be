#!/usr/bin/env bash
# Builds the C# binding with Mono's mcs (C# 7.2) and, with `test`, runs its tests under mono.
#
#   bindings/csharp/build.sh          # liblangtian_cs.so (cargo; csbindgen writes src/NativeMethods.g.cs),
#                                     # build/Langtian.dll, build/TrayTool.exe, build/Tests.exe
#   bindings/csharp/build.sh test     # ... then mono build/Tests.exe against real lt up / nats-server
#
# Needs mcs and mono (scripts/setup.sh installs Debian's mono-mcs and mono-runtime).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
TARGET="${LANGTIAN_TARGET_DIR:-${CARGO_TARGET_DIR:-$HOME/.cache/langtian/target}}"
OUT="$HERE/build"
command -v mcs >/dev/null && command -v mono >/dev/null || { echo "mcs/mono not found: run scripts/setup.sh" >&2; exit 1; }

(cd "$ROOT" && cargo build --quiet -p langtian-bindings-csharp -p lt)
mkdir -p "$OUT"
cp "$TARGET/debug/liblangtian_cs.so" "$OUT/"
MCS=(mcs -langversion:7.2 -nologo -warnaserror+ -nowarn:1591)
"${MCS[@]}" -unsafe -target:library -out:"$OUT/Langtian.dll" -doc:"$OUT/Langtian.xml" \
  -r:System.Runtime.Serialization.dll "$HERE"/src/*.cs
"${MCS[@]}" -target:exe -out:"$OUT/TrayTool.exe" -r:"$OUT/Langtian.dll" \
  "$HERE/samples/TrayTool/Program.cs" "$HERE/samples/TrayTool/CollectorStatus.cs"
"${MCS[@]}" -target:exe -out:"$OUT/Tests.exe" -r:"$OUT/Langtian.dll" -r:System.Core.dll \
  "$HERE"/tests/*.cs
echo "built $OUT/Langtian.dll, TrayTool.exe, Tests.exe (mcs $(mcs --version | awk '{print $NF}'), C# 7.2)"

if [ "${1:-}" = test ]; then
  cd "$OUT"
  LD_LIBRARY_PATH="$OUT${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" LT_BIN="${LT_BIN:-$TARGET/debug/lt}" \
    TRAY_TOOL="$OUT/TrayTool.exe" mono --debug "$OUT/Tests.exe"
fi
