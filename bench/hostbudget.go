package bench

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// HostOptions configures RunHostBudget: the agent and each peer on the same pinned CPUs,
// the dev cluster on the others, as in a deployment where the cluster runs on its own
// machines and the agent on a protected host.
type HostOptions struct {
	// DataDir caches the generated datasets and holds the run's repositories (required).
	DataDir string
	// Coffer and Cofferd are the binaries under test (required).
	Coffer, Cofferd string
	// Peers are the tools compared with Coffer (restic and borg, any versions).
	Peers []HostPeer
	// Runs is how many times the whole sequence runs (default 3); medians are reported.
	Runs int
	// AgentCPUs and ClusterCPUs are taskset CPU lists. Defaults: "0", and the other
	// CPUs ("1-N"); with one CPU both share it.
	AgentCPUs, ClusterCPUs string
	// Datasets names the datasets to run, in order: "toolchain" (a copy of Tree),
	// "image" (a raw ext4 image of Tree, one file), "small" (SmallFiles generated
	// small files), "million" (MillionFiles empty and small files; Coffer only, backups
	// only: the memory bound), "block" (a sparse image of BlockGiB apparent size holding
	// BlockDataGiB of data, backed up with --block; Coffer only, backups only: the
	// memory bound on a large block image). Default toolchain, image, small.
	Datasets []string
	// Tree is the unpacked toolchain (default: this Go's GOROOT).
	Tree string
	// SmallFiles and MillionFiles size the generated trees (defaults 200,000 and
	// 1,000,000).
	SmallFiles, MillionFiles int
	// BlockGiB and BlockDataGiB size the block dataset's image: its apparent size
	// (default 100) and the data written into it (default 4, in 16 segments spread
	// evenly, half random and half text; the rest is holes).
	BlockGiB, BlockDataGiB int
	// BackupArgs are added to every coffer backup (e.g. --compression fast).
	BackupArgs []string
	// RSSBoundMiB is the agent's peak RSS bound (default 256): a Coffer scenario above it
	// is listed in HostReport.OverBound.
	RSSBoundMiB float64
	// DropCaches syncs and drops the page cache before each full restore (root).
	DropCaches bool
	// ProfileDir, when set, receives CPU profiles of each run in run-<n>/:
	// cofferd.pprof for the cluster's whole run and coffer-<scenario>-<dataset>.pprof
	// per agent invocation.
	ProfileDir string
	// Logf receives progress lines (default: discard).
	Logf func(format string, args ...any)
}

// HostPeer is one peer tool: Kind "restic" or "borg", Name as reported (e.g.
// "restic-0.18.1"), Bin its binary.
type HostPeer struct {
	Name, Kind, Bin string
}

// HostReport is the outcome of RunHostBudget.
type HostReport struct {
	Date        string       `json:"date"`
	Machine     Machine      `json:"machine"`
	AgentCPUs   string       `json:"agent_cpus"`
	ClusterCPUs string       `json:"cluster_cpus"`
	Runs        int          `json:"runs"`
	Load        []string     `json:"load"` // /proc/loadavg at the start of each run and at the end
	Datasets    []Dataset    `json:"datasets"`
	Results     []HostResult `json:"results"` // every measurement
	Medians     []HostResult `json:"medians"` // per tool, dataset and scenario (Run 0)
	Goals       []HostGoal   `json:"goals"`
	RSSBoundMiB float64      `json:"rss_bound_mib"`
	// OverBound lists the Coffer scenarios whose agent peak RSS exceeded RSSBoundMiB.
	OverBound []string `json:"over_bound"`
	Notes     []string `json:"notes"`
}

// HostResult is one scenario of one tool (or the median of the runs).
type HostResult struct {
	Run            int     `json:"run"`
	Tool           string  `json:"tool"`
	Dataset        string  `json:"dataset"`
	Scenario       string  `json:"scenario"`
	Bytes          int64   `json:"bytes"`
	Seconds        float64 `json:"seconds"`
	AgentCPU       float64 `json:"agent_cpu_s"`
	ClusterCPU     float64 `json:"cluster_cpu_s"`
	AgentCPUPerGiB float64 `json:"agent_cpu_s_per_gib"`
	ClusterPerGiB  float64 `json:"cluster_cpu_s_per_gib"`
	AgentRSSMiB    float64 `json:"agent_rss_mib"`
	Added          int64   `json:"bytes_added"`
	Verified       bool    `json:"verified"` // restores: bit-identical to the source
}

