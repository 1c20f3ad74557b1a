package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// backupOut is what a tool reports about one backup.
type backupOut struct {
	proc      procResult
	processed int64 // bytes read from the source
	added     int64 // bytes the tool says it added to the repository (after dedup, compression); -1: use the repository's growth
	chunks    int64 // new chunks (blobs) stored; 0 when the tool does not say
}

// tool is one backup program under test, with a repository under its own directory.
type tool interface {
	Name() string
	// setup creates the repository (and, for Coffer, starts the cluster).
	setup(ctx context.Context) error
	backup(ctx context.Context, src string) (backupOut, error)
	// restore restores the latest snapshot below target.
	restore(ctx context.Context, target string) (procResult, error)
	// restoreFile writes one file of the latest snapshot (rel is relative to the
	// backed-up directory) to w.
	restoreFile(ctx context.Context, src, rel string, w io.Writer) (procResult, error)
	// stored is the repository's disk usage.
	stored() int64
	// serverPID is a long-running server process whose CPU counts too (0: none).
	serverPID() int
	close() error
}

// benchPassphrase encrypts the throwaway benchmark repositories.
const benchPassphrase = "coffer-bench-passphrase-not-secret"

// --- Coffer ---

type cofferTool struct {
	coffer, cofferd string
	dir             string // cluster dir
	log             string
	cmd             *exec.Cmd
	exited          chan error
	env             []string
	// profileDir, when set, receives CPU profiles: cofferd.pprof for the cluster's
	// whole run and coffer-<scenario>.pprof per agent invocation (profile is the
	// current one).
	profileDir, profile string
	vault               string // "" = the config's default vault
	// pin and clusterPin, when set, are taskset CPU lists for the agent's processes
	// and for the cluster (host-budget mode); extra are added to every backup.
	pin, clusterPin string
	backupArgs      []string
}

// args prefixes a coffer command line with --vault when the tool uses its own vault.
func (c *cofferTool) args(a ...string) []string {
	if c.vault == "" {
		return a
	}
	return append([]string{"--vault", c.vault}, a...)
}

// useVault switches this tool to a new vault in the same cluster (chunk IDs are keyed
// per vault, so nothing dedups against the earlier scenarios) and creates it.
func (c *cofferTool) useVault(ctx context.Context, name string) error {
	c.vault = name
	_, err := c.run(ctx, c.env, nil, c.args("init")...)
	return err
}

// run runs one coffer command in the tool's directory, on the pinned CPUs if any.
func (c *cofferTool) run(ctx context.Context, env []string, out io.Writer, args ...string) (procResult, error) {
	name, a := pinned(c.pin, c.coffer, args)
	return runProc(ctx, c.dir, env, out, name, a...)
}

// pinned returns the command line that runs bin with args on the CPUs of list (taskset
// -c, which execs bin: the child's PID, rusage and RSS are bin's own), or unchanged when
// list is empty.
func pinned(list, bin string, args []string) (string, []string) {
	if list == "" {
		return bin, args
	}
	return "taskset", append([]string{"-c", list, bin}, args...)
}

// agentEnv is the environment of one coffer invocation.
func (c *cofferTool) agentEnv() []string {
	if c.profileDir == "" || c.profile == "" {
		return c.env
	}
	return append(append([]string(nil), c.env...), "COFFER_CPUPROFILE="+filepath.Join(c.profileDir, c.profile))
}

func (c *cofferTool) Name() string { return "coffer" }

func (c *cofferTool) setup(ctx context.Context) error {
	cluster := filepath.Join(c.dir, "cluster")
	c.log = filepath.Join(c.dir, "cofferd.log")
	lf, err := os.Create(c.log)
	if err != nil {
		return err
	}
	name, args := pinned(c.clusterPin, c.cofferd, []string{"dev", "--dir", cluster})
	c.cmd = exec.Command(name, args...)
	c.cmd.Stdout, c.cmd.Stderr = lf, lf
	if c.profileDir != "" {
		c.cmd.Env = append(os.Environ(), "COFFER_CPUPROFILE="+filepath.Join(c.profileDir, "cofferd.pprof"))
	}
	if err := c.cmd.Start(); err != nil {
		lf.Close()
		return fmt.Errorf("bench: start cofferd: %w", err)
	}
	c.exited = make(chan error, 1)
	go func() { c.exited <- c.cmd.Wait(); lf.Close() }()
	deadline := time.Now().Add(90 * time.Second)
	for {
		b, _ := os.ReadFile(c.log)
		if bytes.Contains(b, []byte("dev cluster ready")) {
			break
		}
		select {
		case err := <-c.exited:
			c.exited <- err
			return fmt.Errorf("bench: cofferd dev exited (%v): %s", err, b)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("bench: cofferd dev not ready after 90 s: %s", b)
		}
	}
	// NB: the agent's local cache (trees and key) is the run's own, as restic's is: the
	// user's cache directory is shared by concurrent runs, whose clusters' vaults all have
	// the same name, so an entry one run writes makes another run's stale.
	c.env = []string{"COFFER_CONFIG=" + filepath.Join(cluster, "coffer.yaml"), "COFFER_PASSPHRASE=" + benchPassphrase,
		"COFFER_CACHE_DIR=" + filepath.Join(c.dir, "agent-cache")}
	_, err = c.run(ctx, c.agentEnv(), nil, c.args("init")...)
	return err
}

