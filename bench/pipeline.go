package bench

import (
	"context"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"syscall"
	"time"

	"github.com/cofferhq/coffer/chunkstore/memstore"
	"github.com/cofferhq/coffer/client"
	"github.com/cofferhq/coffer/client/crypt"
	"github.com/cofferhq/coffer/meta/memmeta"
	"github.com/cofferhq/coffer/placement"
)

// PipelineRun is one in-process run of the agent's backup pipeline: client.Agent.Backup
// (walk, read, FastCDC chunking, chunk IDs, compression and AES-GCM sealing, upload
// batching, trees, reference lists and the commit) into an in-memory chunk store
// (memstore.Chunks) and an in-memory meta service (meta/memmeta) that makes the leader's commit check.
// No network, no cluster: it measures the client alone, on every core of this process.
type PipelineRun struct {
	Name  string `json:"name"`  // what was backed up: "tree go1.26.0", "one file …"
	Files int64  `json:"files"` // regular files in the snapshot
	// Bytes is the snapshot's BytesProcessed: the file content the backup covered.
	Bytes     int64   `json:"bytes"`
	BytesRead int64   `json:"bytes_read"`
	Seconds   float64 `json:"seconds"` // wall time of Backup alone (the vault is opened before)
	MBps      float64 `json:"mbps"`    // Bytes per second, 1 MB = 1e6 bytes
	// CPUSec is this process's user + system CPU during Backup; CPUPerGiB divides it by
	// Bytes in GiB.
	CPUSec    float64 `json:"cpu_s"`
	CPUPerGiB float64 `json:"cpu_s_per_gib"`
	// MBPerCPUSec is Bytes per CPU-second: the throughput the pipeline would have on one
	// core it had to itself. On a shared machine it moves less than MBps.
	MBPerCPUSec float64 `json:"mb_per_cpu_s"`
	Chunks      int64   `json:"chunks_added"`
	Added       int64   `json:"bytes_added"` // sealed bytes stored
	// Efficiency is MBps over the slowest backup-path stage's all-cores figure, and
	// CPUEfficiency MBPerCPUSec over its one-core figure (filled by the report's summary).
	Efficiency    float64 `json:"efficiency,omitempty"`
	CPUEfficiency float64 `json:"cpu_efficiency,omitempty"`
	Note          string  `json:"note,omitempty"`
}

// ClientPipeline backs up path (a directory or one file) with a fresh vault, chunk store
// and meta service, all in this process, and measures the Backup call. With profile
// set, a CPU profile of the Backup call is written there. It fails if the backup does
// not complete (a skipped file makes it "partially failed").
func ClientPipeline(ctx context.Context, name, path, profile string) (PipelineRun, error) {
	store := memstore.NewChunks()
	// A one-PG map: the agent does not place chunks itself; the store takes them whole.
	m := placement.Map{Epoch: 1, PGCount: 1, Profile: placement.DefaultProfile}
	mm, err := memmeta.New(memmeta.Config{Chunks: store, Now: time.Now, Map: &m})
	if err != nil {
		return PipelineRun{}, fmt.Errorf("bench: pipeline: %w", err)
	}
	cfg := client.Config{
		Meta:   mm,
		Chunks: store,
		Host:   "bench",
		Now:    time.Now,
		// The passphrase hashing is outside the measured call; keep the set-up short.
		Argon2: crypt.TestArgon2Params(),
	}
	pass := []byte("bench")
	if _, err := client.InitVault(ctx, cfg, "bench", pass); err != nil {
		return PipelineRun{}, fmt.Errorf("bench: pipeline: %w", err)
	}
	agent, err := client.Open(ctx, cfg, "bench", pass)
	if err != nil {
		return PipelineRun{}, fmt.Errorf("bench: pipeline: %w", err)
	}
	defer agent.Close()

	note := ""
	if profile != "" {
		f, err := os.Create(profile)
		if err != nil {
			return PipelineRun{}, fmt.Errorf("bench: pipeline profile: %w", err)
		}
		defer f.Close()
		// NB: only one CPU profile runs per process: with COFFER_CPUPROFILE set, the
		// process's own profile covers this run and this one is not written.
		if err := pprof.StartCPUProfile(f); err != nil {
			note = fmt.Sprintf("no profile %s: %v", profile, err)
			f.Close()
			os.Remove(profile)
		} else {
			defer pprof.StopCPUProfile()
		}
	}
	runtime.GC()
	cpu0 := selfCPU()
	t0 := time.Now()
	res, err := agent.Backup(ctx, client.BackupOptions{Paths: []string{path}})
	wall := time.Since(t0)
	cpu := selfCPU() - cpu0
	if err != nil {
		return PipelineRun{}, fmt.Errorf("bench: pipeline %s: %w", name, err)
	}
	st := res.Snapshot.Stats
	if st.Status != client.StatusCompleted {
		return PipelineRun{}, fmt.Errorf("bench: pipeline %s: backup %s (%d paths skipped, first: %v)", name, st.Status, len(res.Skipped), res.Skipped)
	}
	return PipelineRun{
		Name: name, Files: st.FilesNew + st.FilesChanged + st.FilesUnmodified,
		Bytes: st.BytesProcessed, BytesRead: res.BytesRead,
		Seconds: wall.Seconds(), MBps: float64(st.BytesProcessed) / wall.Seconds() / 1e6,
		CPUSec: cpu.Seconds(), CPUPerGiB: cpu.Seconds() / (float64(max(st.BytesProcessed, 1)) / (1 << 30)),
		MBPerCPUSec: float64(st.BytesProcessed) / max(cpu.Seconds(), 1e-9) / 1e6,
		Chunks:      st.ChunksAdded, Added: st.BytesAdded, Note: note,
	}, nil
}

