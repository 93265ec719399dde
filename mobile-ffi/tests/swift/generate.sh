#!/usr/bin/env bash
# The Swift binding check, generation only (no Swift compiler exists for this Debian release):
# builds the mobile-ffi library, generates the Swift bindings with uniffi-bindgen into a
# temporary directory, and checks what can be checked without Swift:
# - mobile_ffi.swift, mobile_ffiFFI.h and mobile_ffiFFI.modulemap exist and are not empty;
# - the modulemap names the header, and the Swift file imports that module and declares
#   NaraDevice with its main calls;
# - the FFI header is valid C (gcc, with clang's nullability qualifiers defined away);
# - every function the header declares is exported by libmobile_ffi.so, and vice versa.
#
#   mobile-ffi/tests/swift/generate.sh [OUT_DIR]
#
# With OUT_DIR the bindings are kept there (e.g. to hand to an iOS build); without, they go to a
# temporary directory that is removed.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
cd "$root"
target="${CARGO_TARGET_DIR:-$root/target}"
target="$(cd "$target" 2>/dev/null && pwd || echo "$target")"

failures=0
passed=0
ok() { passed=$((passed + 1)); }
fail() { echo "swift: FAILED: $*" >&2; failures=$((failures + 1)); }

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
if [ $# -ge 1 ]; then
    out="$1"
    mkdir -p "$out"
    out="$(cd "$out" && pwd)"
else
    out="$work/swift"
fi

scripts/build-debug
lib="$target/debug/libmobile_ffi.so"
[ -f "$lib" ] || { echo "swift: FAILED: no $lib after the build" >&2; exit 1; }

"$target/debug/uniffi-bindgen" generate --library "$lib" --language swift \
    --out-dir "$out" --no-format

swift="$out/mobile_ffi.swift"
header="$out/mobile_ffiFFI.h"
modulemap="$out/mobile_ffiFFI.modulemap"

for f in "$swift" "$header" "$modulemap"; do
    if [ -s "$f" ]; then ok; else fail "$(basename "$f") is missing or empty"; fi
done

if [ -s "$modulemap" ]; then
    grep -q '^module mobile_ffiFFI' "$modulemap" && ok || fail "the modulemap declares no module mobile_ffiFFI"
    grep -q 'header "mobile_ffiFFI.h"' "$modulemap" && ok || fail "the modulemap does not name mobile_ffiFFI.h"
fi

if [ -s "$swift" ]; then
    grep -q 'import mobile_ffiFFI' "$swift" && ok || fail "mobile_ffi.swift does not import mobile_ffiFFI"
    for decl in 'class NaraDevice' 'func syncNow(' 'func addNote(' 'func give(' 'func flags(' \
        'func patients(' 'static func enroll(' 'static func `open`(home: String, storeKey: Data)' 'enum NaraError'; do
        grep -qF "$decl" "$swift" && ok || fail "mobile_ffi.swift has no '$decl'"
    done
fi

if [ -s "$header" ]; then
    if command -v gcc >/dev/null; then
        if echo '#include "mobile_ffiFFI.h"' \
            | gcc -fsyntax-only -Wall -Werror -D_Nonnull= -D_Nullable= -I "$out" -x c - 2>"$work/gcc.log"; then
            ok
        else
            fail "mobile_ffiFFI.h is not valid C: $(head -n 20 "$work/gcc.log")"
        fi
    else
        echo "swift: gcc not found: the header's C syntax is not checked" >&2
    fi

    grep -oE '\b(uniffi|ffi)_mobile_ffi_[A-Za-z0-9_]+\(' "$header" | tr -d '(' | sort -u >"$work/declared"
    nm -D --defined-only "$lib" | awk '{print $NF}' | grep -E '^(uniffi|ffi)_mobile_ffi_' \
        | sort -u >"$work/exported"
    if [ ! -s "$work/declared" ]; then
        fail "mobile_ffiFFI.h declares no mobile_ffi function"
    else
        missing="$(comm -23 "$work/declared" "$work/exported")"
        extra="$(comm -13 "$work/declared" "$work/exported")"
        [ -z "$missing" ] && ok || fail "declared in the header, not exported by the library: $missing"
        [ -z "$extra" ] && ok || fail "exported by the library, not declared in the header: $extra"
        echo "swift: $(wc -l <"$work/declared") FFI functions declared and exported"
    fi
fi

ls -l "$swift" "$header" "$modulemap" 2>/dev/null | awk '{print "swift:", $5, $NF}'
echo "swift: $passed checks held, $failures failed"
if [ "$failures" -eq 0 ]; then
    echo "swift-bindings: 1 passed, 0 failed"
else
    echo "swift-bindings: 0 passed, 1 failed"
    exit 1
fi