func (c *cofferTool) backup(ctx context.Context, src string) (backupOut, error) {
	p, err := c.run(ctx, c.agentEnv(), nil, c.args(append(append([]string{"--json", "backup"}, c.backupArgs...), src)...)...)
	if err != nil {
		return backupOut{proc: p}, err
	}
	var s struct {
		BytesProcessed int64 `json:"bytes_processed"`
		BytesAdded     int64 `json:"bytes_added"`
		ChunksAdded    int64 `json:"chunks_added"`
	}
	if err := json.Unmarshal(lastJSONLine(p.Stdout), &s); err != nil {
		return backupOut{proc: p}, fmt.Errorf("bench: coffer backup output: %w", err)
	}
	return backupOut{proc: p, processed: s.BytesProcessed, added: s.BytesAdded, chunks: s.ChunksAdded}, nil
}

func (c *cofferTool) restore(ctx context.Context, target string) (procResult, error) {
	return c.run(ctx, c.agentEnv(), nil, c.args("--json", "restore", "latest", "--target", target)...)
}

func (c *cofferTool) restoreFile(ctx context.Context, src, rel string, w io.Writer) (procResult, error) {
	return c.run(ctx, c.agentEnv(), w, c.args("dump", "latest", "/"+filepath.Base(src)+"/"+rel)...)
}

func (c *cofferTool) stored() int64 {
	ms, _ := filepath.Glob(filepath.Join(c.dir, "cluster", "nodes", "chunk-*"))
	var n int64
	for _, m := range ms {
		n += dirBytes(m)
	}
	return n
}

func (c *cofferTool) serverPID() int {
	if c.cmd == nil || c.cmd.Process == nil {
		return 0
	}
	return c.cmd.Process.Pid
}

func (c *cofferTool) close() error {
	if c.cmd == nil || c.cmd.Process == nil {
		return nil
	}
	_ = c.cmd.Process.Signal(os.Interrupt)
	select {
	case <-c.exited:
	case <-time.After(30 * time.Second):
		_ = c.cmd.Process.Kill()
		<-c.exited
	}
	return nil
}

// --- restic ---

type resticTool struct {
	bin, dir string
	env      []string
	name     string // "" = "restic"
	pin      string // taskset CPU list (host-budget mode)
}

func (r *resticTool) Name() string {
	if r.name != "" {
		return r.name
	}
	return "restic"
}

func (r *resticTool) run(ctx context.Context, dir string, out io.Writer, args ...string) (procResult, error) {
	name, a := pinned(r.pin, r.bin, args)
	return runProc(ctx, dir, r.env, out, name, a...)
}

func (r *resticTool) setup(ctx context.Context) error {
	r.env = []string{"RESTIC_REPOSITORY=" + filepath.Join(r.dir, "repo"), "RESTIC_PASSWORD=" + benchPassphrase,
		"RESTIC_CACHE_DIR=" + filepath.Join(r.dir, "cache")}
	_, err := r.run(ctx, r.dir, nil, "init")
	return err
}