// selfCPU is this process's user + system CPU time so far.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// concatFile returns dataDir/cat-NAME/NAME.cat, every regular file of the dataset's tree
// concatenated in walk order (one large file, so every chunk is full-size and no
// per-file cost shows), creating it when not cached.
func concatFile(dataDir string, ds Dataset) (string, error) {
	dir := filepath.Join(dataDir, "cat-"+ds.Name)
	out := filepath.Join(dir, ds.Name+".cat")
	if st, err := os.Stat(out); err == nil && st.Size() == ds.Bytes {
		return out, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("bench: %w", err)
	}
	f, err := os.Create(out + ".part")
	if err != nil {
		return "", fmt.Errorf("bench: %w", err)
	}
	werr := filepath.WalkDir(ds.Dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		src, err := os.Open(p)
		if err != nil {
			return err
		}
		defer src.Close()
		_, err = io.Copy(f, src)
		return err
	})
	if err := f.Close(); werr == nil {
		werr = err
	}
	if werr != nil {
		os.Remove(out + ".part")
		return "", fmt.Errorf("bench: concatenate %s: %w", ds.Dir, werr)
	}
	if err := os.Rename(out+".part", out); err != nil {
		return "", fmt.Errorf("bench: %w", err)
	}
	return out, nil
}

// runPipelines measures the client pipeline on the first dataset's tree and on its
// concatenation, and appends the runs to r.
func runPipelines(ctx context.Context, o Options, r *Report) error {
	ds := r.Datasets[0]
	cat, err := concatFile(o.DataDir, ds)
	if err != nil {
		return err
	}
	for _, c := range []struct{ name, path, prof string }{
		{"tree " + ds.Name, ds.Dir, "client-pipeline-tree.pprof"},
		{"one file " + ds.Name + ".cat", cat, "client-pipeline-file.pprof"},
	} {
		prof := ""
		if o.ProfileDir != "" {
			if err := os.MkdirAll(o.ProfileDir, 0o755); err != nil {
				return fmt.Errorf("bench: %w", err)
			}
			prof = filepath.Join(o.ProfileDir, c.prof)
		}
		o.Logf("bench: client pipeline in process: %s", c.name)
		run, err := ClientPipeline(ctx, c.name, c.path, prof)
		if err != nil {
			return err
		}
		r.Pipelines = append(r.Pipelines, run)
		if run.Note != "" {
			r.Notes = append(r.Notes, "client pipeline "+run.Name+": "+run.Note)
		}
	}
	return nil
}
