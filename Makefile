# DevOps Platform. `make run` starts a local cluster; `make test` runs the tests.
GO            ?= go
GOBIN         ?= $(shell $(GO) env GOPATH)/bin
VERSION       ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS       := -s -w -X github.com/devops-platform/devops.Version=$(VERSION)
BIN           := bin/devops
# Pinned code generators: `make proto` installs them with `go install`, so no system protoc is needed.
BUF_VERSION             := v1.75.0
PROTOC_GEN_GO_VERSION   := v1.36.12
PROTOC_GEN_GRPC_VERSION := v1.6.2
PROTOC_GEN_VTPROTO_VERSION := v0.6.1-0.20240319094008-0393e58bdf10

.PHONY: all deps proto proto-tools build dist run run-manager run-worker test ci-test vet fmt clean

all: build

deps:
	$(GO) mod download

proto-tools:
	$(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
	$(GO) install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GRPC_VERSION)
	$(GO) install github.com/planetscale/vtprotobuf/cmd/protoc-gen-go-vtproto@$(PROTOC_GEN_VTPROTO_VERSION)
	$(GO) install github.com/bufbuild/buf/cmd/buf@$(BUF_VERSION)

proto: proto-tools
	PATH="$(GOBIN):$$PATH" buf generate

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/devops

# The binary for each platform it ships for, static (no cgo), in bin/dist:
# devops-linux-amd64, ..., devops-windows-amd64.exe. Workers run on Linux
# (other Unix systems without isolation, Windows not at all); the client
# commands run on each.
DIST_PLATFORMS ?= linux/amd64 linux/arm64 darwin/amd64 darwin/arm64 windows/amd64
dist:
	@for p in $(DIST_PLATFORMS); do \
		os=$${p%/*}; arch=$${p#*/}; out=bin/dist/devops-$$os-$$arch; [ $$os = windows ] && out=$$out.exe; \
		echo "$$out"; \
		CGO_ENABLED=0 GOOS=$$os GOARCH=$$arch $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $$out ./cmd/devops || exit 1; \
	done

# A manager and two workers on loopback, a demo command on both, then the cluster stays up until Ctrl-C.
run: build
	./scripts/run-local.sh

run-manager: build
	$(BIN) manager

run-worker: build
	$(BIN) worker

vet:
	$(GO) vet ./...
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

test: vet
	$(GO) test -race -count=1 -timeout 15m ./...

clean:
	rm -rf bin data

# Docker images, built with no registry: bin/devops is copied into a FROM
# scratch manager image and a worker image on BASE_IMAGE (by default a local
# base made from Debian's busybox-static by scripts/docker-base.sh).
IMAGE_PREFIX ?= devops
IMAGE_TAG    ?= latest
BASE_IMAGE   ?= devops-base:busybox
DOCKER_ENV    = BIN=$(BIN) IMAGE_PREFIX=$(IMAGE_PREFIX) TAG=$(IMAGE_TAG) VERSION=$(VERSION) BASE_IMAGE=$(BASE_IMAGE)

.PHONY: docker-build
docker-build: build
	$(DOCKER_ENV) ./scripts/docker-build.sh

# The images, a docker-compose cluster (project devops-ci), the e2e suite
# against it from the host, and the cluster torn down whatever happens.
ci-test: docker-build
	$(DOCKER_ENV) ./scripts/ci-test.sh

# Benchmarks against local exec, ssh, pdsh and Ansible (installed from Debian
# packages when missing): writes bench/results.json and bench/results.md.
# QUICK=1: a short run (smaller sizes, no installs) in under 2 minutes.
# PPROF=1: the manager runs with pprof; profiles land in bench/profiles.
# INSECURE=1: the clusters run plaintext (--insecure) instead of TLS.
.PHONY: bench
bench: build
	$(GO) build $(if $(PPROF),-tags benchpprof) -o bin/devops-bench ./internal/bench
	./bin/devops-bench -devops $(BIN) -out bench $(if $(QUICK),-quick) $(if $(PPROF),-pprof) $(if $(INSECURE),-insecure)
