package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/cofferhq/coffer/bench"
)

func benchSpec() *cmdSpec {
	return &cmdSpec{
		name:  "bench",
		short: "benchmark every data path stage and compare with restic and borg",
		long: `Measures Coffer's data path and prints markdown tables (or, with --json, one
JSON report). Stages: FastCDC, chunk IDs, zstd levels and S2, AES-256-GCM, chunk
sealing, Reed-Solomon 4+2, QUIC versus TCP+TLS 1.3 on loopback (in this process),
then segment appends with group fsync and Pebble index batches (run by
"cofferd bench-stages"), each in MB/s on one core and on all cores next to the
library's single-core reference.

With the stages (also under --quick; about 3 s), the client pipeline runs in
this process: the agent's real backup (walk, read, FastCDC, chunk IDs,
compression and sealing, upload batching, trees, commit) of the first release's
tree and of one large file (the tree's files concatenated, cached under --data)
into an in-memory chunk store and meta service, with no cluster and no network.
Its MB/s and CPU-seconds per GiB are printed against the slowest client stage's
all-cores figure: the "Client pipeline" line judges the target (>= 70%) on the
large file and shows the end-to-end figure, which includes the cluster running
on the same cores, separately.

End to end, it starts a "cofferd dev" cluster (cofferd is looked up next to this
binary, then on PATH) and runs initial backup, unchanged re-backup, incremental
backup of the next release, full restore and single-file restore with this
binary, and the same with restic and borg (each to a local encrypted repository;
missing peers are reported with the command that installs them). Each scenario
reports MB/s, CPU-seconds per GiB (tool process plus cluster process), peak RSS,
bytes added and stored, dedup ratio and chunks per second; a ratio table gives
Coffer/peer.

Datasets are successive Go toolchain releases from the Go module proxy, cached
under --data; without network access the local GOROOT is used (and said so).
--quick (two releases, short stages) finishes in about 3 minutes on 2 cores.
Speed never makes the command fail.

--host-budget measures what the agent does with the protected host's cores:
the agent and every peer run pinned (taskset) to --agent-cpus, the dev cluster
to --cluster-cpus, as in a deployment where the cluster has machines of its own.
For each dataset (--datasets: toolchain, an unpacked Go toolchain, by default
this Go's GOROOT; image, a raw ext4 image of it, one file; small, 200,000
generated small files; million, 1,000,000 empty and small files, Coffer's
backups only, for the memory bound; block, a sparse 100 GiB image holding 4 GiB
of data, Coffer's --block backups only, the memory bound on a block image) and
each of --runs runs it does initial
backup, unchanged re-backup, incremental backup (a changed copy), full restore
and single-file restore with every tool, checks every restore bit-identical to
the source (SHA-256 of every file), and reports wall time, agent CPU-s/GiB,
cluster CPU-s/GiB, agent peak RSS and bytes added, the medians of the runs, the
issue 18 goals against the better peer for each figure, and the load average.
Peers are named NAME=PATH (NAME starting with restic or borg), e.g.
restic-0.14=/usr/bin/restic,restic-0.18.1=$HOME/go/bin/restic. An agent peak
RSS above --rss-bound MiB in any Coffer scenario is a memory regression: the
report lists it and the command exits non-zero.`,
		examples: []string{
			"coffer bench --quick --data ~/.cache/coffer-bench",
			"coffer bench --data /var/tmp/coffer-bench --out report.json",
			"coffer bench --stages-only --data /var/tmp/coffer-bench",
			"sudo coffer bench --quick --drop-caches --data /var/tmp/coffer-bench",
			"coffer bench --host-budget --drop-caches --data /var/tmp/coffer-bench --peers restic-0.14=/usr/bin/restic,restic-0.18.1=$HOME/go/bin/restic",
			"coffer bench --host-budget --runs 1 --datasets million --data /var/tmp/coffer-bench",
			"coffer bench --host-budget --runs 1 --datasets block --data /var/tmp/coffer-bench",
		},
		new: func() command { return &benchCmd{} },
	}
}

// benchCmd runs the benchmark suite.
type benchCmd struct {
	quick, stagesOnly, e2eOnly, keep, dropCaches bool
	data, out, peers, cofferd                    string
	profile                                      string

	hostBudget                       bool
	runs, smallFiles, millionFiles   int
	blockGiB, blockDataGiB           int
	agentCPUs, clusterCPUs, datasets string
	tree, backupFlags                string
	rssBound                         float64
}

