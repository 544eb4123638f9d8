#!/usr/bin/env bash
# Builds the base image of the local stand-ins, for machines that cannot pull from a registry:
# a minimal Debian 12 (bookworm) root file system made with debootstrap from this machine's own
# Debian mirror (the first `URIs:`/`deb` line of its APT sources, or DEBIAN_MIRROR), with
# Python 3.11 and venv, imported as IMAGE. Needs root, debootstrap and a Docker engine.
#
#   deploy/images/debian-rootfs.sh IMAGE [WORK_DIR]
set -euo pipefail

image=${1:?usage: debian-rootfs.sh IMAGE [WORK_DIR]}
work=${2:-build/images}
suite=bookworm

mirror=${DEBIAN_MIRROR:-}
if [[ -z $mirror ]]; then
	mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
fi
if [[ -z $mirror ]]; then
	mirror=$(awk '$1 == "deb" {print ($2 ~ /^\[/ ? $3 : $2); exit}' /etc/apt/sources.list 2>/dev/null || true)
fi
if [[ -z $mirror ]]; then
	echo "debian-rootfs.sh: no Debian mirror in this machine's APT sources; set DEBIAN_MIRROR" >&2
	exit 2
fi

rootfs=$work/rootfs-$suite
rm -rf "$rootfs"
mkdir -p "$work"
echo "debootstrap $suite (minbase + python3) into $rootfs"
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
	"$suite" "$rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 || {
	tail -20 "$work/debootstrap.log" >&2
	exit 1
}
# What an image does not need: package caches and lists, documentation, other languages.
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* \
	"$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/*
find "$rootfs"/usr/share/locale -mindepth 1 -maxdepth 1 ! -name 'en*' -exec rm -rf {} +
# The mirror this image was made from, so that a Dockerfile FROM it can apt-get install.
echo "deb $mirror $suite main" >"$rootfs"/etc/apt/sources.list
tar -C "$rootfs" -c . | docker import \
	--change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' - "$image" >/dev/null
rm -rf "$rootfs"
echo "built $image"
