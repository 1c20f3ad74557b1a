package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"
)

// Options configures a Run. Zero fields take the defaults named beside them.
type Options struct {
	// Quick shortens every stage and uses two releases only (go1.26.0 and go1.26.1):
	// the whole run takes under 3 minutes on 2 cores.
	Quick bool
	// DataDir caches the datasets and holds the run's repositories (required).
	DataDir string
	// Coffer and Cofferd are the binaries the scenarios run. Empty: the end-to-end
	// scenarios and node stages are skipped.
	Coffer, Cofferd string
	// Peers lists the peer tools to compare ("restic", "borg"); nil means both.
	Peers []string
	// Stages and E2E select the parts to run (both when both are false).
	Stages, E2E bool
	// ProfileDir, when set, receives CPU profiles of the Coffer processes (cofferd.pprof,
	// coffer-<scenario>.pprof) for `go tool pprof`.
	ProfileDir string
	// Keep leaves the repositories and cluster of the run in DataDir/work.
	Keep bool
	// DropCaches syncs and drops the kernel's clean page cache before each tool's full
	// restore (root only; see dropCaches), so that every tool restores from the same
	// cold start whatever ran before it.
	DropCaches bool
	// Logf receives progress lines (default: discard).
	Logf func(format string, args ...any)
}

// Run runs the suite and returns its report. A part that cannot run (a peer not
// installed, cofferd not found) is recorded in Report.Notes instead of failing the run.
func Run(ctx context.Context, o Options) (*Report, error) {
	if o.DataDir == "" {
		return nil, fmt.Errorf("bench: no data directory given")
	}
	if o.Logf == nil {
		o.Logf = func(string, ...any) {}
	}
	if !o.Stages && !o.E2E {
		o.Stages, o.E2E = true, true
	}
	if o.Peers == nil {
		o.Peers = []string{"restic", "borg"}
	}
	unlock, err := lockDataDir(o.DataDir)
	if err != nil {
		return nil, err
	}
	defer unlock()
	r := &Report{Date: time.Now().UTC().Format(time.RFC3339), Quick: o.Quick, Machine: probeMachine()}
	if err := recoverCur(o.DataDir); err != nil {
		return nil, err
	}
	versions := ToolchainVersions()
	if o.Quick {
		versions = versions[:2]
	}
	ds, note, err := Datasets(ctx, o.DataDir, versions, o.Logf)
	if err != nil {
		return nil, err
	}
	if note != "" {
		r.Notes = append(r.Notes, note)
	}
	r.Datasets = ds

	if o.Stages {
		if err := runStages(ctx, o, r); err != nil {
			return nil, err
		}
	}
	if o.Stages && len(ds) > 1 {
		o.Logf("bench: small-file layouts on %s and %s", ds[0].Name, ds[1].Name)
		if r.Layouts, err = StudySmallFiles(ds[0].Dir, ds[1].Dir); err != nil {
			return nil, err
		}
	}
	if o.E2E {
		if o.Coffer == "" || o.Cofferd == "" {
			r.Notes = append(r.Notes, "end-to-end scenarios skipped: coffer/cofferd binaries not found (run `make build`)")
		} else if err := runE2E(ctx, o, r); err != nil {
			return r, err
		}
	}
	r.summarise()
	return r, nil
}

