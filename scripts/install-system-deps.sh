#!/usr/bin/env bash
# Install the Debian/Ubuntu packages opsgate runs for real: PostgreSQL, Redis, Prometheus,
# Alertmanager, Chromium, wrk, Docker's engine and debootstrap. Installs only what is missing; needs root or
# passwordless sudo.
set -euo pipefail

missing=()
have_pg() { compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null; }
have_pg || missing+=(postgresql)
command -v pg_dump >/dev/null || missing+=(postgresql-client)
command -v redis-server >/dev/null || missing+=(redis-server)
command -v prometheus >/dev/null || missing+=(prometheus)
command -v prometheus-alertmanager >/dev/null || missing+=(prometheus-alertmanager)
command -v chromium >/dev/null || missing+=(chromium)
command -v wrk >/dev/null || missing+=(wrk)  # bench/load_throughput.py's reference generator
# The containers provider: a Docker engine (unless one answers already) and debootstrap to build its image.
docker info >/dev/null 2>&1 || command -v dockerd >/dev/null || [ -x /usr/sbin/dockerd ] || missing+=(docker.io)
command -v debootstrap >/dev/null || [ -x /usr/sbin/debootstrap ] || missing+=(debootstrap)
python3 -c 'import ensurepip, venv' 2>/dev/null || missing+=(python3-venv)
command -v npm >/dev/null || missing+=(nodejs npm)  # the Bull (Node) queue-layout tests

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

echo "opsgate: installing missing system packages: ${missing[*]}"
if [ "$(id -u)" -eq 0 ]; then
  SUDO=()
elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
  SUDO=(sudo -n)
else
  echo "opsgate: cannot install ${missing[*]}: not root and no passwordless sudo." >&2
  echo "opsgate: run as root, or: sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update -qq
"${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "opsgate: system packages installed"
