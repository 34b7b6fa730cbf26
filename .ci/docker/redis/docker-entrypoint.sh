#!/usr/bin/env bash
# As the official image: options alone run redis-server with them; started as root,
# it owns /data (named volume, bind mount) and drops to the redis user.
set -euo pipefail

if [ "${1:0:1}" = - ]; then set -- redis-server "$@"; fi
if [ "$1" = redis-server ] && [ "$(id -u)" = 0 ]; then
  find /data \! -user redis -exec chown redis:redis {} +
  exec setpriv --reuid=redis --regid=redis --init-groups "$0" "$@"
fi

exec "$@"