func (c *benchCmd) addFlags(fs *flag.FlagSet) {
	fs.BoolVar(&c.quick, "quick", false, "short run: two releases, short stage timings (about 3 minutes)")
	fs.StringVar(&c.data, "data", "", "cache `DIR` for datasets and the run's repositories (default $XDG_CACHE_HOME/coffer-bench; one run at a time per DIR)")
	fs.StringVar(&c.out, "out", "", "also write the JSON report to `FILE`")
	fs.StringVar(&c.peers, "peers", "restic,borg", "comma-separated peer `TOOLS` to compare (empty: none)")
	fs.StringVar(&c.cofferd, "cofferd", "", "cofferd binary `PATH` (default: next to coffer, then PATH)")
	fs.BoolVar(&c.stagesOnly, "stages-only", false, "run only the stage micro-benchmarks")
	fs.BoolVar(&c.e2eOnly, "e2e-only", false, "run only the end-to-end scenarios")
	fs.StringVar(&c.profile, "profile", "", "write CPU profiles of cofferd and of each coffer scenario to `DIR` (go tool pprof)")
	fs.BoolVar(&c.keep, "keep", false, "keep the run's cluster and repositories under DIR/work")
	fs.BoolVar(&c.hostBudget, "host-budget", false, "run the host-budget suite: agent and peers pinned to --agent-cpus, the cluster to --cluster-cpus")
	fs.IntVar(&c.runs, "runs", 3, "with --host-budget: `N` runs, medians reported")
	fs.StringVar(&c.agentCPUs, "agent-cpus", "0", "with --host-budget: taskset CPU `LIST` of the agent and the peers")
	fs.StringVar(&c.clusterCPUs, "cluster-cpus", "", "with --host-budget: taskset CPU `LIST` of the dev cluster (default: every CPU but 0)")
	fs.StringVar(&c.datasets, "datasets", "toolchain,image,small", "with --host-budget: comma-separated `SETS` (toolchain, image, small, million, block)")
	fs.StringVar(&c.tree, "tree", "", "with --host-budget: the unpacked toolchain `DIR` (default: this Go's GOROOT)")
	fs.IntVar(&c.smallFiles, "small-files", 200000, "with --host-budget: `N` files in the small dataset")
	fs.IntVar(&c.millionFiles, "million-files", 1000000, "with --host-budget: `N` files in the million dataset")
	fs.IntVar(&c.blockGiB, "block-gib", 100, "with --host-budget: apparent size in `GiB` of the block dataset's sparse image")
	fs.IntVar(&c.blockDataGiB, "block-data-gib", 4, "with --host-budget: `GiB` of data in the block dataset's image (the rest is holes)")
	fs.Float64Var(&c.rssBound, "rss-bound", bench.DefaultRSSBoundMiB, "with --host-budget: agent peak RSS bound in `MiB`; above it the command fails")
	fs.StringVar(&c.backupFlags, "backup-flags", "", "with --host-budget: extra `FLAGS` for every coffer backup (e.g. \"--compression fast\")")
	fs.BoolVar(&c.dropCaches, "drop-caches", false, "sync and drop the kernel's page cache before each tool's full restore (root only), for restores that do not depend on scenario order")
}