func runStages(ctx context.Context, o Options, r *Report) error {
	d, corpusSize, netBytes := 1500*time.Millisecond, 64<<20, int64(512<<20)
	if o.Quick {
		d, corpusSize, netBytes = 300*time.Millisecond, 16<<20, 128<<20
	}
	corpus, err := Corpus(r.Datasets[0].Dir, corpusSize)
	if err != nil {
		return err
	}
	o.Logf("bench: client stages on a %d MiB sample of %s", len(corpus)>>20, r.Datasets[0].Name)
	st, err := ClientStages(corpus, d)
	if err != nil {
		return err
	}
	r.Stages = append(r.Stages, st...)
	if err := runPipelines(ctx, o, r); err != nil {
		return err
	}
	o.Logf("bench: transport stages (%d MiB one way)", netBytes>>20)
	ts, err := TransportStages(ctx, netBytes)
	if err != nil {
		return err
	}
	r.Stages = append(r.Stages, ts...)
	if o.Cofferd == "" {
		r.Notes = append(r.Notes, "node stages skipped: cofferd not found")
		return nil
	}
	o.Logf("bench: node stages (cofferd bench-stages)")
	args := []string{"bench-stages", "--json", "--dir", filepath.Join(o.DataDir, "work", "stages")}
	if o.Quick {
		args = append(args, "--quick")
	}
	p, err := runProc(ctx, "", nil, nil, o.Cofferd, args...)
	if err != nil {
		return fmt.Errorf("bench: node stages: %w", err)
	}
	var ns []Stage
	if err := json.Unmarshal(p.Stdout, &ns); err != nil {
		return fmt.Errorf("bench: node stages output: %w", err)
	}
	r.Stages = append(r.Stages, ns...)
	return nil
}

// Scenario is one end-to-end measurement of one tool.
type Scenario struct {
	Tool     string  `json:"tool"`
	Name     string  `json:"scenario"`
	Dataset  string  `json:"dataset"`
	Bytes    int64   `json:"bytes"` // source bytes the scenario covers
	Seconds  float64 `json:"seconds"`
	MBps     float64 `json:"mbps"`
	CPUSec   float64 `json:"cpu_s"`          // agent + server process CPU
	AgentCPU float64 `json:"agent_cpu_s"`    // the tool's process alone
	CPUPerGB float64 `json:"cpu_s_per_gib"`  // CPUSec per GiB of Bytes
	AgentRSS float64 `json:"agent_rss_mib"`  // peak RSS of the tool's process
	ServerRS float64 `json:"server_rss_mib"` // peak RSS of the cluster process (Coffer)
	Added    int64   `json:"bytes_added"`    // as reported by the tool (after dedup and compression)
	Stored   int64   `json:"stored_bytes"`   // repository disk usage after the scenario
	StoredD  int64   `json:"stored_delta"`   // change of Stored in this scenario
	Dedup    float64 `json:"dedup_ratio"`    // Bytes / Added (backups)
	Chunks   int64   `json:"chunks_added"`
	ChunksPS float64 `json:"chunks_per_s"`
}

// Scenario names, in run order.
const (
	ScInitial     = "initial backup"
	ScUnchanged   = "unchanged re-backup"
	ScIncremental = "incremental backup"
	ScRestore     = "full restore"
	ScRestoreFile = "single-file restore"
	ScImage       = "image backup"
)

