# Alpine Spine / bay0. `make demo` builds and boots a demo Spine; `make test` runs every test.
SHELL := /bin/bash
export CGO_ENABLED := 0
export SOURCE_DATE_EPOCH ?= 1767225600
GO ?= go
BIN := bin

.PHONY: all deps build kernel kernel-repro test unit integration e2e lint demo bench clean fuzz conformance readme

all: build

deps:
	@scripts/deps.sh

build:
	$(GO) build -trimpath -ldflags='-s -w -buildid=' -o $(BIN)/bay0 ./cmd/bay0
	$(GO) build -trimpath -ldflags='-s -w -buildid=' -o $(BIN)/persona-init ./cmd/persona-init
	$(GO) build -trimpath -o $(BIN)/spine ./cmd/spine

# Spine's kernel, built once per machine into the cache (minutes the first time, then instant).
kernel: deps build
	$(BIN)/spine kernel

# Builds the kernel twice from scratch, in two fresh caches, and compares the bytes.
kernel-repro: deps
	$(GO) test -tags kernelrepro -count=1 -timeout 120m -run TestReproducible -v ./internal/host/kernel/

lint: deps
	@scripts/lint.sh

# Unit tests: fast and hermetic (no QEMU, no downloads).
unit: deps build
	@mkdir -p .cache
	$(GO) run ./tools/gotest .cache/unit.json -count=1 ./...

# The unit tests plus those that boot QEMU or download (build tag integration).
integration: deps build kernel
	@mkdir -p .cache
	$(GO) run ./tools/gotest .cache/unit.json -count=1 -tags integration ./...

# E2E boots real machines under QEMU; a failing scenario prints its console.
e2e: deps build kernel
	@mkdir -p .cache
	$(GO) run ./tools/gotest .cache/e2e.json -count=1 -tags e2e -timeout 30m -parallel 2 ./e2e/...

test: lint integration e2e conformance

# CONFORMANCE.md: every clause of the constitution and the tests that prove it, from this run.
conformance:
	$(GO) run ./tools/conformance -events .cache/unit.json,.cache/e2e.json -out CONFORMANCE.md

readme:
	@scripts/readme-cli.sh

demo: deps build kernel
	@scripts/demo.sh

bench: deps build kernel
	@mkdir -p .cache
	$(GO) run ./bench --json .cache/bench.json

fuzz:
	@scripts/fuzz.sh

clean:
	rm -rf $(BIN) .cache/work
