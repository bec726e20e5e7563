#!/usr/bin/env bash
# Builds the offline images that docker-compose.yml can use instead of
# public ones, with no registry and no base image:
#   kitmesh/stringsvc:local   bin/stringsvc (built here) in scratch
#   kitmesh/consul:local      bin/consul (v1.14.11, `make consul`) and Debian's
#                             static busybox (a shell for the ACL init) in scratch
#   kitmesh/prometheus:local  bin/prometheus (`make prometheus`) in scratch
#   kitmesh/jaeger:local      bin/jaeger (Jaeger v2, `make jaeger`) in scratch:
#                             the tracing profile's backend, query API only
#   kitmesh/tracesink:local   bin/tracesink (cmd/tracesink) in scratch: a
#                             lighter OTLP receiver with Jaeger's trace API
# Use them with:
#   export STRINGSVC_IMAGE=kitmesh/stringsvc:local STRINGSVC_DOCKERFILE=deploy/Dockerfile.local
#   export CONSUL_IMAGE=kitmesh/consul:local PROMETHEUS_IMAGE=kitmesh/prometheus:local
#   export TRACES_IMAGE=kitmesh/jaeger:local
set -euo pipefail
cd "$(dirname "$0")/.."

if ! docker info >/dev/null 2>&1; then
	if [ "${CI:-}" = "true" ]; then
		echo "images: no Docker engine answers; CI needs one" >&2
		exit 1
	fi
	echo "images: no Docker engine answers; skipping the offline images" >&2
	exit 0
fi

[ -x bin/stringsvc ] || { echo "images: bin/stringsvc missing (make build)" >&2; exit 1; }
[ -x bin/consul ] || { echo "images: bin/consul missing (make consul)" >&2; exit 1; }

[ -x bin/prometheus ] || { echo "images: bin/prometheus missing (make prometheus)" >&2; exit 1; }
[ -x bin/tracesink ] || { echo "images: bin/tracesink missing (make build)" >&2; exit 1; }
[ -x bin/jaeger ] || { echo "images: bin/jaeger missing (make jaeger)" >&2; exit 1; }
[ -x /bin/busybox ] || { echo "images: /bin/busybox missing (apt-get install busybox-static)" >&2; exit 1; }

docker build -q -f deploy/Dockerfile.local -t kitmesh/stringsvc:local . 2>/dev/null

# Consul and Prometheus get a context of their own, so that the repository's
# context (which compose sends on every build) never carries their 100+ MB.
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
mkdir -p "$ctx/bin" "$ctx/deploy"
cp -r deploy/tmp "$ctx/deploy/tmp"
cp /bin/busybox "$ctx/bin/busybox" # the consul image's shell, for the ACL init
for name in consul prometheus jaeger tracesink; do
	ln -f "bin/$name" "$ctx/bin/$name" 2>/dev/null || cp "bin/$name" "$ctx/bin/$name"
	docker build -q -f "deploy/$name/Dockerfile" -t "kitmesh/$name:local" "$ctx" 2>/dev/null
	rm -f "$ctx/bin/$name"
done
# The stand-in golang image that the source build (deploy/Dockerfile) is
# tested with; built once.
deploy/goimage.sh
echo "images: kitmesh/stringsvc:local kitmesh/consul:local kitmesh/prometheus:local kitmesh/jaeger:local kitmesh/tracesink:local kitmesh/go:local"
