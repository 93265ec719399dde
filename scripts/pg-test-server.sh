#!/usr/bin/env bash
# A throwaway PostgreSQL for the PostgreSQL store's tests (Debian's `postgresql` package):
# a new cluster in a temporary directory, listening only on a Unix socket there, no TCP.
#
#   eval "$(scripts/pg-test-server.sh start)"   # starts it, prints the exports
#   cargo test -p server --test pg_store          # the tests read NARA_TEST_DATABASE_URL
#   scripts/pg-test-server.sh stop "$NARA_TEST_PG_DIR"
#
# PostgreSQL refuses to run as root: as root (CI) the cluster runs as user `postgres`.
set -euo pipefail

bin_dir() {
  local d
  d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  if [ -z "$d" ] || [ ! -x "$d/initdb" ]; then
    echo "PostgreSQL is not installed: apt-get install postgresql (Debian)" >&2
    exit 1
  fi
  echo "$d"
}

as_owner() {
  if [ "$(id -u)" -eq 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

case "${1:-}" in
  start)
    bin=$(bin_dir)
    dir=$(mktemp -d "${TMPDIR:-/tmp}/nara-pg.XXXXXX")
    user=$(id -un)
    if [ "$(id -u)" -eq 0 ]; then
      chown postgres: "$dir"
      user=postgres
    fi
    as_owner "$bin/initdb" -D "$dir/data" -U "$user" -A trust --no-sync -E UTF8 >"$dir/initdb.log" 2>&1 \
      || { cat "$dir/initdb.log" >&2; exit 1; }
    # Tests only: no fsync (a crashed test cluster is thrown away); many small databases.
    as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w \
      -o "-c listen_addresses='' -k $dir -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200" \
      start >/dev/null || { cat "$dir/server.log" >&2; exit 1; }
    echo "export NARA_TEST_PG_DIR='$dir'"
    echo "export NARA_TEST_DATABASE_URL='host=$dir user=$user dbname=postgres'"
    ;;
  stop)
    dir="${2:?usage: $0 stop DIR}"
    bin=$(bin_dir)
    as_owner "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null
    rm -rf "$dir"
    ;;
  *)
    echo "usage: $0 start | stop DIR" >&2
    exit 2
    ;;
esac
