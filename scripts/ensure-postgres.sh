#!/usr/bin/env bash
# Makes sure PostgreSQL server binaries are on this machine, installing
# Debian's postgresql package when they are missing (needs root and apt).
# pgtest finds the binaries on PATH, via pg_config, or under
# /usr/lib/postgresql/*/bin.
set -euo pipefail

have_postgres() {
  command -v initdb >/dev/null 2>&1 && return 0
  command -v pg_config >/dev/null 2>&1 && [ -x "$(pg_config --bindir)/initdb" ] && return 0
  compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null && return 0
  return 1
}

if have_postgres; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "PostgreSQL server binaries not found; install them (Debian/Ubuntu: apt-get install postgresql)" >&2
  exit 1
fi
echo "installing PostgreSQL from Debian packages (apt-get install postgresql)" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends postgresql >/dev/null
have_postgres || { echo "postgresql installed but initdb still not found" >&2; exit 1; }
