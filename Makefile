# Coffer build, test and demo targets. `make demo` and `make test` are the two set-up
# commands (see README.md); both work on a fresh machine with Go installed.

GO      ?= go
BIN     ?= bin
GOFLAGS ?=
export CGO_ENABLED ?= 0
# The agent (coffer) is built with cgo when a C compiler is found, as a static binary:
# its default compression then uses libzstd, about 1.6x faster than the pure-Go zstd
# encoder for the same stored bytes (docs/benchmarks.md, "libzstd for the auto
# policy"). Without a compiler that links statically (or with AGENT_CGO=0) it is pure Go,
# as cofferd always is.
AGENT_CGO     ?= $(shell echo 'int main(void){return 0;}' | $${CC:-gcc} -x c -static -o /dev/null - >/dev/null 2>&1 && echo 1 || echo 0)
AGENT_TAGS     = netgo,osusergo
AGENT_LDFLAGS  = $(if $(filter 1,$(AGENT_CGO)),-linkmode external -extldflags -static)

.PHONY: all build test test-short test-faults test-ext4 vet lint bench bench-suite bench-quick demo clean fuzz fuzz-short \
	image cluster-up cluster-down cluster-status test-cluster test-chaos test-chaos-short

all: build

build:
	CGO_ENABLED=$(AGENT_CGO) $(GO) build $(GOFLAGS) -tags $(AGENT_TAGS) -ldflags '$(AGENT_LDFLAGS)' -o $(BIN)/ ./cmd/coffer
	$(GO) build $(GOFLAGS) -o $(BIN)/ ./cmd/cofferd

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
# rebalance after adding nodes, growing and shrinking a running cluster), skipped by `make test`.
test-faults:
	COFFER_FAULTS=1 CGO_ENABLED=1 $(GO) test -race -timeout 30m -count=1 -v \
		-run 'TestHealAfterNodeLoss|TestAdminRebalanceAddNodes|TestGrowAndShrink|TestDegradedPGsSayWhy|TestHealSevenAfterOneOut|TestBackupWithTwoOfSevenDown|TestMetaLeaderCrashCostsAboutAnElection|TestBackupSurvivesCoordinatorAndPeerCrash' ./node/ ./cmd/coffer/

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

# Containers (docs/deploy.md): need Docker Engine and docker-compose (v1, or the v2 plugin);
# nothing is pulled from a registry. None of these run in `make test`.
#   image         the FROM-scratch image $(IMAGE) from the static binaries (deploy/container)
#   cluster-up    3 meta + 7 chunk containers and an agent on a private network, bootstrapped
#                 with the production commands (deploy/cluster.sh); waits for `coffer admin
#                 status` to answer on the admin side and prints it. The CA key and the admin
#                 key stay in the host's bootstrap directory $(CLUSTER_DIR).
#   cluster-down  removes the containers, their network and volumes, and $(CLUSTER_DIR)
#   test-cluster  cluster-up, the key-separation check, a backup and restore from the agent
#                 container, cluster-down
IMAGE       ?= coffer:dev
CLUSTER_DIR ?= $(BIN)/cluster
CLUSTER_ENV  = COFFER_IMAGE=$(IMAGE) COFFER_CLUSTER_DIR=$(CLUSTER_DIR)

image:
	rm -rf $(BIN)/container
	mkdir -p $(BIN)/container/rootfs/tmp $(BIN)/container/data
	chmod 1777 $(BIN)/container/rootfs/tmp
	CGO_ENABLED=$(AGENT_CGO) $(GO) build -trimpath -tags $(AGENT_TAGS) -ldflags '-s -w $(AGENT_LDFLAGS)' -o $(BIN)/container/ ./cmd/coffer
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '-s -w' -o $(BIN)/container/ ./cmd/cofferd
	cp deploy/container/passwd deploy/container/group $(BIN)/container/
	docker build -t $(IMAGE) -f deploy/container/Dockerfile $(BIN)/container

cluster-up: image
	$(CLUSTER_ENV) ./deploy/cluster.sh up

cluster-status:
	$(CLUSTER_ENV) ./deploy/cluster.sh status

cluster-down:
	$(CLUSTER_ENV) ./deploy/cluster.sh down

test-cluster: image
	$(CLUSTER_ENV) ./deploy/cluster-test.sh

# The fault-injection suite across the containers (deploy/chaos, docs/reliability.md): two
# agents back up changing trees while a seeded nemesis kills, pauses, partitions and fills
# the nodes; then every acknowledged snapshot is restored and compared, the history checked
# for linearizability. Needs Docker, docker-compose and root (it mounts chunk-7's small
# tmpfs). SEED=N replays a plan (default: a new seed, printed); results (the nemesis log,
# summary.json, history.html, node logs) go to $(CHAOS_RESULTS)/MODE-SEED-TIME/.
#   test-chaos        ≥ 30 faults, under 20 minutes
#   test-chaos-short  8 faults, the same checks
SEED          ?= 0
CHAOS_RESULTS ?= $(abspath $(BIN))/chaos
CHAOS_RUN      = COFFER_CHAOS=1 $(GO) test -count=1 -timeout 45m -v -run '^TestChaos$$' ./deploy/chaos/ -args \
	-chaos.seed=$(SEED) -chaos.image=$(IMAGE) -chaos.results=$(CHAOS_RESULTS)

test-chaos: image
	$(CHAOS_RUN) -chaos.mode=full

test-chaos-short: image
	$(CHAOS_RUN) -chaos.mode=short

clean:
	rm -rf $(BIN)
