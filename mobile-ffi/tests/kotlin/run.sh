#!/usr/bin/env bash
# The Kotlin binding check: builds the mobile-ffi library and nara-server, generates the Kotlin
# bindings with uniffi-bindgen, compiles them with HappyPath.kt, and runs that against the real
# library and a real `nara-server serve` started here on a free loopback port in a temporary
# data directory (set up with `nara-server admin`, as the Python tests do).
#
#   mobile-ffi/tests/kotlin/run.sh
#
# Installs what a fresh Debian machine lacks:
# - JNA: Debian's libjna-java (/usr/share/java/jna.jar), with apt-get (sudo when not root).
# - kotlinc: the npm package kotlin-compiler, into $NARA_KOTLIN_CACHE
#   (default ${XDG_CACHE_HOME:-$HOME/.cache}/nara-kotlin). Maven Central is not reachable and
#   Debian's own kotlin is too old for the generated code.
# Runs on the machine's JDK 17. The compiled bindings and HappyPath.kt are cached there too, keyed
# by the sha256 of their sources (and the compiler version and classpath), so a run where neither
# changed compiles nothing.
set -euo pipefail

KOTLIN_COMPILER_VERSION=2.4.20
RUN_TIMEOUT_S=300

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
cd "$root"
target="${CARGO_TARGET_DIR:-$root/target}"
target="$(cd "$target" 2>/dev/null && pwd || echo "$target")"

say() { echo "kotlin: [${SECONDS}s] $*"; }
die() { echo "kotlin: FAILED: $*" >&2; exit 1; }

for tool in java npm sha256sum timeout; do
    command -v "$tool" >/dev/null || die "$tool is not installed"
done

