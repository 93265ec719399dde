#!/usr/bin/env bash
# A throwaway PostgreSQL for the PostgreSQL store's tests (Debian's `postgresql` package):
# a new cluster in a temporary directory, on a Unix socket there and, for the TLS test, on
# 127.0.0.1 with TLS only from a certificate authority made for it (openssl, which Debian's
# PostgreSQL brings along).
#
#   eval "$(scripts/pg-test-server.sh start)"   # starts it, prints the exports
#   cargo test -p server --test pg_store          # the tests read NARA_TEST_DATABASE_URL
#   scripts/pg-test-server.sh stop "$NARA_TEST_PG_DIR"
#
# NARA_TEST_PG_DURABLE=1 keeps PostgreSQL's durable defaults (for benchmarks).
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
    # A CA and a server certificate for 127.0.0.1, valid two days.
    tls="$dir/tls"
    mkdir "$tls"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
      -subj /CN=nara-test-ca -keyout "$tls/ca.key" -out "$tls/ca.crt" 2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
      -subj /CN=localhost -keyout "$tls/server.key" -out "$tls/server.csr" 2>/dev/null
    printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n' >"$tls/ext"
    openssl x509 -req -in "$tls/server.csr" -CA "$tls/ca.crt" -CAkey "$tls/ca.key" \
      -CAcreateserial -days 2 -extfile "$tls/ext" -out "$tls/server.crt" 2>/dev/null
    chmod 600 "$tls/server.key"
    [ "$(id -u)" -ne 0 ] || chown -R postgres: "$tls"
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])' 2>/dev/null \
      || echo $((20000 + RANDOM % 40000)))
    # Tests: no fsync (a crashed test cluster is thrown away); many small databases. With
    # NARA_TEST_PG_DURABLE=1 (benchmarks beside SQLite, which fsyncs), PostgreSQL's durable
    # defaults: fsync, synchronous commit, full page writes.
    durability="-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    if [ "${NARA_TEST_PG_DURABLE:-0}" = 1 ]; then
      durability=""
    fi
    as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w \
      -o "-c listen_addresses=127.0.0.1 -c port=$port -k $dir -c ssl=on -c ssl_cert_file=$tls/server.crt -c ssl_key_file=$tls/server.key $durability -c max_connections=200" \
      start >/dev/null || { cat "$dir/server.log" >&2; exit 1; }
    echo "export NARA_TEST_PG_DIR='$dir'"
    echo "export NARA_TEST_DATABASE_URL='host=$dir port=$port user=$user dbname=postgres'"
    echo "export NARA_TEST_DATABASE_TLS_URL='host=127.0.0.1 port=$port user=$user dbname=postgres'"
    echo "export NARA_TEST_DATABASE_CA='$tls/ca.crt'"
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
