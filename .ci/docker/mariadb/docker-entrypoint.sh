#!/usr/bin/env bash
# Initialises an empty /var/lib/mysql from MARIADB_ROOT_PASSWORD, MARIADB_DATABASE, MARIADB_USER
# and MARIADB_PASSWORD (or their MYSQL_* spellings) as the official image does, then runs the server
# as the mysql user on 0.0.0.0:3306.
set -euo pipefail

if [ "${1:0:1}" = - ]; then set -- mariadbd "$@"; fi
if [ "$1" != mariadbd ]; then exec "$@"; fi

datadir=/var/lib/mysql
# Started as root: own the data folder whatever created it (named volume, bind mount), then drop.
if [ "$(id -u)" = 0 ]; then
  mkdir -p "$datadir" /run/mysqld
  find "$datadir" /run/mysqld \! -user mysql -exec chown mysql:mysql {} +
  HOME=/var/lib/mysql exec setpriv --reuid=mysql --regid=mysql --init-groups "$0" "$@"
fi

# SQL string literal and identifier quoting.
literal() {
  local s=${1//\\/\\\\}
  printf "'%s'" "${s//\'/\\\'}"
}
ident() { printf "\`%s\`" "${1//\`/\`\`}"; }

if [ ! -d "$datadir/mysql" ]; then
  root_password=${MARIADB_ROOT_PASSWORD:-${MYSQL_ROOT_PASSWORD:-}}
  database=${MARIADB_DATABASE:-${MYSQL_DATABASE:-}}
  user=${MARIADB_USER:-${MYSQL_USER:-}}
  password=${MARIADB_PASSWORD:-${MYSQL_PASSWORD:-}}
  if [ -z "$root_password" ] && [ -z "${MARIADB_ALLOW_EMPTY_ROOT_PASSWORD:-${MYSQL_ALLOW_EMPTY_PASSWORD:-}}" ]; then
    echo "error: the database is uninitialized and MARIADB_ROOT_PASSWORD is not set" \
      "(MARIADB_ALLOW_EMPTY_ROOT_PASSWORD=1 allows an empty one)" >&2
    exit 1
  fi
  mariadb-install-db --datadir="$datadir" --auth-root-authentication-method=normal \
    --skip-test-db --skip-name-resolve >/dev/null

  # A private socket and no TCP: health checks see no server until the real one starts.
  sock=$(mktemp -d)/init.sock
  mariadbd --skip-networking --socket="$sock" &
  pid=$!
  for _ in $(seq 60); do
    if mariadb-admin --socket="$sock" -uroot ping >/dev/null 2>&1; then break; fi
    kill -0 "$pid"
    sleep 1
  done
  mariadb-admin --socket="$sock" -uroot ping >/dev/null

  # Only root@localhost stays of the accounts the installer made: anonymous ones would shadow
  # MARIADB_USER, and passwordless root@127.0.0.1 would shadow root@'%' for local TCP clients.
  sql="DELETE FROM mysql.global_priv WHERE User = '' OR Host <> 'localhost';
DELETE FROM mysql.proxies_priv WHERE Host <> 'localhost';
FLUSH PRIVILEGES;
CREATE USER 'root'@'%' IDENTIFIED BY $(literal "$root_password");
GRANT ALL ON *.* TO 'root'@'%' WITH GRANT OPTION;
ALTER USER 'root'@'localhost' IDENTIFIED BY $(literal "$root_password");"
  if [ -n "$database" ]; then
    sql+="
CREATE DATABASE IF NOT EXISTS $(ident "$database");"
  fi
  if [ -n "$user" ]; then
    sql+="
CREATE USER $(literal "$user")@'%' IDENTIFIED BY $(literal "$password");"
    if [ -n "$database" ]; then
      sql+="
GRANT ALL ON $(ident "$database").* TO $(literal "$user")@'%';"
    fi
  fi
  mariadb --socket="$sock" -uroot --binary-mode <<<"$sql"
  kill "$pid"
  wait "$pid"
fi

exec "$@"