func runE2E(ctx context.Context, o Options, r *Report) error {
	if o.DropCaches {
		if err := checkDropCaches(); err != nil {
			return err
		}
	} else {
		r.Notes = append(r.Notes, "full restores ran without --drop-caches: each tool's restore time depends on what the scenarios before it created and deleted (several times over on the file system of docs/benchmarks.md); compare restores with --drop-caches")
	}
	work := filepath.Join(o.DataDir, "work", fmt.Sprintf("run-%d", time.Now().Unix()))
	if err := os.MkdirAll(work, 0o755); err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	if !o.Keep {
		defer os.RemoveAll(work)
	}
	ct := &cofferTool{coffer: o.Coffer, cofferd: o.Cofferd, dir: filepath.Join(work, "coffer"), profileDir: o.ProfileDir}
	if o.ProfileDir != "" {
		if err := os.MkdirAll(o.ProfileDir, 0o755); err != nil {
			return fmt.Errorf("bench: %w", err)
		}
	}
	tools := []tool{ct}
	for _, p := range o.Peers {
		bin, err := findPeer(p)
		if err != nil {
			r.Notes = append(r.Notes, err.Error())
			continue
		}
		dir := filepath.Join(work, p)
		switch p {
		case "restic":
			tools = append(tools, &resticTool{bin: bin, dir: dir})
		case "borg":
			tools = append(tools, &borgTool{bin: bin, dir: dir})
		default:
			return fmt.Errorf("bench: unknown peer %q (want restic or borg)", p)
		}
	}
	for _, t := range tools {
		if err := os.MkdirAll(filepath.Join(work, t.Name()), 0o755); err != nil {
			return fmt.Errorf("bench: %w", err)
		}
		o.Logf("bench: setting up %s", t.Name())
		if err := t.setup(ctx); err != nil {
			for _, t := range tools {
				t.close()
			}
			return fmt.Errorf("bench: %s setup: %w", t.Name(), err)
		}
	}
	defer func() {
		for _, t := range tools {
			t.close()
		}
	}()

	src := filepath.Join(o.DataDir, "work", "go")
	steps := []struct {
		name string
		ds   int
	}{{ScInitial, 0}, {ScUnchanged, 0}}
	for i := 1; i < len(r.Datasets); i++ {
		name := ScIncremental
		if i > 1 {
			name = fmt.Sprintf("%s %d", ScIncremental, i)
		}
		steps = append(steps, struct {
			name string
			ds   int
		}{name, i})
	}
	last := steps[len(steps)-1].ds
	placed := -1
	defer func() { _ = recoverCur(o.DataDir) }()
	for _, st := range steps {
		if st.ds != placed {
			if err := placeCur(o.DataDir, r.Datasets[st.ds], src); err != nil {
				return err
			}
			placed = st.ds
		}
		ds := r.Datasets[st.ds]
		for _, t := range tools {
			o.Logf("bench: %s: %s of %s", t.Name(), st.name, ds.Name)
			sc, err := measure(ctx, t, st.name, ds.Name, ds.Bytes, func() (procResult, backupOut, error) {
				b, err := t.backup(ctx, src)
				return b.proc, b, err
			})
			if err != nil {
				return err
			}
			r.Scenarios = append(r.Scenarios, sc)
		}
	}
	ds := r.Datasets[last]
	rel, size, err := largestFile(src)
	if err != nil {
		return err
	}
	for _, t := range tools {
		target := filepath.Join(work, "restore-"+t.Name())
		o.Logf("bench: %s: %s", t.Name(), ScRestore)
		if o.DropCaches {
			if err := dropCaches(); err != nil {
				return err
			}
		}
		sc, err := measure(ctx, t, ScRestore, ds.Name, ds.Bytes, func() (procResult, backupOut, error) {
			p, err := t.restore(ctx, target)
			return p, backupOut{}, err
		})
		if err != nil {
			return err
		}
		files, bytes := treeBytes(target)
		if files != ds.Files || bytes != ds.Bytes {
			return fmt.Errorf("bench: %s restore wrote %d files, %d bytes; the source has %d files, %d bytes", t.Name(), files, bytes, ds.Files, ds.Bytes)
		}
		// NB: the restored tree stays until the run ends (with the work directory).
		// Deleting it here made the next tool's restore pay for it: on this ext4 (mounted
		// with discard), creating files right after removing a large tree was several times
		// slower (docs/benchmarks.md, 2026-12-03).
		r.Scenarios = append(r.Scenarios, sc)

		o.Logf("bench: %s: %s (%s, %d bytes)", t.Name(), ScRestoreFile, rel, size)
		var cw countWriter
		sc, err = measure(ctx, t, ScRestoreFile, ds.Name, size, func() (procResult, backupOut, error) {
			p, err := t.restoreFile(ctx, src, rel, &cw)
			return p, backupOut{}, err
		})
		if err != nil {
			return err
		}
		if cw.n != size {
			return fmt.Errorf("bench: %s single-file restore of %s gave %d bytes, want %d", t.Name(), rel, cw.n, size)
		}
		r.Scenarios = append(r.Scenarios, sc)
	}
	if o.Quick {
		return nil
	}
	// Large files: a raw ext4 image of the first release (one file, so every chunk is
	// full-size), which shows the pipeline's throughput without the per-file costs.
	if err := recoverCur(o.DataDir); err != nil {
		return err
	}
	img, err := ext4Image(ctx, o.DataDir, r.Datasets[0], o.Logf)
	if err != nil {
		r.Notes = append(r.Notes, "image scenario skipped: "+err.Error())
		return nil
	}
	st, err := os.Stat(img)
	if err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	// Fresh repositories (a new vault for Coffer): the image holds the same file data
	// as the trees backed up above, and dedup against them would hide the pipeline.
	fresh := make([]tool, 0, len(tools))
	for _, t := range tools {
		switch t := t.(type) {
		case *cofferTool:
			if err := t.useVault(ctx, "image"); err != nil {
				return fmt.Errorf("bench: coffer image vault: %w", err)
			}
			fresh = append(fresh, t)
		case *resticTool:
			nt := &resticTool{bin: t.bin, dir: filepath.Join(work, "restic-image")}
			fresh = append(fresh, nt)
		case *borgTool:
			nt := &borgTool{bin: t.bin, dir: filepath.Join(work, "borg-image")}
			fresh = append(fresh, nt)
		}
	}
	for _, t := range fresh[1:] {
		if err := os.MkdirAll(filepath.Join(work, t.Name()+"-image"), 0o755); err != nil {
			return fmt.Errorf("bench: %w", err)
		}
		if err := t.setup(ctx); err != nil {
			return fmt.Errorf("bench: %s setup: %w", t.Name(), err)
		}
	}
	for _, t := range fresh {
		o.Logf("bench: %s: %s (%s)", t.Name(), ScImage, filepath.Base(img))
		sc, err := measure(ctx, t, ScImage, r.Datasets[0].Name+".ext4", st.Size(), func() (procResult, backupOut, error) {
			b, err := t.backup(ctx, filepath.Dir(img))
			return b.proc, b, err
		})
		if err != nil {
			return err
		}
		r.Scenarios = append(r.Scenarios, sc)
	}
	return nil
}

