#!/usr/bin/env bash
# The Python binding tests: builds the mobile-ffi library and nara-server, generates the Python
# bindings with uniffi-bindgen, and runs the test_*.py files against the real library and a real
# server that the tests start. Extra arguments go to pytest (e.g. `-k double_dose -x`).
#
#   mobile-ffi/tests/python/run.sh
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)"
cd "$root"
target="${CARGO_TARGET_DIR:-$root/target}"
target="$(cd "$target" 2>/dev/null && pwd || echo "$target")"

scripts/build-debug
lib="$target/debug/libmobile_ffi.so"
server="$target/debug/nara-server"

bindings="$(mktemp -d)"
trap 'rm -rf "$bindings"' EXIT
"$target/debug/uniffi-bindgen" generate --library "$lib" --language python \
    --out-dir "$bindings" --no-format
# The generated module loads the library from its own directory.
ln -s "$lib" "$bindings/libmobile_ffi.so"

python3 -c 'import pytest' 2>/dev/null || python3 -m pip install -q pytest

NARA_SERVER="$server" PYTHONPATH="$bindings" \
    python3 -m pytest -p no:cacheprovider -q "$root/mobile-ffi/tests/python" "$@"
