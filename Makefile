# The two commands a newcomer needs:
#   docker compose up --build     run the cluster
#   make test                     run every test (builds bin/consul, bin/prometheus, bin/jaeger and, where
#                                 `docker compose` is missing, Compose v2, once each)

GO        ?= go
CONSUL    := bin/consul
PROM      := bin/prometheus
JAEGER    := bin/jaeger
STRINGSVC := bin/stringsvc
TRACESINK := bin/tracesink
VERSION   ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -s -w -X main.version=$(VERSION)
# The end-to-end tests (Docker, browser) and the benchmark are a module of
# their own, so that the service's go.mod carries no chromedp or gonum/plot.
E2E       := internal/e2e

.PHONY: all build consul prometheus jaeger bench-scale compose-v2 compose-plugin images test lint unit bench clean

all: build

build: $(STRINGSVC) $(TRACESINK)

$(STRINGSVC): FORCE
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $@ ./cmd/stringsvc

# The offline trace backend of the compose tracing profile (see
# cmd/tracesink): OTLP/HTTP in, a part of Jaeger's query API out.
$(TRACESINK): FORCE
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '-s -w' -o $@ ./cmd/tracesink

FORCE:

# The dev Consul (v1.14.11, the last MPL-2.0 release) is built from its own
# module in deploy/consul, once: a cold build takes minutes and GBs of
# module cache. Delete bin/consul to rebuild it.
consul: $(CONSUL)

$(CONSUL):
	@mkdir -p bin
	cd deploy/consul && CGO_ENABLED=0 $(GO) build -trimpath -ldflags '-s -w' -o ../../$(CONSUL) github.com/hashicorp/consul

# Prometheus for the offline observability profile, from its own module in
# deploy/prometheus (Debian's package has no Consul discovery). Built once.
prometheus: $(PROM)

$(PROM):
	@mkdir -p bin
	cd deploy/prometheus && CGO_ENABLED=0 $(GO) build -trimpath -ldflags '-s -w' -o ../../$(PROM) github.com/prometheus/prometheus/cmd/prometheus

# Jaeger v2 for the offline tracing profile, from its own module in
# deploy/jaeger (about 7 minutes cold). Built once.
jaeger: $(JAEGER)

$(JAEGER):
	@mkdir -p bin
	cd deploy/jaeger && CGO_ENABLED=0 $(GO) build -trimpath -ldflags '-s -w' -o ../../$(JAEGER) github.com/jaegertracing/jaeger/cmd/jaeger

# Compose v2, for machines whose Docker CLI lacks `docker compose` (the
# README's command): built once from its own module in deploy/compose-v2,
# and installed as the CLI plugin only where `docker compose` is missing.
COMPOSE_V2 := bin/docker-compose-v2
PLUGINS    := $(HOME)/.docker/cli-plugins

compose-v2: $(COMPOSE_V2)

$(COMPOSE_V2):
	@mkdir -p bin
	cd deploy/compose-v2 && CGO_ENABLED=0 $(GO) build -trimpath -ldflags '-s -w -X github.com/docker/compose/v2/internal.Version=v2.40.3' -o ../../$(COMPOSE_V2) github.com/docker/compose/v2/cmd

compose-plugin:
	@if docker compose version >/dev/null 2>&1; then :; else \
		$(MAKE) $(COMPOSE_V2) && mkdir -p $(PLUGINS) && cp $(COMPOSE_V2) $(PLUGINS)/docker-compose && \
		echo "compose-plugin: installed $(PLUGINS)/docker-compose"; fi

# Offline images for docker-compose.yml (no registry needed). Skipped with a
# message when no Docker engine answers, except under CI=true.
images: build $(CONSUL) $(PROM) $(JAEGER)
	deploy/images.sh

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	cd $(E2E) && $(GO) vet ./...

# Everything: formatting, vet, unit and integration tests with the race
# detector, against a real Consul and real processes: the service's module,
# then the end-to-end module (the containers), one after the other so that
# the Docker tests never share the machine with the process tests.
test: $(CONSUL) lint images compose-plugin
	CONSUL_BIN=$(CURDIR)/$(CONSUL) $(GO) test -race -count=1 -timeout 30m ./...
	cd $(E2E) && CONSUL_BIN=$(CURDIR)/$(CONSUL) $(GO) test -race -count=1 -timeout 30m ./...

# The benchmark: a mesh on loopback beside a plain net/http baseline, one
# Markdown report on stdout (see BENCHMARKS.md). Not part of `make test`.
bench: build $(CONSUL)
	cd $(E2E) && $(GO) build -o $(CURDIR)/bin/bench ./cmd/bench
	bin/bench -consul $(CONSUL) -stringsvc $(STRINGSVC) -tracesink $(TRACESINK) -charts $(CURDIR) $(if $(BEFORE),-before $(BEFORE)) $(if $(LIMITERS),-limiters $(LIMITERS))

# The scale benchmark: N = 3, 10, 30 and 60 members on loopback with one
# dev Consul (several minutes); its charts go next to BENCHMARKS.md too.
bench-scale: build $(CONSUL)
	cd $(E2E) && $(GO) build -o $(CURDIR)/bin/bench ./cmd/bench
	bin/bench -consul $(CONSUL) -stringsvc $(STRINGSVC) -charts $(CURDIR) -scale 3,10,30,60

# Quick feedback without the process-level tests.
unit:
	$(GO) test -race -short ./...
	cd $(E2E) && $(GO) test -race -short ./...

clean:
	rm -rf bin
