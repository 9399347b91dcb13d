#!/usr/bin/env bash
# Build opsgate's dependency image without a registry: debootstrap a minimal Debian bookworm with
# PostgreSQL and Redis, add an entrypoint that follows the official images' contract, docker import.
#   build.sh [IMAGE]   (default opsgate-deps:bookworm; mirror: DEBIAN_MIRROR)
# Needs root, debootstrap and a running Docker engine. About 45 s + 10 s and 640 MB here.
set -euo pipefail

image=${1:-opsgate-deps:bookworm}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
here=$(cd "$(dirname "$0")" && pwd)

[ "$(id -u)" -eq 0 ] || { echo "build.sh: debootstrap needs root" >&2; exit 1; }
command -v debootstrap >/dev/null || { echo "build.sh: debootstrap is not installed (apt-get install debootstrap)" >&2; exit 1; }
docker info >/dev/null 2>&1 || { echo "build.sh: no Docker engine answers (start dockerd --bridge=none --iptables=false)" >&2; exit 1; }

work=$(mktemp -d /var/tmp/opsgate-deps-image.XXXXXX)
trap 'rm -rf "$work"' EXIT
rootfs=$work/rootfs

echo "build.sh: debootstrap bookworm (postgresql, redis-server) from $mirror"
debootstrap --variant=minbase --include=postgresql,redis-server bookworm "$rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 \
    || { tail -n 20 "$work/debootstrap.log" >&2; echo "build.sh: debootstrap failed" >&2; exit 1; }

# The package's own cluster and caches are not needed: the entrypoint initialises PGDATA on first start.
rm -rf "$rootfs"/var/lib/postgresql/*/main "$rootfs"/etc/postgresql/*/main "$rootfs"/var/cache/apt/archives/*.deb \
    "$rootfs"/var/lib/apt/lists/*
install -m 0755 "$here/entrypoint.sh" "$rootfs/usr/local/bin/docker-entrypoint.sh"

echo "build.sh: docker import $image"
tar -C "$rootfs" -c . | docker import \
    --change 'ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]' \
    --change 'ENV PGDATA=/var/lib/postgresql/data' \
    --change 'LABEL org.opsgate.image=deps' \
    - "$image" >/dev/null
echo "build.sh: built $image"
