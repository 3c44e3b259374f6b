#!/bin/sh
# Install the Debian packages the tests and the replica deployment need, when missing:
# `postgresql` (the tests' throwaway cluster; FLYWHEEL_DB_URL) and `nginx` (in front of
# replicas, deploy/replicas.py). Run by `make test`; needs root or sudo only when
# something is missing. Usage: deploy/ensure-packages.sh [postgresql] [nginx]
set -eu
wanted="${*:-postgresql nginx}"
missing=""
for package in $wanted; do
  case "$package" in
    postgresql) ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$missing postgresql" ;;
    nginx) command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing="$missing nginx" ;;
    *) echo "ensure-packages.sh: unknown package '$package' (expected postgresql or nginx)" >&2; exit 2 ;;
  esac
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" -eq 0 ]; then
  as_root=""
elif command -v sudo >/dev/null 2>&1; then
  as_root="sudo"
else
  echo "ensure-packages.sh: need root (or sudo) to install:$missing" >&2
  exit 1
fi
echo "installing:$missing"
export DEBIAN_FRONTEND=noninteractive
$as_root apt-get update -q
# shellcheck disable=SC2086
$as_root apt-get install -y -q --no-install-recommends $missing
# Debian starts a system cluster and a system nginx on install; the tests and
# deploy/replicas.py run their own on free ports, so the system services are not needed.
