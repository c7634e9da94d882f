#!/usr/bin/env bash
# The docker compose stack on a machine without an image registry (this one, CI):
#   - starts Debian's dockerd (--iptables=false --storage-driver=vfs) if no daemon answers;
#   - makes a Debian bookworm base image with debootstrap + `docker import`;
#   - builds local stand-ins for the public base images (python, JRE) and for Prometheus and
#     Alertmanager from Debian packages, and hands them to docker-compose.yml as build
#     arguments / image names; Kafka and the app images are built from the repo as usual.
# Grafana has no stand-in: it is left out, its provisioning is covered by the dashboard tests.
#
# usage: scripts/compose-local.sh [cluster] daemon|prepare|build|check-ports|up [SERVICE…]|down|ps|logs [SERVICE]|config|... (other
# words go to docker-compose). `cluster` first: the cluster variant (docker-compose.cluster.yml over
# docker-compose.yml: 3 brokers, 2 Spark workers) as its own project, with volumes of its own. `prepare` makes the engine, base images and jars ready and prints the env
# file to pass to docker-compose (the compose test runs the stack itself through pytest-docker).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
CACHE=$ROOT/.cache/docker
VAR=$ROOT/var/compose
PROJECT=${COMPOSE_PROJECT:-energy-monitor}
SERVICES=(kafka spark-master spark-worker producer stream exporter archiver view prometheus alertmanager)
FILES=(-f docker-compose.yml)
if [ "${1:-}" = cluster ]; then
  shift
  FILES+=(-f docker-compose.cluster.yml)
  PROJECT=${COMPOSE_PROJECT:-energy-monitor-cluster}
  SERVICES+=(kafka-2 kafka-3 spark-worker-2)
fi
# A file of your own over the stack's (docker-compose only reads docker-compose.override.yml
# by itself when no -f is given).
[ -z "${COMPOSE_OVERRIDE:-}" ] || FILES+=(-f "$COMPOSE_OVERRIDE")
PYTHON=$ROOT/.venv/bin/python
[ -x "$PYTHON" ] || PYTHON=python3
say() { echo "==> compose-local: $*"; }

ensure_docker() {
  if docker info >/dev/null 2>&1; then return; fi
  if ! command -v dockerd >/dev/null || ! command -v docker-compose >/dev/null || ! command -v debootstrap >/dev/null; then
    say "installing docker.io, docker-compose, debootstrap"
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends docker.io docker-compose debootstrap
  fi
  mkdir -p "$VAR"
  say "starting dockerd (log: $VAR/dockerd.log)"
  nohup dockerd --iptables=false --storage-driver=vfs >"$VAR/dockerd.log" 2>&1 &
  for _ in $(seq 60); do docker info >/dev/null 2>&1 && return; sleep 1; done
  echo "dockerd did not start; see $VAR/dockerd.log" >&2
  exit 1
}

ensure_base() {
  docker image inspect energy-local/debian:bookworm >/dev/null 2>&1 && return
  if [ ! -f "$CACHE/bookworm.tar" ]; then
    say "debootstrap bookworm (minbase)"
    rm -rf "$CACHE/rootfs"
    mkdir -p "$CACHE"
    debootstrap --variant=minbase bookworm "$CACHE/rootfs" http://deb.debian.org/debian
    # No init system in a container: package scripts must not try to start services.
    printf '#!/bin/sh\nexit 101\n' > "$CACHE/rootfs/usr/sbin/policy-rc.d"
    chmod +x "$CACHE/rootfs/usr/sbin/policy-rc.d"
    tar -C "$CACHE/rootfs" -cf "$CACHE/bookworm.tar" .
    rm -rf "$CACHE/rootfs"
  fi
  say "docker import energy-local/debian:bookworm"
  docker import "$CACHE/bookworm.tar" energy-local/debian:bookworm >/dev/null
}

build_standins() {
  local name context=$VAR/standin-context
  rm -rf "$context"
  mkdir -p "$context/host-ca"
  cp docker/local/*.Dockerfile "$context/"
  cp /usr/local/share/ca-certificates/*.crt "$context/host-ca/" 2>/dev/null || true
  for name in python:3.12-slim jre:17 prometheus:debian alertmanager:debian; do
    if ! docker image inspect "energy-local/$name" >/dev/null 2>&1; then
      say "building stand-in energy-local/$name"
      docker build -q --network host -t "energy-local/$name" -f "$context/${name%%:*}.Dockerfile" "$context" >/dev/null
    fi
  done
}

env_file() {
  mkdir -p "$VAR"
  local source=.env
  [ -f "$source" ] || source=.env.example
  grep -vE '^(PYTHON_BASE_IMAGE|JRE_BASE_IMAGE|PROMETHEUS_IMAGE|ALERTMANAGER_IMAGE)=' "$source" > "$VAR/env"
  cat >> "$VAR/env" <<VARS
PYTHON_BASE_IMAGE=energy-local/python:3.12-slim
JRE_BASE_IMAGE=energy-local/jre:17
PROMETHEUS_IMAGE=energy-local/prometheus:debian
ALERTMANAGER_IMAGE=energy-local/alertmanager:debian
VARS
  echo "$VAR/env"
}

compose() { docker-compose -p "$PROJECT" "${FILES[@]}" --env-file "$(env_file)" "$@"; }

# Every published host port free (or the project's own), before anything is built or started.
check_ports() {
  compose config | PYTHONPATH=$ROOT "$PYTHON" -m pipeline.ops.ports --project "$PROJECT" --var-dir "${VAR_DIR:-$ROOT/var}"
}

# A start that fails part-way leaves nothing running: the logs first, then down (volumes kept).
start() {
  if compose up -d "$@"; then
    return
  fi
  local logs=$VAR/$PROJECT-failed-start.log
  compose logs --no-color --timestamps > "$logs" 2>&1 || true
  say "start failed: taking down what was started; every service's log is in $logs"
  compose down --remove-orphans >&2 || true
  exit 1
}

prepare() {
  ensure_docker
  ensure_base
  build_standins
  [ -d .cache/jars/spark ] && [ -d .cache/jars/kafka ] || scripts/bootstrap.sh
}

case "${1:-up}" in
  prepare) prepare >&2; env_file ;;
  up)
    shift
    targets=("$@")
    [ ${#targets[@]} -gt 0 ] || targets=("${SERVICES[@]}")
    ensure_docker
    check_ports
    prepare
    say "building and starting ${targets[*]}"
    compose build
    # vfs stores every layer as a full copy: drop the images that rebuilds left untagged.
    docker image prune -f >/dev/null
    start "${targets[@]}"
    compose ps
    ;;
  check-ports) ensure_docker; check_ports ;;
  build)
    prepare
    say "building images"
    compose build
    docker image prune -f >/dev/null
    ;;
  daemon) ensure_docker ;;
  down) shift; ensure_docker; compose down "$@" ;;
  *) ensure_docker; compose "$@" ;;
esac