func (c *benchCmd) run(ctx context.Context, a *app, args []string) error {
	if len(args) > 0 {
		return usagef(benchSpec(), "bench takes no arguments, got %q", args[0])
	}
	if c.stagesOnly && c.e2eOnly {
		return usagef(benchSpec(), "--stages-only and --e2e-only exclude each other")
	}
	data := c.data
	if data == "" {
		dir, err := os.UserCacheDir()
		if err != nil {
			return usagef(benchSpec(), "no --data DIR given and no user cache directory: %v", err)
		}
		data = filepath.Join(dir, "coffer-bench")
	}
	exe, _ := os.Executable()
	cofferd := c.cofferd
	if cofferd == "" {
		cofferd = bench.FindCofferd(exe)
	}
	if c.profile != "" {
		// The agent processes run in their own working directories: a relative
		// directory would scatter their profiles.
		abs, err := filepath.Abs(c.profile)
		if err != nil {
			return usagef(benchSpec(), "--profile %s: %v", c.profile, err)
		}
		c.profile = abs
	}
	if c.hostBudget {
		return c.runHostBudget(ctx, a, data, exe, cofferd)
	}
	peers := []string{}
	for _, p := range strings.Split(c.peers, ",") {
		switch p = strings.TrimSpace(p); p {
		case "":
		case "restic", "borg":
			peers = append(peers, p)
		default:
			return usagef(benchSpec(), "--peers: unknown tool %q (want restic, borg)", p)
		}
	}
	o := bench.Options{
		Quick: c.quick, DataDir: data, Coffer: exe, Cofferd: cofferd, Peers: peers,
		Stages: c.stagesOnly, E2E: c.e2eOnly, Keep: c.keep, DropCaches: c.dropCaches, ProfileDir: c.profile,
		Logf: func(format string, v ...any) {
			if !a.g.quiet {
				fmt.Fprintf(a.stderr, format+"\n", v...)
			}
		},
	}
	if cofferd == "" {
		o.Cofferd = ""
	}
	rep, err := bench.Run(ctx, o)
	if rep != nil && c.out != "" {
		f, ferr := os.Create(c.out)
		if ferr == nil {
			ferr = writeJSON(f, rep)
			if cerr := f.Close(); ferr == nil {
				ferr = cerr
			}
		}
		if ferr != nil {
			return fmt.Errorf("bench: --out: %w", ferr)
		}
	}
	if err != nil {
		return err
	}
	if a.g.json {
		return writeJSON(a.stdout, rep)
	}
	rep.Markdown(a.stdout)
	return nil
}

// runHostBudget runs `coffer bench --host-budget`.
func (c *benchCmd) runHostBudget(ctx context.Context, a *app, data, exe, cofferd string) error {
	if cofferd == "" {
		return usagef(benchSpec(), "--host-budget: cofferd not found next to coffer or on PATH (give --cofferd)")
	}
	o := bench.HostOptions{
		DataDir: data, Coffer: exe, Cofferd: cofferd, Runs: c.runs, AgentCPUs: c.agentCPUs, ClusterCPUs: c.clusterCPUs,
		Tree: c.tree, SmallFiles: c.smallFiles, MillionFiles: c.millionFiles, BlockGiB: c.blockGiB, BlockDataGiB: c.blockDataGiB, RSSBoundMiB: c.rssBound,
		BackupArgs: strings.Fields(c.backupFlags), DropCaches: c.dropCaches, ProfileDir: c.profile,
		Logf: func(format string, v ...any) {
			if !a.g.quiet {
				fmt.Fprintf(a.stderr, format+"\n", v...)
			}
		},
	}
	for _, d := range strings.Split(c.datasets, ",") {
		if d = strings.TrimSpace(d); d != "" {
			o.Datasets = append(o.Datasets, d)
		}
	}
	for _, p := range strings.Split(c.peers, ",") {
		p = strings.TrimSpace(p)
		if p == "" {
			continue
		}
		name, bin, ok := strings.Cut(p, "=")
		if !ok {
			var err error
			if bin, err = exec.LookPath(name); err != nil {
				o.Logf("bench: peer %s not found on PATH; skipped", name)
				continue
			}
		}
		kind := ""
		switch {
		case strings.HasPrefix(name, "restic"):
			kind = "restic"
		case strings.HasPrefix(name, "borg"):
			kind = "borg"
		default:
			return usagef(benchSpec(), "--peers: %q: a peer's name starts with restic or borg", p)
		}
		o.Peers = append(o.Peers, bench.HostPeer{Name: name, Kind: kind, Bin: bin})
	}
	rep, err := bench.RunHostBudget(ctx, o)
	if rep != nil && c.out != "" {
		f, ferr := os.Create(c.out)
		if ferr == nil {
			ferr = writeJSON(f, rep)
			if cerr := f.Close(); ferr == nil {
				ferr = cerr
			}
		}
		if ferr != nil {
			return fmt.Errorf("bench: --out: %w", ferr)
		}
	}
	if err != nil {
		return err
	}
	if a.g.json {
		if err := writeJSON(a.stdout, rep); err != nil {
			return err
		}
	} else {
		rep.Markdown(a.stdout)
	}
	if len(rep.OverBound) > 0 {
		return fmt.Errorf("bench: agent peak RSS above %.0f MiB in %d scenarios (memory regression)", rep.RSSBoundMiB, len(rep.OverBound))
	}
	return nil
}