# ---- cleanup: the server process and the temporary directory, whatever happens ----
work="$(mktemp -d)"
server_pid=""
run_pid=""
cleanup() {
    local status=$?
    if [ -n "$run_pid" ] && kill -0 "$run_pid" 2>/dev/null; then
        kill -TERM "$run_pid" 2>/dev/null || true  # timeout passes it on to java
        wait "$run_pid" 2>/dev/null || true
    fi
    if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
        kill -TERM "$server_pid" 2>/dev/null || true
        for _ in $(seq 1 100); do
            kill -0 "$server_pid" 2>/dev/null || break
            sleep 0.2
        done
        kill -KILL "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    if [ "$status" -ne 0 ] && [ -s "$work/server.log" ]; then
        echo "kotlin: --- server log (last 40 lines) ---" >&2
        tail -n 40 "$work/server.log" >&2 || true
    fi
    rm -rf "$work"
    if [ "$status" -ne 0 ]; then
        echo "kotlin: FAILED (exit $status)" >&2
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---- build and generate ----
scripts/build-debug
lib="$target/debug/libmobile_ffi.so"
server="$target/debug/nara-server"
[ -f "$lib" ] || die "no $lib after the build"
[ -x "$server" ] || die "no $server after the build"

bindings="$work/bindings"
"$target/debug/uniffi-bindgen" generate --library "$lib" --language kotlin \
    --out-dir "$bindings" --no-format
generated="$bindings/uniffi/mobile_ffi/mobile_ffi.kt"
[ -s "$generated" ] || die "uniffi-bindgen wrote no $generated"

# ---- JNA ----
jna="${NARA_JNA_JAR:-/usr/share/java/jna.jar}"
if [ ! -f "$jna" ]; then
    say "installing libjna-java"
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get install -y -q libjna-java >/dev/null 2>&1 || {
        $sudo apt-get update -q
        $sudo apt-get install -y -q libjna-java
    }
fi
[ -f "$jna" ] || die "libjna-java installed no $jna"

# ---- kotlinc ----
cache="${NARA_KOTLIN_CACHE:-${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/nara-kotlin}"
find_kotlinc() {
    local dir="$cache/node_modules/kotlin-compiler"
    [ -d "$dir" ] || return 0
    find "$dir" -type f \( -name kotlinc-jvm -o -name kotlinc \) -path '*/bin/*' 2>/dev/null \
        | sort | sed -n 1p
}
installed_version() {
    sed -n 's/^ *"version": *"\([^"]*\)".*/\1/p' \
        "$cache/node_modules/kotlin-compiler/package.json" 2>/dev/null | sed -n 1p
}
kotlinc="$(find_kotlinc)"
if [ -z "$kotlinc" ] || [ "$(installed_version)" != "$KOTLIN_COMPILER_VERSION" ]; then
    say "installing kotlin-compiler@$KOTLIN_COMPILER_VERSION from npm into $cache"
    mkdir -p "$cache"
    npm install --prefix "$cache" --no-audit --no-fund --loglevel=error \
        "kotlin-compiler@$KOTLIN_COMPILER_VERSION"
    kotlinc="$(find_kotlinc)"
fi
[ -n "$kotlinc" ] || die "no kotlinc-jvm or kotlinc found under $cache/node_modules/kotlin-compiler"
chmod +x "$kotlinc" 2>/dev/null || true
kotlin_home="$(cd "$(dirname "$kotlinc")/.." && pwd)"
stdlib="$kotlin_home/lib/kotlin-stdlib.jar"
[ -f "$stdlib" ] || die "no $stdlib"

classpath="$jna"
# UniFFI's Kotlin bindings need kotlinx-coroutines only for async exports.
if grep -q 'kotlinx\.coroutines' "$generated"; then
    coroutines="$(find "$kotlin_home/lib" -name 'kotlinx-coroutines-core*.jar' | sort | sed -n 1p)"
    [ -n "$coroutines" ] || die "the bindings need kotlinx-coroutines, and $kotlin_home/lib has none"
    classpath="$classpath:$coroutines"
fi

# ---- compile: the bindings (cached by content), then HappyPath.kt ----
key="$( (cat "$generated"; echo "$KOTLIN_COMPILER_VERSION"; echo "$classpath") | sha256sum | cut -c1-16)"
bindings_jar="$cache/bindings/mobile_ffi-$key.jar"
if [ ! -f "$bindings_jar" ]; then
    say "compiling the generated bindings ($(wc -l <"$generated") lines)"
    mkdir -p "$cache/bindings"
    rm -f "$cache"/bindings/mobile_ffi-*.jar
    "$kotlinc" -nowarn -cp "$classpath" -d "$work/bindings.jar" "$generated"
    mv "$work/bindings.jar" "$bindings_jar"
else
    say "compiled bindings unchanged: $bindings_jar"
fi
happy_key="$( (cat "$here/HappyPath.kt"; echo "$bindings_jar") | sha256sum | cut -c1-16)"
happy_jar="$cache/bindings/happy-$happy_key.jar"
if [ ! -f "$happy_jar" ]; then
    say "compiling HappyPath.kt"
    rm -f "$cache"/bindings/happy-*.jar
    "$kotlinc" -cp "$classpath:$bindings_jar" -d "$work/happy.jar" "$here/HappyPath.kt"
    mv "$work/happy.jar" "$happy_jar"
else
    say "HappyPath.kt unchanged: $happy_jar"
fi

# ---- the server ----
data="$work/server"
admin() {
    "$server" admin --data "$data" --json "$@" 2>>"$work/admin.log" \
        || die "nara-server admin $*: $(tail -n 5 "$work/admin.log")"
}
admin add-org --id norr --name "Hemtjänst Norr" >/dev/null
admin add-user --id anna --name Anna --role carer --org norr >/dev/null
admin add-user --id bo --name Bo --role carer --org norr >/dev/null
admin add-user --id nina --name Nina --role nurse --org norr >/dev/null
admin add-patient --id p1 --name "Person p1" >/dev/null
for user in anna bo nina; do
    admin assign --user "$user" --patient p1 >/dev/null
done
# Port 0: the kernel picks a free port and the server prints the address it bound.
"$server" serve --data "$data" --listen 127.0.0.1:0 >"$work/server.log" 2>&1 &
server_pid=$!
url=""
fingerprint=""
for _ in $(seq 1 600); do
    kill -0 "$server_pid" 2>/dev/null || die "nara-server exited: $(tail -n 20 "$work/server.log")"
    url="$(sed -n 's/.*server on \(https:\/\/127\.0\.0\.1:[0-9]*\).*/\1/p' "$work/server.log" | sed -n 1p)"
    fingerprint="$(sed -n 's/.*SHA-256 fingerprint: \([0-9a-f]\{64\}\).*/\1/p' "$work/server.log" | sed -n 1p)"
    [ -n "$url" ] && [ -n "$fingerprint" ] && break
    sleep 0.1
done
[ -n "$url" ] && [ -n "$fingerprint" ] || die "nara-server printed no address and fingerprint within 60 s"
say "server $url (pid $server_pid), fingerprint $fingerprint"

# Enrollment strings (code, server and the pin of its key), issued beside the running server.
enrollment() {
    local out
    out="$(admin enroll --user "$1" --server "${url#https://}")"
    echo "$out" | sed -n 's/.*"enrollment": *"\([^"]*\)".*/\1/p'
}
NARA_ENROLL_ANNA="$(enrollment anna)"
NARA_ENROLL_BO="$(enrollment bo)"
NARA_ENROLL_NINA="$(enrollment nina)"
for c in "$NARA_ENROLL_ANNA" "$NARA_ENROLL_BO" "$NARA_ENROLL_NINA"; do
    [ -n "$c" ] || die "nara-server admin enroll printed no enrollment string"
done

# ---- run ----
mkdir -p "$work/homes"
# In the background, so that a signal to this script is handled (and the server stopped) at once.
NARA_HOMES="$work/homes" \
    NARA_ENROLL_ANNA="$NARA_ENROLL_ANNA" NARA_ENROLL_BO="$NARA_ENROLL_BO" NARA_ENROLL_NINA="$NARA_ENROLL_NINA" \
    timeout "$RUN_TIMEOUT_S" java \
    -Djna.library.path="$(dirname "$lib")" \
    -cp "$happy_jar:$bindings_jar:$classpath:$stdlib" \
    HappyPathKt &
run_pid=$!
status=0
wait "$run_pid" || status=$?
run_pid=""
[ "$status" -ne 124 ] || die "HappyPath did not finish within $RUN_TIMEOUT_S s"
[ "$status" -eq 0 ] || die "HappyPath exited $status"
say "ok in ${SECONDS}s"
