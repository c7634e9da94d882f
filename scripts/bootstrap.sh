#!/usr/bin/env bash
# Installs everything the local stack and the tests need, on a fresh Debian machine or this one.
# Each step skips itself when its result is already there, so `make up`/`make test` can call it
# every time. Downloads are cached under .cache/ (git-ignored).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
CACHE=$ROOT/.cache
step() { echo "==> bootstrap: $*"; }

apt_packages=()
command -v java >/dev/null || apt_packages+=(openjdk-17-jre-headless)
command -v mvn >/dev/null || apt_packages+=(maven)
command -v prometheus >/dev/null || apt_packages+=(prometheus)
command -v promtool >/dev/null || apt_packages+=(prometheus)
command -v prometheus-alertmanager >/dev/null || apt_packages+=(prometheus-alertmanager)
command -v chromium >/dev/null || apt_packages+=(chromium)
command -v chromedriver >/dev/null || apt_packages+=(chromium-driver)
command -v docker-compose >/dev/null || apt_packages+=(docker-compose)
if ((${#apt_packages[@]})); then
  step "apt-get install ${apt_packages[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${apt_packages[@]}"
fi

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  step "creating .venv with $($PYTHON --version)"
  "$PYTHON" -m venv .venv
  .venv/bin/pip install -q --upgrade pip
fi
stamp=.venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)
if [ ! -f "$stamp" ]; then
  step "pip install -e .[dev]"
  .venv/bin/pip install -q --cache-dir "$CACHE/pip" -e '.[dev]'
  rm -f .venv/.installed-*
  touch "$stamp"
fi

mvn_copy() {  # pom dir, output dir, extra args...
  local pom=$1 out=$2; shift 2
  local want
  want=$(sha256sum "$pom/pom.xml" | cut -c1-16)
  if [ "$(cat "$out/.pom-sha" 2>/dev/null)" != "$want" ]; then
    step "resolving $(basename "$out") jars from Maven Central"
    rm -rf "$out"
    mvn -q -B -s infra/maven-settings.xml -Dmaven.repo.local="$CACHE/m2" -f "$pom/pom.xml" \
      dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$out" "$@"
    echo "$want" > "$out/.pom-sha"
  fi
}
mvn_copy infra/kafka "$CACHE/jars/kafka"
# pyspark ships Spark itself; only the connector and what Spark lacks are added.
mvn_copy infra/spark "$CACHE/jars/spark" \
  -DincludeArtifactIds=spark-sql-kafka-0-10_2.13,spark-token-provider-kafka-0-10_2.13,kafka-clients,commons-pool2
# The job's state operator (jvm/), built again when its sources change.
state_sha=$(cat jvm/pom.xml $(find jvm/src -name '*.java' | sort) | sha256sum | cut -c1-16)
if [ "$(cat "$CACHE/jars/energy/.src-sha" 2>/dev/null)" != "$state_sha" ]; then
  step "building the state operator (jvm/)"
  mvn -q -B -s infra/maven-settings.xml -Dmaven.repo.local="$CACHE/m2" -f jvm/pom.xml package
  mkdir -p "$CACHE/jars/energy"
  cp jvm/target/energy-state.jar "$CACHE/jars/energy/energy-state.jar"
  echo "$state_sha" > "$CACHE/jars/energy/.src-sha"
fi
step "ready"
