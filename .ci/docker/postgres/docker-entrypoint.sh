#!/usr/bin/env bash
# Initialises an empty data folder from POSTGRES_USER / POSTGRES_PASSWORD / POSTGRES_DB (and
# POSTGRES_INITDB_ARGS, POSTGRES_HOST_AUTH_METHOD) as the official image does, then runs the server
# as the postgres user, listening on all addresses.
set -euo pipefail

if [ "${1:0:1}" = - ]; then set -- postgres "$@"; fi
if [ "$1" != postgres ]; then exec "$@"; fi

# Started as root: own the data folder whatever created it (named volume, bind mount), then drop.
if [ "$(id -u)" = 0 ]; then
  mkdir -p "$PGDATA" /var/run/postgresql
  find "$PGDATA" /var/run/postgresql \! -user postgres -exec chown postgres:postgres {} +
  chmod 0700 "$PGDATA"
  HOME=/var/lib/postgresql exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" "$@"
fi

if [ ! -s "$PGDATA/PG_VERSION" ]; then
  user=${POSTGRES_USER:-postgres}
  db=${POSTGRES_DB:-$user}
  auth=${POSTGRES_HOST_AUTH_METHOD:-scram-sha-256}
  if [ -z "${POSTGRES_PASSWORD:-}" ] && [ "$auth" != trust ]; then
    echo "error: the database is uninitialized and POSTGRES_PASSWORD is not set" \
      "(POSTGRES_HOST_AUTH_METHOD=trust allows connections without a password)" >&2
    exit 1
  fi
  pw=()
  if [ -n "${POSTGRES_PASSWORD:-}" ]; then
    pwfile=$(mktemp)
    printf '%s\n' "$POSTGRES_PASSWORD" >"$pwfile"
    pw=(--pwfile="$pwfile")
  fi
  # shellcheck disable=SC2086 # POSTGRES_INITDB_ARGS is a list of options, as in the official image
  initdb -D "$PGDATA" --username="$user" "${pw[@]}" --auth-local=trust --auth-host="$auth" \
    ${POSTGRES_INITDB_ARGS:-}
  rm -f "${pwfile:-}"
  printf 'host all all all %s\n' "$auth" >>"$PGDATA/pg_hba.conf"
  printf "listen_addresses = '*'\n" >>"$PGDATA/postgresql.conf"
  if [ "$db" != postgres ]; then
    # A private socket and no TCP: health checks see no server until the real one starts.
    sock=$(mktemp -d)
    pg_ctl -D "$PGDATA" -w -o "-c listen_addresses='' -c unix_socket_directories=$sock" start
    psql -v ON_ERROR_STOP=1 -h "$sock" -U "$user" -d postgres -v db="$db" <<<'CREATE DATABASE :"db";'
    pg_ctl -D "$PGDATA" -w -m fast stop
    rmdir "$sock"
  fi
fi

exec "$@"