func (r *resticTool) backup(ctx context.Context, src string) (backupOut, error) {
	p, err := r.run(ctx, r.dir, nil, "backup", "--json", src)
	if err != nil {
		return backupOut{proc: p}, err
	}
	var s struct {
		DataAdded      int64 `json:"data_added"`
		BytesProcessed int64 `json:"total_bytes_processed"`
		DataBlobs      int64 `json:"data_blobs"`
		TreeBlobs      int64 `json:"tree_blobs"`
	}
	if err := json.Unmarshal(lastJSONLine(p.Stdout), &s); err != nil {
		return backupOut{proc: p}, fmt.Errorf("bench: restic backup output: %w", err)
	}
	// NB: restic's data_added counts blobs before compression; added is filled from the
	// repository's growth instead (measure does so when added is -1).
	return backupOut{proc: p, processed: s.BytesProcessed, added: -1, chunks: s.DataBlobs + s.TreeBlobs}, nil
}

func (r *resticTool) restore(ctx context.Context, target string) (procResult, error) {
	return r.run(ctx, r.dir, nil, "restore", "latest", "--target", target)
}

func (r *resticTool) restoreFile(ctx context.Context, src, rel string, w io.Writer) (procResult, error) {
	return r.run(ctx, r.dir, w, "dump", "latest", filepath.Join(src, rel))
}

func (r *resticTool) stored() int64  { return dirBytes(filepath.Join(r.dir, "repo")) }
func (r *resticTool) serverPID() int { return 0 }
func (r *resticTool) close() error   { return nil }

// --- borg ---

type borgTool struct {
	bin, dir string
	env      []string
	n        int
	pin      string // taskset CPU list (host-budget mode)
}

func (b *borgTool) run(ctx context.Context, dir string, out io.Writer, args ...string) (procResult, error) {
	name, a := pinned(b.pin, b.bin, args)
	return runProc(ctx, dir, b.env, out, name, a...)
}

func (b *borgTool) Name() string { return "borg" }

func (b *borgTool) repo() string { return filepath.Join(b.dir, "repo") }

func (b *borgTool) setup(ctx context.Context) error {
	b.env = []string{"BORG_PASSPHRASE=" + benchPassphrase, "BORG_BASE_DIR=" + filepath.Join(b.dir, "base"),
		"BORG_RELOCATED_REPO_ACCESS_IS_OK=yes"}
	_, err := b.run(ctx, b.dir, nil, "init", "--encryption=repokey-blake2", b.repo())
	return err
}

func (b *borgTool) backup(ctx context.Context, src string) (backupOut, error) {
	b.n++
	p, err := b.run(ctx, b.dir, nil, "create", "--json", fmt.Sprintf("%s::s%d", b.repo(), b.n), src)
	if err != nil {
		return backupOut{proc: p}, err
	}
	var s struct {
		Archive struct {
			Stats struct {
				Original     int64 `json:"original_size"`
				Deduplicated int64 `json:"deduplicated_size"`
			} `json:"stats"`
		} `json:"archive"`
	}
	if err := json.Unmarshal(p.Stdout, &s); err != nil {
		return backupOut{proc: p}, fmt.Errorf("bench: borg create output: %w", err)
	}
	return backupOut{proc: p, processed: s.Archive.Stats.Original, added: s.Archive.Stats.Deduplicated}, nil
}

func (b *borgTool) restore(ctx context.Context, target string) (procResult, error) {
	if err := os.MkdirAll(target, 0o755); err != nil {
		return procResult{}, err
	}
	return b.run(ctx, target, nil, "extract", fmt.Sprintf("%s::s%d", b.repo(), b.n))
}

func (b *borgTool) restoreFile(ctx context.Context, src, rel string, w io.Writer) (procResult, error) {
	p := strings.TrimPrefix(filepath.Join(src, rel), "/")
	return b.run(ctx, b.dir, w, "extract", "--stdout", fmt.Sprintf("%s::s%d", b.repo(), b.n), p)
}

func (b *borgTool) stored() int64  { return dirBytes(b.repo()) }
func (b *borgTool) serverPID() int { return 0 }
func (b *borgTool) close() error   { return nil }

// lastJSONLine returns the last line of out that looks like a JSON object.
func lastJSONLine(out []byte) []byte {
	var last []byte
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 0, 64<<10), 16<<20)
	for sc.Scan() {
		if l := bytes.TrimSpace(sc.Bytes()); len(l) > 0 && l[0] == '{' {
			last = append(last[:0], l...)
		}
	}
	return last
}

// findPeer locates a peer's binary on PATH, or explains how to install it.
func findPeer(name string) (string, error) {
	p, err := exec.LookPath(name)
	if err == nil {
		return p, nil
	}
	pkg := map[string]string{"restic": "restic", "borg": "borgbackup"}[name]
	return "", errors.New(name + " not found on PATH; install it with: apt-get install -y " + pkg)
}