// HostGoal is one goal of issue 18 on one dataset, against the better peer.
type HostGoal struct {
	Dataset string  `json:"dataset"`
	Goal    string  `json:"goal"`
	Peer    string  `json:"peer"`
	Coffer  float64 `json:"coffer"`
	PeerVal float64 `json:"peer_value"`
	Ratio   float64 `json:"ratio"`
	Target  string  `json:"target"`
	Met     bool    `json:"met"`
	// RunRatios are the goal's ratio within each run, Coffer against the better peer of
	// that run, in run order: the tools of one run share the machine's state, so their
	// spread shows how much of a ratio is the machine's.
	RunRatios []float64 `json:"run_ratios,omitempty"`
}

// Host-budget dataset names.
const (
	DsToolchain = "toolchain"
	DsImage     = "image"
	DsSmall     = "small"
	DsMillion   = "million"
	DsBlock     = "block"
)

// DefaultRSSBoundMiB is the agent's peak RSS bound on any tree (issue 18).
const DefaultRSSBoundMiB = 256

// hostDS is one prepared dataset: the pristine source and how a run gets its own copy.
type hostDS struct {
	Dataset
	pristine string // directory copied per run ("" for million: backed up in place)
	base     string // base name of the backed-up directory
	backups  bool   // million, block: backups only, Coffer only
	block    bool   // block: the source is one image file, backed up with --block
}

// RunHostBudget runs the host-budget suite.
func RunHostBudget(ctx context.Context, o HostOptions) (*HostReport, error) {
	if o.DataDir == "" || o.Coffer == "" || o.Cofferd == "" {
		return nil, fmt.Errorf("bench: host budget needs a data directory and the coffer and cofferd binaries")
	}
	if o.Logf == nil {
		o.Logf = func(string, ...any) {}
	}
	if o.Runs <= 0 {
		o.Runs = 3
	}
	if o.RSSBoundMiB <= 0 {
		o.RSSBoundMiB = DefaultRSSBoundMiB
	}
	if o.SmallFiles <= 0 {
		o.SmallFiles = 200_000
	}
	if o.MillionFiles <= 0 {
		o.MillionFiles = 1_000_000
	}
	if o.BlockGiB <= 0 {
		o.BlockGiB = 100
	}
	if o.BlockDataGiB <= 0 {
		o.BlockDataGiB = 4
	}
	if o.Tree == "" {
		o.Tree = runtime.GOROOT()
	}
	if len(o.Datasets) == 0 {
		o.Datasets = []string{DsToolchain, DsImage, DsSmall}
	}
	n := runtime.NumCPU()
	if o.AgentCPUs == "" {
		o.AgentCPUs = "0"
	}
	if o.ClusterCPUs == "" {
		o.ClusterCPUs = "0"
		if n > 1 {
			o.ClusterCPUs = fmt.Sprintf("1-%d", n-1)
		}
	}
	if _, err := exec.LookPath("taskset"); err != nil {
		return nil, fmt.Errorf("bench: host budget needs taskset (apt-get install -y util-linux)")
	}
	if o.DropCaches {
		if err := checkDropCaches(); err != nil {
			return nil, err
		}
	}
	if err := os.MkdirAll(o.DataDir, 0o755); err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	unlock, err := lockDataDir(o.DataDir)
	if err != nil {
		return nil, err
	}
	defer unlock()
	r := &HostReport{Date: time.Now().UTC().Format(time.RFC3339), Machine: probeMachine(), AgentCPUs: o.AgentCPUs,
		ClusterCPUs: o.ClusterCPUs, Runs: o.Runs, RSSBoundMiB: o.RSSBoundMiB, OverBound: []string{}, Notes: []string{}}
	if !o.DropCaches {
		r.Notes = append(r.Notes, "full restores ran without --drop-caches: restore times depend on what ran before them")
	}
	var dss []hostDS
	for _, name := range o.Datasets {
		d, err := prepareHostDS(ctx, o, name)
		if err != nil {
			return nil, err
		}
		dss = append(dss, d)
		r.Datasets = append(r.Datasets, d.Dataset)
	}
	for run := 1; run <= o.Runs; run++ {
		r.Load = append(r.Load, loadAvg())
		if err := hostRun(ctx, o, r, dss, run); err != nil {
			return r, err
		}
	}
	r.Load = append(r.Load, loadAvg())
	r.summarise(o)
	return r, nil
}

