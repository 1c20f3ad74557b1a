# Coffer build, test and demo targets. `make demo` and `make test` are the two set-up
# commands (see README.md); both work on a fresh machine with Go installed.

GO      ?= go
BIN     ?= bin
GOFLAGS ?=
export CGO_ENABLED ?= 0

.PHONY: all build test test-short vet lint bench bench-suite bench-quick demo clean

all: build

build:
	$(GO) build $(GOFLAGS) -o $(BIN)/ ./cmd/coffer ./cmd/cofferd

vet:
	$(GO) vet ./...

# Every test under the race detector (needs cgo for -race).
test: vet
	CGO_ENABLED=1 $(GO) test -race -timeout 30m -count=1 ./...

test-short:
	$(GO) test -short -count=1 ./...

# Stage micro-benchmarks (benchstat-readable output).
bench:
	$(GO) test -run '^$$' -bench . -benchtime 2x -count 1 ./bench/... ./chunkstore/... ./client/... ./placement/... ./transport/... | tee $(BIN)/bench.txt

# The whole suite (stages, dev cluster end to end, restic and borg): docs/benchmarks.md.
BENCH_DATA ?= $(HOME)/.cache/coffer-bench
bench-quick: build
	$(BIN)/coffer bench --quick --data $(BENCH_DATA) --out $(BIN)/bench-quick.json

bench-suite: build
	$(BIN)/coffer bench --data $(BENCH_DATA) --out $(BIN)/bench-suite.json

# The dev cluster as nine separate `cofferd run` processes: backup, restore, SIGKILL a
# chunk node, restore and back up again.
test-multiproc: build
	BIN=$(BIN) ./deploy/multiproc.sh

# Build, start the dev cluster, back up the Go toolchain's src, restore, verify, print stats.
demo: build
	BIN=$(BIN) GO=$(GO) ./deploy/demo.sh

clean:
	rm -rf $(BIN)