// ext4Image returns dataDir/img-NAME/NAME.ext4, a raw ext4 file system image holding
// the dataset's tree (mke2fs -d), creating it when not cached.
func ext4Image(ctx context.Context, dataDir string, ds Dataset, logf func(string, ...any)) (string, error) {
	dir := filepath.Join(dataDir, "img-"+ds.Name)
	img := filepath.Join(dir, ds.Name+".ext4")
	if _, err := os.Stat(img); err == nil {
		return img, nil
	}
	mke2fs, err := exec.LookPath("mke2fs")
	if err != nil {
		return "", fmt.Errorf("mke2fs not found (apt-get install -y e2fsprogs)")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	sizeKiB := (ds.Bytes*13/10)>>10 + 64<<10
	logf("bench: building %s with mke2fs -d", img)
	if _, err := runProc(ctx, dir, nil, nil, mke2fs, "-q", "-F", "-t", "ext4", "-d", ds.Dir, img+".part", fmt.Sprintf("%dk", sizeKiB)); err != nil {
		os.Remove(img + ".part")
		return "", err
	}
	return img, os.Rename(img+".part", img)
}

// measure runs one scenario of t and fills its figures.
func measure(ctx context.Context, t tool, name, dsName string, bytes int64, fn func() (procResult, backupOut, error)) (Scenario, error) {
	if ct, ok := t.(*cofferTool); ok {
		ct.profile = "coffer-" + strings.ReplaceAll(name, " ", "-") + ".pprof"
		if strings.HasPrefix(name, ScIncremental) || name == ScInitial {
			ct.profile = "coffer-" + strings.ReplaceAll(name, " ", "-") + "-" + dsName + ".pprof"
		}
	}
	pid := t.serverPID()
	before := t.stored()
	c0 := procCPU(pid)
	rss := sampleRSS(pid)
	p, b, err := fn()
	srvRSS := rss.done()
	if err != nil {
		return Scenario{}, fmt.Errorf("bench: %s %s: %w", t.Name(), name, err)
	}
	cpu := p.CPU
	if pid != 0 {
		cpu += procCPU(pid) - c0
	}
	after := t.stored()
	if b.added < 0 {
		b.added = after - before
	}
	sc := Scenario{
		Tool: t.Name(), Name: name, Dataset: dsName, Bytes: bytes,
		Seconds: p.Wall.Seconds(), MBps: float64(bytes) / p.Wall.Seconds() / 1e6,
		CPUSec: cpu.Seconds(), AgentCPU: p.CPU.Seconds(), CPUPerGB: cpu.Seconds() / (float64(bytes) / (1 << 30)),
		AgentRSS: float64(p.MaxRSSKiB) / 1024, ServerRS: float64(srvRSS) / 1024,
		Added: b.added, Stored: after, StoredD: after - before, Chunks: b.chunks,
		ChunksPS: float64(b.chunks) / p.Wall.Seconds(),
	}
	if strings.Contains(name, "backup") {
		sc.Dedup = float64(bytes) / float64(max(b.added, 1))
	}
	return sc, nil
}

type countWriter struct{ n int64 }

func (w *countWriter) Write(p []byte) (int, error) { w.n += int64(len(p)); return len(p), nil }

var _ io.Writer = (*countWriter)(nil)

// largestFile returns the biggest regular file below dir (path relative to dir).
func largestFile(dir string) (string, int64, error) {
	var best string
	var size int64 = -1
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		info, err := d.Info()
		if err == nil && info.Size() > size {
			best, size = p, info.Size()
		}
		return err
	})
	if err != nil || best == "" {
		return "", 0, fmt.Errorf("bench: largest file of %s: %v", dir, err)
	}
	rel, err := filepath.Rel(dir, best)
	return rel, size, err
}