// loadAvg returns the first three fields of /proc/loadavg.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// prepareHostDS finds or builds one dataset under DataDir.
func prepareHostDS(ctx context.Context, o HostOptions, name string) (hostDS, error) {
	switch name {
	case DsToolchain:
		ds, err := scanDataset(DsToolchain, o.Tree)
		if err != nil {
			return hostDS{}, err
		}
		return hostDS{Dataset: ds, pristine: o.Tree, base: "go"}, nil
	case DsImage:
		ds, err := scanDataset(DsToolchain, o.Tree)
		if err != nil {
			return hostDS{}, err
		}
		ds.Name = "toolchain"
		img, err := ext4Image(ctx, o.DataDir, ds, o.Logf)
		if err != nil {
			return hostDS{}, fmt.Errorf("bench: image dataset: %w", err)
		}
		d, err := scanDataset(DsImage, filepath.Dir(img))
		if err != nil {
			return hostDS{}, err
		}
		return hostDS{Dataset: d, pristine: filepath.Dir(img), base: "img"}, nil
	case DsSmall, DsMillion:
		count, maxSize, empty := o.SmallFiles, 2048, 10
		if name == DsMillion {
			count, maxSize, empty = o.MillionFiles, 512, 50
		}
		dir := filepath.Join(o.DataDir, fmt.Sprintf("%s-%d", name, count))
		if _, err := os.Stat(filepath.Join(dir, ".complete")); err != nil {
			o.Logf("bench: generating %d files under %s", count, dir)
			if err := os.RemoveAll(dir); err != nil {
				return hostDS{}, fmt.Errorf("bench: %w", err)
			}
			if err := GenerateSmallTree(filepath.Join(dir, "tree"), count, maxSize, empty, 1); err != nil {
				return hostDS{}, err
			}
			if err := os.WriteFile(filepath.Join(dir, ".complete"), nil, 0o644); err != nil {
				return hostDS{}, fmt.Errorf("bench: %w", err)
			}
		}
		d, err := scanDataset(name, filepath.Join(dir, "tree"))
		if err != nil {
			return hostDS{}, err
		}
		if name == DsMillion {
			return hostDS{Dataset: d, base: "tree", backups: true}, nil
		}
		return hostDS{Dataset: d, pristine: d.Dir, base: "tree"}, nil
	case DsBlock:
		dir := filepath.Join(o.DataDir, fmt.Sprintf("block-%d-%d", o.BlockGiB, o.BlockDataGiB))
		img := filepath.Join(dir, "disk.img")
		if _, err := os.Stat(filepath.Join(dir, ".complete")); err != nil {
			o.Logf("bench: writing a %d GiB sparse image holding %d GiB of data to %s", o.BlockGiB, o.BlockDataGiB, img)
			if err := os.RemoveAll(dir); err != nil {
				return hostDS{}, fmt.Errorf("bench: %w", err)
			}
			if err := GenerateSparseImage(img, int64(o.BlockGiB)<<30, int64(o.BlockDataGiB)<<30, 1); err != nil {
				return hostDS{}, err
			}
			if err := os.WriteFile(filepath.Join(dir, ".complete"), nil, 0o644); err != nil {
				return hostDS{}, fmt.Errorf("bench: %w", err)
			}
		}
		return hostDS{Dataset: Dataset{Name: DsBlock, Dir: img, Files: 1, Bytes: int64(o.BlockGiB) << 30},
			base: "disk.img", backups: true, block: true}, nil
	}
	return hostDS{}, fmt.Errorf("bench: unknown host-budget dataset %q (want toolchain, image, small, million, block)", name)
}

