# Coffer build, test and demo targets. `make demo` and `make test` are the two set-up
# commands (see README.md); both work on a fresh machine with Go installed.

GO      ?= go
BIN     ?= bin
GOFLAGS ?=
export CGO_ENABLED ?= 0

.PHONY: all build test test-short test-faults test-ext4 vet lint bench bench-suite bench-quick demo clean fuzz fuzz-short

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

# Every fuzz target (decoders of bytes from the network or the disk) for FUZZTIME each
# (default 60s), with a report listing the targets. CI runs `make fuzz-short`.
FUZZTIME ?= 60s
fuzz:
	GO=$(GO) FUZZTIME=$(FUZZTIME) ./deploy/fuzz.sh

fuzz-short:
	GO=$(GO) FUZZTIME=3s ./deploy/fuzz.sh

# Long cluster fault scenarios (issue 5: re-protection after losing 2 of 8 nodes,
# rebalance after adding nodes), skipped by `make test`.
test-faults:
	COFFER_FAULTS=1 CGO_ENABLED=1 $(GO) test -race -timeout 30m -count=1 -v \
		-run 'TestHealAfterNodeLoss|TestAdminRebalanceAddNodes' ./node/ ./cmd/coffer/

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

# Block-image acceptance test: an ext4 image holding go1.26.0, updated to go1.26.1 with
# debugfs (needs e2fsprogs; downloads both toolchain modules through the Go proxy).
EXT4_TOOLCHAINS = golang.org/toolchain@v0.0.1-go1.26.0.linux-amd64 golang.org/toolchain@v0.0.1-go1.26.1.linux-amd64
test-ext4:
	cd $$(mktemp -d) && GOTOOLCHAIN=local GOFLAGS=-mod=mod $(GO) mod download $(EXT4_TOOLCHAINS)
	COFFER_EXT4_TEST=1 CGO_ENABLED=1 $(GO) test -race -timeout 20m -count=1 -run TestExt4 -v ./client/

# Build, start the dev cluster, back up the Go toolchain's src, restore, verify, print stats.
demo: build
	BIN=$(BIN) GO=$(GO) ./deploy/demo.sh

clean:
	rm -rf $(BIN)