// placeCur moves dataset ds's tree to src (renames, so inodes and times stay and every
// tool backs up the same path for every release), recording where it came from.
func placeCur(dataDir string, ds Dataset, src string) error {
	if err := recoverCur(dataDir); err != nil {
		return err
	}
	if err := os.WriteFile(src+".from", []byte(ds.Dir), 0o644); err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	if err := os.Rename(ds.Dir, src); err != nil {
		return fmt.Errorf("bench: place dataset: %w", err)
	}
	return nil
}

// recoverCur moves a placed dataset back to its cache directory.
func recoverCur(dataDir string) error {
	src := filepath.Join(dataDir, "work", "go")
	from, err := os.ReadFile(src + ".from")
	if os.IsNotExist(err) {
		return os.MkdirAll(filepath.Join(dataDir, "work"), 0o755)
	}
	if err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	if _, err := os.Stat(src); err == nil {
		if err := os.Rename(src, string(from)); err != nil {
			return fmt.Errorf("bench: put dataset back: %w", err)
		}
	}
	return os.Remove(src + ".from")
}

// Machine describes the host of a run.
type Machine struct {
	Cores     int      `json:"cores"`
	CPU       string   `json:"cpu"`
	Flags     []string `json:"flags"` // the flags that matter to the data path
	GoVersion string   `json:"go"`
	MemGiB    float64  `json:"mem_gib"`
}

func probeMachine() Machine {
	m := Machine{Cores: runtime.NumCPU(), GoVersion: runtime.Version()}
	b, _ := os.ReadFile("/proc/cpuinfo")
	want := []string{"sse4_2", "avx", "avx2", "avx512f", "avx512bw", "aes", "vaes", "vpclmulqdq", "pclmulqdq", "sha_ni", "gfni", "bmi2"}
	for _, l := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(l, ":")
		if !ok {
			continue
		}
		switch strings.TrimSpace(k) {
		case "model name":
			if m.CPU == "" {
				m.CPU = strings.TrimSpace(v)
			}
		case "flags":
			if m.Flags == nil {
				have := map[string]bool{}
				for _, f := range strings.Fields(v) {
					have[f] = true
				}
				m.Flags = []string{}
				for _, f := range want {
					if have[f] {
						m.Flags = append(m.Flags, f)
					} else {
						m.Flags = append(m.Flags, "no-"+f)
					}
				}
			}
		}
	}
	if mi, err := os.ReadFile("/proc/meminfo"); err == nil {
		var kb int64
		fmt.Sscanf(strings.TrimPrefix(strings.SplitN(string(mi), "\n", 2)[0], "MemTotal:"), "%d", &kb)
		m.MemGiB = float64(kb) / (1 << 20)
	}
	return m
}

// FindCofferd returns the cofferd binary next to exe, else on PATH, else "".
func FindCofferd(exe string) string {
	if exe != "" {
		p := filepath.Join(filepath.Dir(exe), "cofferd")
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			return p
		}
	}
	p, err := exec.LookPath("cofferd")
	if err != nil {
		return ""
	}
	return p
}