// GenerateSparseImage writes a sparse file of size bytes at path holding data bytes in
// 16 segments spread evenly (each starting on a 4 MiB boundary), alternately random and
// generated text, from a generator seeded with seed; the rest are holes.
func GenerateSparseImage(path string, size, data int64, seed uint64) error {
	const segments, align = 16, 4 << 20
	seg := data / segments / align * align
	if seg <= 0 || size < data {
		return fmt.Errorf("bench: sparse image: %d bytes of data do not fit %d segments in %d bytes", data, segments, size)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	stride := size / segments / align * align
	rng := rand.New(rand.NewPCG(seed, 0x626c6f636b))
	buf := make([]byte, 0, 8<<20)
	for k := range int64(segments) {
		for off := int64(0); off < seg && err == nil; off += int64(cap(buf)) {
			n := int(min(int64(cap(buf)), seg-off))
			if k%2 == 0 {
				buf = buf[:n]
				for i := 0; i+8 <= n; i += 8 {
					binary.LittleEndian.PutUint64(buf[i:], rng.Uint64())
				}
			} else {
				buf = genText(buf[:0], rng, n)
			}
			_, err = f.WriteAt(buf, k*stride+off)
		}
	}
	if err == nil {
		err = f.Truncate(size)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("bench: sparse image: %w", err)
	}
	return nil
}

// words are the vocabulary of generated text (compressible about as much as source
// code); immutable.
var words = strings.Fields(`the of and to in is for on that with as by this be are from or at an it not which
func return if else err nil int string byte struct type var const package import range for go defer
select case switch break continue map chan interface error fmt os io time context sync atomic value
index count size offset buffer reader writer file path node chunk shard vault snapshot backup restore`)

// genText appends about n bytes of word text drawn from rng to b.
func genText(b []byte, rng *rand.Rand, n int) []byte {
	end := len(b) + n
	for len(b) < end {
		switch rng.IntN(12) {
		case 0:
			b = append(b, '\n')
		case 1:
			b = strconv.AppendUint(b, rng.Uint64()%100000, 10)
			b = append(b, ' ')
		default:
			b = append(b, words[rng.IntN(len(words))]...)
			b = append(b, ' ')
		}
	}
	return b[:end]
}

// GenerateSmallTree writes count files below root (1,000 per directory, 100
// directories per parent), sizes uniform in [1, maxSize] except emptyPct percent
// empty files, holding text from a generator seeded with seed: the same arguments give
// the same tree.
func GenerateSmallTree(root string, count, maxSize, emptyPct int, seed uint64) error {
	const perDir, perParent = 1000, 100
	dirs := (count + perDir - 1) / perDir
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for w := range 4 {
		wg.Go(func() {
			var buf []byte
			for d := w; d < dirs; d += 4 {
				rng := rand.New(rand.NewPCG(seed, uint64(d)))
				dir := filepath.Join(root, fmt.Sprintf("p%03d", d/perParent), fmt.Sprintf("d%03d", d%perParent))
				if err := os.MkdirAll(dir, 0o755); err != nil {
					errs[w] = fmt.Errorf("bench: %w", err)
					return
				}
				for i := d * perDir; i < min(count, (d+1)*perDir); i++ {
					size := 0
					if rng.IntN(100) >= emptyPct {
						size = 1 + rng.IntN(maxSize)
					}
					buf = genText(buf[:0], rng, size)
					if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("f%06d.txt", i)), buf, 0o644); err != nil {
						errs[w] = fmt.Errorf("bench: %w", err)
						return
					}
				}
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// MutateTree changes a tree for the incremental scenario, deterministically: every
// every-th regular file (in walk order) gets 8 KiB of new text appended, and a file of
// at least 16 MiB also gets 32 regions of 64 KiB overwritten, spread over it. It
// returns the number of files changed.
func MutateTree(root string, every int, seed uint64) (int, error) {
	rng := rand.New(rand.NewPCG(seed, 0x6d757461))
	i, changed := 0, 0
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		i++
		if (i-1)%every != 0 {
			return nil
		}
		f, err := os.OpenFile(p, os.O_RDWR, 0)
		if err != nil {
			return err
		}
		st, err := f.Stat()
		if err == nil && st.Size() >= 16<<20 {
			for k := range 32 {
				off := st.Size() / 32 * int64(k)
				if _, err = f.WriteAt(genText(nil, rng, 64<<10), off); err != nil {
					break
				}
			}
		}
		if err == nil {
			_, err = f.WriteAt(genText(nil, rng, 8<<10), max(st.Size(), 0))
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		changed++
		return err
	})
	if err != nil {
		return changed, fmt.Errorf("bench: mutate: %w", err)
	}
	return changed, nil
}

// CompareTrees checks that every regular file, symlink and directory below src exists
// below dst with the same content (SHA-256) or target, and that dst holds nothing else.
func CompareTrees(src, dst string) error {
	seen := 0
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		q := filepath.Join(dst, rel)
		seen++
		switch {
		case d.IsDir():
			st, err := os.Lstat(q)
			if err != nil || !st.IsDir() {
				return fmt.Errorf("directory %s missing from the restore (%v)", rel, err)
			}
		case d.Type()&fs.ModeSymlink != 0:
			a, _ := os.Readlink(p)
			b, err := os.Readlink(q)
			if err != nil || a != b {
				return fmt.Errorf("symlink %s: restored %q (%v), source %q", rel, b, err, a)
			}
		case d.Type().IsRegular():
			a, err := fileSum(p)
			if err != nil {
				return err
			}
			b, err := fileSum(q)
			if err != nil {
				return fmt.Errorf("file %s: %w", rel, err)
			}
			if a != b {
				return fmt.Errorf("file %s differs from the source", rel)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("bench: restore check: %w", err)
	}
	n := 0
	_ = filepath.WalkDir(dst, func(string, fs.DirEntry, error) error { n++; return nil })
	if n != seen {
		return fmt.Errorf("bench: restore check: the restore holds %d entries, the source %d", n, seen)
	}
	return nil
}

func fileSum(p string) ([32]byte, error) {
	var s [32]byte
	f, err := os.Open(p)
	if err != nil {
		return s, err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return s, err
	}
	copy(s[:], h.Sum(nil))
	return s, nil
}

// copyTree copies src to dst with cp -a (sparse files stay sparse).
func copyTree(ctx context.Context, src, dst string) error {
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	if _, err := runProc(ctx, "", nil, nil, "cp", "-a", "--sparse=always", src, dst); err != nil {
		return fmt.Errorf("bench: copy %s: %w", src, err)
	}
	return nil
}

// hostRun runs every scenario of every dataset once.
func hostRun(ctx context.Context, o HostOptions, r *HostReport, dss []hostDS, run int) error {
	work := filepath.Join(o.DataDir, "work", fmt.Sprintf("host-%d-%d", time.Now().Unix(), run))
	if err := os.MkdirAll(work, 0o755); err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	defer os.RemoveAll(work)
	ct := &cofferTool{coffer: o.Coffer, cofferd: o.Cofferd, dir: filepath.Join(work, "coffer"), pin: o.AgentCPUs,
		clusterPin: o.ClusterCPUs, backupArgs: o.BackupArgs}
	if o.ProfileDir != "" {
		ct.profileDir = filepath.Join(o.ProfileDir, fmt.Sprintf("run-%d", run))
		if err := os.MkdirAll(ct.profileDir, 0o755); err != nil {
			return fmt.Errorf("bench: profile dir: %w", err)
		}
	}
	if err := os.MkdirAll(ct.dir, 0o755); err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	o.Logf("bench: run %d: starting the dev cluster on CPUs %s (load %s)", run, o.ClusterCPUs, loadAvg())
	if err := ct.setup(ctx); err != nil {
		ct.close()
		return fmt.Errorf("bench: coffer setup: %w", err)
	}
	defer ct.close()
	for _, d := range dss {
		src := filepath.Join(work, "src-"+d.Name, d.base)
		ct.backupArgs = o.BackupArgs
		if d.block {
			ct.backupArgs = append(slices.Clone(o.BackupArgs), "--block")
		}
		if d.backups {
			src = d.Dir
		} else if err := copyTree(ctx, d.pristine, src); err != nil {
			return err
		}
		if err := ct.useVault(ctx, fmt.Sprintf("hb-%s", d.Name)); err != nil {
			return fmt.Errorf("bench: coffer vault: %w", err)
		}
		tools := []tool{ct}
		if !d.backups {
			for _, p := range o.Peers {
				dir := filepath.Join(work, p.Name+"-"+d.Name)
				if err := os.MkdirAll(dir, 0o755); err != nil {
					return fmt.Errorf("bench: %w", err)
				}
				var t tool
				switch p.Kind {
				case "restic":
					t = &resticTool{bin: p.Bin, dir: dir, name: p.Name, pin: o.AgentCPUs}
				case "borg":
					t = &borgTool{bin: p.Bin, dir: dir, pin: o.AgentCPUs}
				default:
					return fmt.Errorf("bench: unknown peer kind %q", p.Kind)
				}
				if err := t.setup(ctx); err != nil {
					return fmt.Errorf("bench: %s setup: %w", p.Name, err)
				}
				tools = append(tools, t)
			}
		}
		// Each run starts with another tool, so that a slow spell of the shared machine
		// does not always hit the same one.
		k := (run - 1) % len(tools)
		tools = append(tools[k:], tools[:k]...)
		add := func(t tool, sc Scenario, verified bool) {
			name := t.Name()
			gib := float64(sc.Bytes) / (1 << 30)
			hr := HostResult{Run: run, Tool: name, Dataset: d.Name, Scenario: sc.Name, Bytes: sc.Bytes,
				Seconds: sc.Seconds, AgentCPU: sc.AgentCPU, ClusterCPU: sc.CPUSec - sc.AgentCPU,
				AgentRSSMiB: sc.AgentRSS, Added: sc.Added, Verified: verified}
			hr.AgentCPUPerGiB, hr.ClusterPerGiB = hr.AgentCPU/gib, hr.ClusterCPU/gib
			r.Results = append(r.Results, hr)
			o.Logf("bench: run %d %s %s %s: %.2f s, agent %.2f CPU-s, cluster %.2f CPU-s, RSS %.0f MiB", run, name, d.Name, sc.Name,
				hr.Seconds, hr.AgentCPU, hr.ClusterCPU, hr.AgentRSSMiB)
		}
		backup := func(name string) error {
			for _, t := range tools {
				sc, err := measure(ctx, t, name, d.Name, d.Bytes, func() (procResult, backupOut, error) {
					b, err := t.backup(ctx, src)
					return b.proc, b, err
				})
				if err != nil {
					return err
				}
				add(t, sc, false)
			}
			return nil
		}
		if err := backup(ScInitial); err != nil {
			return err
		}
		if err := backup(ScUnchanged); err != nil {
			return err
		}
		if d.backups {
			continue
		}
		every := 20
		if d.Name == DsImage {
			every = 1
		}
		if _, err := MutateTree(src, every, uint64(run)); err != nil {
			return err
		}
		_, bytes := treeBytes(src)
		if err := backup(ScIncremental); err != nil {
			return err
		}
		rel, size, err := largestFile(src)
		if err != nil {
			return err
		}
		want, err := fileSum(filepath.Join(src, rel))
		if err != nil {
			return fmt.Errorf("bench: %w", err)
		}
		for _, t := range tools {
			target := filepath.Join(work, "restore-"+t.Name()+"-"+d.Name)
			if o.DropCaches {
				if err := dropCaches(); err != nil {
					return err
				}
			}
			sc, err := measure(ctx, t, ScRestore, d.Name, bytes, func() (procResult, backupOut, error) {
				p, err := t.restore(ctx, target)
				return p, backupOut{}, err
			})
			if err != nil {
				return err
			}
			root := restoredRoot(target, src)
			if err := CompareTrees(src, root); err != nil {
				return fmt.Errorf("bench: %s %s restore: %w", t.Name(), d.Name, err)
			}
			add(t, sc, true)
			if err := os.RemoveAll(target); err != nil {
				return fmt.Errorf("bench: %w", err)
			}
			h := sha256.New()
			var cw countWriter
			sc, err = measure(ctx, t, ScRestoreFile, d.Name, size, func() (procResult, backupOut, error) {
				p, err := t.restoreFile(ctx, src, rel, io.MultiWriter(h, &cw))
				return p, backupOut{}, err
			})
			if err != nil {
				return err
			}
			if cw.n != size || [32]byte(h.Sum(nil)) != want {
				return fmt.Errorf("bench: %s single-file restore of %s: %d bytes, not the source's %d bytes", t.Name(), rel, cw.n, size)
			}
			add(t, sc, true)
		}
		if err := os.RemoveAll(filepath.Dir(src)); err != nil {
			return fmt.Errorf("bench: %w", err)
		}
	}
	return nil
}

// restoredRoot finds where a tool put the restored copy of src below target: Coffer
// restores the backed-up directory by its base name, restic and borg by its full path.
func restoredRoot(target, src string) string {
	if st, err := os.Stat(filepath.Join(target, filepath.Base(src))); err == nil && st.IsDir() {
		return filepath.Join(target, filepath.Base(src))
	}
	return filepath.Join(target, src)
}

// summarise computes the medians, the goals and the bound check.
func (r *HostReport) summarise(o HostOptions) {
	type key struct{ tool, ds, sc string }
	groups := map[key][]HostResult{}
	var order []key
	for _, x := range r.Results {
		k := key{x.Tool, x.Dataset, x.Scenario}
		if _, ok := groups[k]; !ok {
			order = append(order, k)
		}
		groups[k] = append(groups[k], x)
		if x.Tool == "coffer" && x.AgentRSSMiB > o.RSSBoundMiB {
			r.OverBound = append(r.OverBound, fmt.Sprintf("run %d %s %s: agent peak RSS %.0f MiB > %.0f MiB", x.Run, x.Dataset, x.Scenario, x.AgentRSSMiB, o.RSSBoundMiB))
		}
	}
	med := func(xs []HostResult, f func(HostResult) float64) float64 {
		v := make([]float64, len(xs))
		for i, x := range xs {
			v[i] = f(x)
		}
		slices.Sort(v)
		if len(v) == 0 {
			return 0
		}
		if len(v)%2 == 1 {
			return v[len(v)/2]
		}
		return (v[len(v)/2-1] + v[len(v)/2]) / 2
	}
	byKey := map[key]HostResult{}
	for _, k := range order {
		xs := groups[k]
		m := HostResult{Tool: k.tool, Dataset: k.ds, Scenario: k.sc, Bytes: xs[0].Bytes, Verified: true}
		m.Seconds = med(xs, func(x HostResult) float64 { return x.Seconds })
		m.AgentCPU = med(xs, func(x HostResult) float64 { return x.AgentCPU })
		m.ClusterCPU = med(xs, func(x HostResult) float64 { return x.ClusterCPU })
		m.AgentCPUPerGiB = med(xs, func(x HostResult) float64 { return x.AgentCPUPerGiB })
		m.ClusterPerGiB = med(xs, func(x HostResult) float64 { return x.ClusterPerGiB })
		m.AgentRSSMiB = med(xs, func(x HostResult) float64 { return x.AgentRSSMiB })
		m.Added = int64(med(xs, func(x HostResult) float64 { return float64(x.Added) }))
		for _, x := range xs {
			m.Verified = m.Verified && (x.Verified || !strings.Contains(x.Scenario, "restore"))
		}
		r.Medians = append(r.Medians, m)
		byKey[k] = m
	}
	// The better peer per dataset and scenario, and the goals.
	best := func(ds, sc string, f func(HostResult) float64) (string, float64) {
		name, v := "", 0.0
		for _, p := range o.Peers {
			m, ok := byKey[key{p.Name, ds, sc}]
			if !ok {
				continue
			}
			if x := f(m); name == "" || x < v {
				name, v = p.Name, x
			}
		}
		return name, v
	}
	// bestInRun is best within one run: the lowest figure any peer had in it.
	bestInRun := func(ds, sc string, run int, f func(HostResult) float64) (float64, bool) {
		v, ok := 0.0, false
		for _, p := range o.Peers {
			for _, x := range groups[key{p.Name, ds, sc}] {
				if x.Run == run && (!ok || f(x) < v) {
					v, ok = f(x), true
				}
			}
		}
		return v, ok
	}
	for _, d := range r.Datasets {
		c := func(sc string) (HostResult, bool) { m, ok := byKey[key{"coffer", d.Name, sc}]; return m, ok }
		goal := func(g, sc, tgt string, f func(HostResult) float64, ratio func(cof, peer float64) float64, met func(float64) bool) {
			m, ok := c(sc)
			if !ok {
				return
			}
			peer, pv := best(d.Name, sc, f)
			if peer == "" {
				return
			}
			rt := ratio(f(m), pv)
			r.Goals = append(r.Goals, HostGoal{Dataset: d.Name, Goal: g, Peer: peer, Coffer: f(m), PeerVal: pv, Ratio: rt, Target: tgt, Met: met(rt),
				RunRatios: runRatios(groups[key{"coffer", d.Name, sc}], func(run int) (float64, bool) { return bestInRun(d.Name, sc, run, f) }, f, ratio)})
		}
		speed := func(cof, peer float64) float64 { return peer / cof }
		frac := func(cof, peer float64) float64 { return cof / max(peer, 1e-9) }
		secs := func(x HostResult) float64 { return x.Seconds }
		goal("initial backup, wall time", ScInitial, "≥ 2x", secs, speed, func(v float64) bool { return v >= 2 })
		goal("unchanged re-backup, wall time", ScUnchanged, "", secs, speed, func(float64) bool { return true })
		goal("incremental backup, wall time", ScIncremental, "", secs, speed, func(float64) bool { return true })
		goal("initial backup, agent CPU-s/GiB", ScInitial, "≤ 0.5x", func(x HostResult) float64 { return x.AgentCPUPerGiB }, frac, func(v float64) bool { return v <= 0.5 })
		goal("full restore, wall time", ScRestore, "≥ 2x", secs, speed, func(v float64) bool { return v >= 2 })
		goal("single-file restore, wall time", ScRestoreFile, "", secs, speed, func(float64) bool { return true })
		goal("initial backup, bytes added", ScInitial, "≤ 1.1x", func(x HostResult) float64 { return float64(x.Added) }, frac, func(v float64) bool { return v <= 1.1 })
		goal("incremental backup, bytes added", ScIncremental, "≤ 1.1x", func(x HostResult) float64 { return float64(x.Added) }, frac, func(v float64) bool { return v <= 1.1 })
		// Cluster CPU per GiB against the agent's own, and the RSS bound: Coffer only.
		if m, ok := c(ScInitial); ok {
			rt := m.ClusterPerGiB / max(m.AgentCPUPerGiB, 1e-9)
			r.Goals = append(r.Goals, HostGoal{Dataset: d.Name, Goal: "initial backup, cluster CPU-s/GiB over agent's", Peer: "coffer agent",
				Coffer: m.ClusterPerGiB, PeerVal: m.AgentCPUPerGiB, Ratio: rt, Target: "≤ 1x", Met: rt <= 1})
		}
		peak := 0.0
		for _, m := range r.Medians {
			if m.Tool == "coffer" && m.Dataset == d.Name {
				peak = max(peak, m.AgentRSSMiB)
			}
		}
		if peak > 0 {
			r.Goals = append(r.Goals, HostGoal{Dataset: d.Name, Goal: "agent peak RSS, MiB", Peer: "bound",
				Coffer: peak, PeerVal: o.RSSBoundMiB, Ratio: peak / o.RSSBoundMiB, Target: "≤ 1x", Met: peak <= o.RSSBoundMiB})
		}
	}
}

// runRatios returns, for each of Coffer's results in run order, ratio(f(result), the
// better peer's figure in the same run); a run without a peer figure is left out.
func runRatios(coffer []HostResult, peerIn func(run int) (float64, bool), f func(HostResult) float64, ratio func(cof, peer float64) float64) []float64 {
	cs := slices.Clone(coffer)
	slices.SortFunc(cs, func(a, b HostResult) int { return a.Run - b.Run })
	var out []float64
	for _, c := range cs {
		if pv, ok := peerIn(c.Run); ok {
			out = append(out, ratio(f(c), pv))
		}
	}
	return out
}

// Markdown writes the report's tables.
func (r *HostReport) Markdown(w io.Writer) {
	fmt.Fprintf(w, "## Host budget (%s)\n\n", r.Date)
	fmt.Fprintf(w, "Agent and peers on CPUs %s, cluster on CPUs %s; %d runs, medians; load average at the start of each run and at the end: %s. %s, %d cores, %s.\n\n",
		r.AgentCPUs, r.ClusterCPUs, r.Runs, strings.Join(r.Load, " / "), r.Machine.CPU, r.Machine.Cores, r.Machine.GoVersion)
	fmt.Fprintln(w, "| dataset | files | MiB |")
	fmt.Fprintln(w, "|---|---:|---:|")
	for _, d := range r.Datasets {
		fmt.Fprintf(w, "| %s | %d | %s |\n", d.Name, d.Files, mib(d.Bytes))
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| dataset | scenario | tool | s | agent CPU-s/GiB | cluster CPU-s/GiB | agent peak RSS MiB | added MiB | verified |")
	fmt.Fprintln(w, "|---|---|---|---:|---:|---:|---:|---:|---|")
	for _, m := range r.Medians {
		v := ""
		if strings.Contains(m.Scenario, "restore") {
			v = "bit-identical"
		}
		cl := "—"
		if m.Tool == "coffer" {
			cl = num(m.ClusterPerGiB)
		}
		added := "—"
		if strings.Contains(m.Scenario, "backup") {
			added = mib(m.Added)
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s | %.0f | %s | %s |\n", m.Dataset, m.Scenario, m.Tool, num(m.Seconds),
			num(m.AgentCPUPerGiB), cl, m.AgentRSSMiB, added, v)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| dataset | goal | better peer | Coffer | peer | ratio | per run | target | met |")
	fmt.Fprintln(w, "|---|---|---|---:|---:|---:|---|---|---|")
	for _, g := range r.Goals {
		met := ""
		if g.Target != "" {
			met = "**no**"
			if g.Met {
				met = "yes"
			}
		}
		runs := make([]string, len(g.RunRatios))
		for i, x := range g.RunRatios {
			runs[i] = fmt.Sprintf("%.2fx", x)
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %.2fx | %s | %s | %s |\n", g.Dataset, g.Goal, g.Peer, num(g.Coffer), num(g.PeerVal), g.Ratio,
			strings.Join(runs, " "), g.Target, met)
	}
	fmt.Fprintln(w)
	if len(r.OverBound) > 0 {
		fmt.Fprintf(w, "**Memory regression**: the agent's peak RSS exceeded %.0f MiB:\n\n", r.RSSBoundMiB)
		for _, s := range r.OverBound {
			fmt.Fprintf(w, "- %s\n", s)
		}
		fmt.Fprintln(w)
	} else {
		fmt.Fprintf(w, "Agent peak RSS within the %.0f MiB bound in every Coffer scenario.\n\n", r.RSSBoundMiB)
	}
	for _, n := range r.Notes {
		fmt.Fprintf(w, "Note: %s\n", n)
	}
}
