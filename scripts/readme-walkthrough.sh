#!/usr/bin/env bash
# Runs README.md's walkthroughs as written ("Two workers and a nurse on one machine", then "The
# web views in a browser", which follows it), against a server started as README's command 1
# starts it, in a fresh temporary directory. The one liberty taken: `cargo run -q --release -p
# server --` and `cargo run -q --release -p nara-cli --` become the debug binaries the tests
# already built (target/debug/nara-server and target/debug/nara), so that CI does not build the
# workspace again in release. Fails if any command of a walkthrough fails (bash -e, pipefail),
# so README stays runnable verbatim.
#
# Usage: scripts/readme-walkthrough.sh   (from anywhere; builds the debug binaries first, scripts/build-debug)
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
scripts/build-debug -q --locked
ns_bin="$root/target/debug/nara-server"
nara_bin="$root/target/debug/nara"

work=$(mktemp -d)
server_pid=""
cleanup() {
  if [ -n "$server_pid" ]; then
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

# The sh block that follows a heading, by the heading's text.
block_after() {
  awk -v heading="$1" '
    $0 == heading { found = 1; next }
    found && /^```sh$/ { inside = 1; next }
    inside && /^```$/ { exit }
    inside { print }
  ' README.md
}

script="$work/walkthrough.sh"
{
  echo 'set -euo pipefail'
  block_after "## Two workers and a nurse on one machine"
  block_after "### The web views in a browser"
} | sed -e "s#cargo run -q --release -p server --#\"$ns_bin\"#g" \
        -e "s#cargo run -q --release -p nara-cli --#\"$nara_bin\"#g" > "$script"
if grep -q 'cargo run' "$script"; then
  echo "readme-walkthrough: a walkthrough runs cargo in a form this script does not map:" >&2
  grep -n 'cargo run' "$script" >&2
  exit 1
fi
lines=$(wc -l < "$script")
[ "$lines" -gt 50 ] || { echo "readme-walkthrough: walkthrough not found in README.md" >&2; exit 1; }

cd "$work"
# README's command 1, in the walkthrough's directory (its data in ./nara-data).
"$ns_bin" serve > server.log 2>&1 &
server_pid=$!
for _ in $(seq 1 100); do
  if curl -sfk https://127.0.0.1:7443/healthz > /dev/null 2>&1; then break; fi
  if ! kill -0 "$server_pid" 2>/dev/null; then
    echo "readme-walkthrough: the server did not start:" >&2
    cat server.log >&2
    exit 1
  fi
  sleep 0.2
done
curl -sfk https://127.0.0.1:7443/healthz > /dev/null

if bash "$script" > walkthrough.log 2>&1; then
  echo "readme-walkthrough: ok ($lines lines of README run against the debug binaries)"
else
  status=$?
  echo "readme-walkthrough: failed (exit $status); its output:" >&2
  tail -n 60 walkthrough.log >&2
  exit "$status"
fi
