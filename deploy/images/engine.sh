#!/usr/bin/env bash
# Makes sure this machine can build and run the compose stack: a Docker engine that answers,
# `docker compose` (Compose v2, which testcontainers drives) and debootstrap. What is missing is
# installed from this machine's Debian mirror (root only): docker.io and debootstrap from its
# own release, the Compose v2 plugin from the Debian release after bookworm (bookworm ships
# only Compose v1), checked against that release's package index. A Docker engine that is
# installed but not running is started in the background, its log in LOG.
#
#   deploy/images/engine.sh [LOG]
set -euo pipefail

log=${1:-build/dockerd.log}
compose_release=trixie

say() { echo "engine: $*"; }

mirror() {
	local found
	found=${DEBIAN_MIRROR:-$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)}
	if [[ -z $found ]]; then
		found=$(awk '$1 == "deb" {print ($2 ~ /^\[/ ? $3 : $2); exit}' /etc/apt/sources.list 2>/dev/null || true)
	fi
	[[ -n $found ]] || { say "no Debian mirror in the APT sources; set DEBIAN_MIRROR" >&2; exit 2; }
	echo "$found"
}

need_root() {
	[[ $(id -u) == 0 ]] || { say "$1 is missing and installing it needs root" >&2; exit 2; }
}

missing=()
command -v dockerd >/dev/null || missing+=(docker.io)
command -v debootstrap >/dev/null || missing+=(debootstrap)
if ((${#missing[@]})); then
	need_root "${missing[*]}"
	say "installing ${missing[*]}"
	apt-get update -q >/dev/null
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null
fi

if ! docker info >/dev/null 2>&1; then
	need_root "a running Docker engine"
	mkdir -p "$(dirname "$log")"
	say "starting dockerd (log: $log)"
	nohup dockerd >"$log" 2>&1 &
	for _ in $(seq 60); do
		docker info >/dev/null 2>&1 && break
		sleep 1
	done
	docker info >/dev/null 2>&1 || { say "dockerd did not answer within 60 s:" >&2; tail -20 "$log" >&2; exit 1; }
fi

if ! docker compose version >/dev/null 2>&1; then
	need_root "Compose v2 (docker compose)"
	base=$(mirror)
	work=$(mktemp -d)
	trap 'rm -rf "$work"' EXIT
	say "installing the Compose v2 plugin from Debian $compose_release"
	curl -fsSL "$base/dists/$compose_release/main/binary-amd64/Packages.xz" | xz -dc >"$work/Packages"
	entry=$(awk -v RS= '/(^|\n)Package: docker-compose\n/' "$work/Packages")
	file=$(awk '/^Filename:/ {print $2}' <<<"$entry")
	sum=$(awk '/^SHA256:/ {print $2}' <<<"$entry")
	[[ -n $file && -n $sum ]] || { say "no docker-compose in Debian $compose_release's index" >&2; exit 1; }
	curl -fsSL "$base/$file" -o "$work/compose.deb"
	echo "$sum  $work/compose.deb" | sha256sum --check --quiet
	dpkg-deb -x "$work/compose.deb" "$work/root"
	plugin=$(find "$work/root" -path '*cli-plugins/docker-compose' -type f | head -1)
	install -D -m 755 "$plugin" /usr/local/lib/docker/cli-plugins/docker-compose
fi
say "$(docker version --format 'Docker engine {{.Server.Version}}'), $(docker compose version --short | sed 's/^/Compose /')"
