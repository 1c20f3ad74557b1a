package chaos

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
)

// Flags (after -args): the seed, the variant, where results go, the image and the
// compose project. `make test-chaos SEED=N` passes them.
var (
	seedFlag    = flag.Int64("chaos.seed", 0, "nemesis and workload seed (0: the current time)")
	modeFlag    = flag.String("chaos.mode", "short", "short (3-5 min, 7 faults) or full (<20 min, ≥30 faults)")
	resultsFlag = flag.String("chaos.results", "", "results directory (default bin/chaos); each run writes SEED-TIME/ under it")
	imageFlag   = flag.String("chaos.image", "coffer:dev", "the image (make image)")
	projectFlag = flag.String("chaos.project", "coffer-chaos", "compose project name")
	subnetFlag  = flag.String("chaos.subnet", "10.214.0", "the /24 prefix of the cluster network")
	agentsFlag  = flag.Int("chaos.agents", 2, "agents backing up concurrently")
	keepFlag    = flag.Bool("chaos.keep", false, "leave the cluster running afterwards")
)

const (
	passphrase     = "chaos-suite-passphrase"
	smallVolumeMiB = 512
	backupTimeout  = 4 * time.Minute
	healthyWithin  = 5 * time.Minute // all PGs healthy this long after the last fault healed
	recoverWithin  = 2 * time.Minute // a healed node is seen up again within this
	vault          = "default"
)

type variant struct {
	pairRounds int
	exclusive  []Kind
	minFaults  int
	calm       time.Duration // backups after the last fault, before the checks
}

func variantFor(mode string) (variant, error) {
	switch mode {
	case "short":
		return variant{pairRounds: 4, exclusive: []Kind{PartitionChunks}, minFaults: 8, calm: 10 * time.Second}, nil
	case "full":
		return variant{pairRounds: 15, exclusive: []Kind{PartitionChunks, FullRestart}, minFaults: 30, calm: 20 * time.Second}, nil
	}
	return variant{}, fmt.Errorf("chaos: unknown mode %q (short or full)", mode)
}

// run is one chaos run: the cluster, the clock, the logs and what was recorded.
type run struct {
	t        *testing.T
	root     string // repository root
	dir      string // results
	seed     int64
	project  string
	subnet   string
	image    string
	net      string
	cluster  string // the bootstrap directory (COFFER_CLUSTER_DIR)
	small    string // chunk-7's tmpfs
	t0       time.Time
	env      []string
	ids      map[string]string // service -> container ID
	nemLog   *os.File
	mu       sync.Mutex
	windows  []Window
	attempts []*attempt
	lists    []Op
	loadMax  float64
}

// attempt is one backup as the workload ran it.
type attempt struct {
	Agent      string            `json:"agent"`
	Seq        int               `json:"seq"`
	Start      time.Duration     `json:"start_ns"`
	End        time.Duration     `json:"end_ns"`
	Exit       int               `json:"exit"`
	SnapshotID string            `json:"snapshot_id,omitempty"`
	Error      string            `json:"error,omitempty"`
	Clear      bool              `json:"clear_message"`
	Manifest   map[string]string `json:"-"`
	Files      int               `json:"files"`
	Exposure   Exposure          `json:"exposure"`
	StartWall  time.Time         `json:"start"`
	EndWall    time.Time         `json:"end"`
}

func (r *run) now() time.Duration { return time.Since(r.t0) }

func (r *run) logf(format string, args ...any) {
	line := fmt.Sprintf("%s +%7.1fs %s", time.Now().UTC().Format("2006-01-02T15:04:05.000Z"), r.now().Seconds(), fmt.Sprintf(format, args...))
	r.mu.Lock()
	defer r.mu.Unlock()
	fmt.Fprintln(r.nemLog, line)
	r.t.Log(line)
}

// cmd runs a command with the run's environment, returning stdout, stderr and the exit code.
func (r *run) cmd(ctx context.Context, name string, args ...string) (string, string, int, error) {
	c := exec.CommandContext(ctx, name, args...)
	c.Env = r.env
	c.Dir = r.root
	var out, errb bytes.Buffer
	c.Stdout, c.Stderr = &out, &errb
	err := c.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
		err = nil
	}
	return out.String(), errb.String(), code, err
}

func (r *run) docker(ctx context.Context, args ...string) error {
	_, stderr, code, err := r.cmd(ctx, "docker", args...)
	if err != nil {
		return fmt.Errorf("docker %s: %w", strings.Join(args, " "), err)
	}
	if code != 0 {
		return fmt.Errorf("docker %s: exit %d: %s", strings.Join(args, " "), code, strings.TrimSpace(stderr))
	}
	return nil
}

func (r *run) addr(svc string) string {
	n, _ := strconv.Atoi(svc[strings.LastIndex(svc, "-")+1:])
	switch {
	case strings.HasPrefix(svc, "meta-"):
		return fmt.Sprintf("%s.%d", r.subnet, 10+n)
	case strings.HasPrefix(svc, "chunk-"):
		return fmt.Sprintf("%s.%d", r.subnet, 20+n)
	}
	return ""
}

// admin runs `coffer ARGS` as the cluster's admin (the compose file's admin tool container,
// run with docker directly: compose v1 takes seconds to start).
func (r *run) admin(ctx context.Context, args ...string) (string, string, int, error) {
	base := []string{"run", "--rm", "--network", r.net, "--user", fmt.Sprintf("%d:%d", os.Getuid(), os.Getgid()),
		"-v", r.cluster + "/admin:/admin", "-e", "COFFER_CONFIG=/admin/coffer.yaml", "-e", "HOME=/admin", "-w", "/admin",
		"--entrypoint", "/usr/local/bin/coffer", r.image}
	return r.cmd(ctx, "docker", append(base, args...)...)
}

type adminStatus struct {
	Raft struct {
		Leader  string `json:"leader"`
		Servers []struct {
			ID        string `json:"id"`
			Reachable bool   `json:"reachable"`
		} `json:"servers"`
	} `json:"raft"`
	Nodes []struct {
		ID    string `json:"id"`
		State string `json:"state"`
	} `json:"nodes"`
}

func (r *run) status(ctx context.Context) (adminStatus, error) {
	var st adminStatus
	ctx, cancel := context.WithTimeout(ctx, 45*time.Second)
	defer cancel()
	out, stderr, code, err := r.admin(ctx, "--json", "admin", "status")
	if err != nil || code != 0 {
		return st, fmt.Errorf("admin status: exit %d %v: %s", code, err, strings.TrimSpace(stderr))
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		return st, fmt.Errorf("admin status: %w", err)
	}
	return st, nil
}

// leader asks for the meta leader until one answers.
func (r *run) leader(ctx context.Context) (string, error) {
	deadline := time.Now().Add(recoverWithin)
	for {
		st, err := r.status(ctx)
		if err == nil && st.Raft.Leader != "" {
			return st.Raft.Leader, nil
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("no meta leader within %v: %v", recoverWithin, err)
		}
		time.Sleep(2 * time.Second)
	}
}

// waitUp polls admin status until every node in svcs is up (and, for meta servers,
// reachable in the Raft configuration).
func (r *run) waitUp(ctx context.Context, svcs []string) error {
	deadline := time.Now().Add(recoverWithin)
	var last string
	for {
		st, err := r.status(ctx)
		if err == nil {
			up := map[string]bool{}
			for _, n := range st.Nodes {
				up[n.ID] = n.State == "up"
			}
			for _, s := range st.Raft.Servers {
				up[s.ID] = up[s.ID] && s.Reachable
			}
			var down []string
			for _, s := range svcs {
				if !up[s] {
					down = append(down, s)
				}
			}
			if len(down) == 0 && st.Raft.Leader != "" {
				return nil
			}
			last = fmt.Sprintf("not up: %v (leader %q)", down, st.Raft.Leader)
		} else {
			last = err.Error()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not recovered within %v: %s", recoverWithin, last)
		}
		time.Sleep(2 * time.Second)
	}
}

// ---- the nemesis ----

type injected struct {
	w    Window
	heal func(context.Context) error
}

func (r *run) inject(ctx context.Context, f Fault) (*injected, error) {
	in := &injected{w: Window{Kind: f.Kind, Chunks: f.Chunks}}
	id := func(svc string) string { return r.ids[svc] }
	kill := func(svcs []string) error {
		for _, s := range svcs {
			// No restart policy while the fault holds: the node comes back when the nemesis says.
			if err := r.docker(ctx, "update", "--restart=no", id(s)); err != nil {
				return err
			}
			if err := r.docker(ctx, "kill", "-s", "KILL", id(s)); err != nil {
				return err
			}
		}
		in.heal = func(ctx context.Context) error {
			for _, s := range svcs {
				if err := r.docker(ctx, "start", id(s)); err != nil {
					return err
				}
				if err := r.docker(ctx, "update", "--restart=unless-stopped", id(s)); err != nil {
					return err
				}
			}
			return nil
		}
		return nil
	}
	pause := func(svc string) error {
		in.heal = func(ctx context.Context) error { return r.docker(ctx, "unpause", id(svc)) }
		return r.docker(ctx, "pause", id(svc))
	}
	disconnect := func(svcs []string) error {
		in.heal = func(ctx context.Context) error {
			for _, s := range svcs {
				if err := r.docker(ctx, "network", "connect", "--ip", r.addr(s), r.net, id(s)); err != nil {
					return err
				}
			}
			return nil
		}
		for _, s := range svcs {
			if err := r.docker(ctx, "network", "disconnect", "-f", r.net, id(s)); err != nil {
				return err
			}
		}
		return nil
	}
	switch f.Kind {
	case KillChunk, TwoChunksDown:
		in.w.Start = r.now()
		return in, kill(f.Chunks)
	case PauseChunk:
		in.w.Start = r.now()
		return in, pause(f.Chunks[0])
	case PartitionChunks:
		in.w.Start = r.now()
		return in, disconnect(f.Chunks)
	case DiskFull:
		in.w.Start = r.now()
		filler := filepath.Join(r.small, "chaos-filler")
		in.heal = func(context.Context) error { return os.Remove(filler) }
		n, err := fill(filler)
		r.logf("         %s: %d MiB written, the volume is full", SmallVolumeNode, n>>20)
		return in, err
	case KillMetaLeader, PauseMeta, PartitionLeader:
		l, err := r.leader(ctx)
		if err != nil {
			return nil, err
		}
		in.w.Meta = []string{l}
		in.w.Start = r.now()
		switch f.Kind {
		case KillMetaLeader:
			return in, kill([]string{l})
		case PauseMeta:
			return in, pause(l)
		default:
			return in, disconnect([]string{l})
		}
	case FullRestart:
		var all []string
		for svc := range r.ids {
			if strings.HasPrefix(svc, "meta-") || strings.HasPrefix(svc, "chunk-") {
				all = append(all, svc)
			}
		}
		sort.Strings(all)
		in.w.Start = r.now()
		for _, s := range all {
			if strings.HasPrefix(s, "meta-") {
				in.w.Meta = append(in.w.Meta, s)
			} else {
				in.w.Chunks = append(in.w.Chunks, s)
			}
		}
		var wg sync.WaitGroup
		errs := make([]error, len(all))
		for i, s := range all {
			wg.Add(1)
			go func() { defer wg.Done(); errs[i] = r.docker(ctx, "stop", "-t", "20", id(s)) }()
		}
		wg.Wait()
		in.heal = func(ctx context.Context) error {
			return r.docker(ctx, append([]string{"start"}, func() []string {
				var c []string
				for _, s := range all {
					c = append(c, id(s))
				}
				return c
			}()...)...)
		}
		return in, errors.Join(errs...)
	}
	return nil, fmt.Errorf("chaos: unknown fault %s", f.Kind)
}

// fill writes zeros into path until the file system is full; it returns the bytes written.
func fill(path string) (int64, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	var n int64
	for {
		m, err := f.Write(buf)
		n += int64(m)
		if errors.Is(err, syscall.ENOSPC) {
			return n, nil
		}
		if err != nil {
			return n, err
		}
	}
}

func (f Fault) describe() string {
	d := fmt.Sprintf("%s hold %v", f.Kind, f.Hold)
	if len(f.Chunks) > 0 {
		d += " " + strings.Join(f.Chunks, ",")
	}
	return d
}

// nemesis runs the plan: each round's faults start together, hold, heal, and the next
// round starts once their nodes are seen up again.
func (r *run) nemesis(ctx context.Context, plan Plan) error {
	rng := rand.New(rand.NewSource(plan.Seed + 1))
	next := 1
	for ri, rd := range plan.Rounds {
		var wg sync.WaitGroup
		errs := make([]error, len(rd.Faults))
		for fi, f := range rd.Faults {
			fid := next
			next++
			wg.Add(1)
			go func() {
				defer wg.Done()
				in, err := r.inject(ctx, f)
				if in == nil {
					errs[fi] = fmt.Errorf("fault %d %s: %w", fid, f.Kind, err)
					r.logf("fault %2d FAILED to start %s: %v", fid, f.describe(), err)
					return
				}
				in.w.ID = fid
				r.logf("fault %2d START %s meta=%v (round %d)", fid, f.describe(), in.w.Meta, ri+1)
				if err != nil {
					r.logf("fault %2d injection error: %v", fid, err)
				}
				select {
				case <-time.After(f.Hold):
				case <-ctx.Done():
				}
				hctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
				defer cancel()
				if err := in.heal(hctx); err != nil {
					errs[fi] = fmt.Errorf("fault %d %s: heal: %w", fid, f.Kind, err)
					r.logf("fault %2d HEAL FAILED: %v", fid, err)
				}
				healed := r.now()
				r.logf("fault %2d HEAL %s", fid, f.Kind)
				svcs := append(append([]string(nil), in.w.Chunks...), in.w.Meta...)
				if err := r.waitUp(hctx, svcs); err != nil {
					r.logf("fault %2d NOT RECOVERED: %v", fid, err)
				}
				in.w.Recovered = r.now()
				r.logf("fault %2d RECOVERED %s after %.1fs (%.1fs after heal)", fid, f.Kind,
					(in.w.Recovered - in.w.Start).Seconds(), (in.w.Recovered - healed).Seconds())
				r.mu.Lock()
				r.windows = append(r.windows, in.w)
				r.mu.Unlock()
			}()
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			return err
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		time.Sleep(time.Duration(2+rng.Intn(4)) * time.Second)
	}
	return nil
}

// ---- the workload ----

// agentTree is an agent's changing tree on the host, mounted read-only at /data in its
// backup containers.
type agentTree struct {
	dir string
	rng *rand.Rand
	seq int
}

func (a *agentTree) writeFile(rel string) error {
	p := filepath.Join(a.dir, rel)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	sizes := []int{0, 100, 4 << 10, 60 << 10, 300 << 10, 700 << 10}
	b := make([]byte, sizes[a.rng.Intn(len(sizes))]+a.rng.Intn(4096))
	a.rng.Read(b)
	tmp := p + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, p)
}

// mutate changes the tree: rewrites, a new file, a removal, now and then a new directory.
func (a *agentTree) mutate() error {
	a.seq++
	files, err := a.manifestFiles()
	if err != nil {
		return err
	}
	if len(files) == 0 {
		for i := 0; i < 20; i++ {
			if err := a.writeFile(fmt.Sprintf("d%d/f%03d", i%4, i)); err != nil {
				return err
			}
		}
		return nil
	}
	for i := 0; i < 1+a.rng.Intn(3); i++ {
		if err := a.writeFile(files[a.rng.Intn(len(files))]); err != nil {
			return err
		}
	}
	if err := a.writeFile(fmt.Sprintf("d%d/n%05d", a.rng.Intn(6), a.seq)); err != nil {
		return err
	}
	if len(files) > 30 {
		if err := os.Remove(filepath.Join(a.dir, files[a.rng.Intn(len(files))])); err != nil {
			return err
		}
	}
	return nil
}

func (a *agentTree) manifestFiles() ([]string, error) {
	var out []string
	err := filepath.WalkDir(a.dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			rel, _ := filepath.Rel(a.dir, p)
			out = append(out, rel)
		}
		return nil
	})
	sort.Strings(out)
	return out, err
}

// manifest maps every file (relative path) to its SHA-256, plus "dir:" entries.
func manifest(dir string) (map[string]string, error) {
	m := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		switch {
		case d.IsDir():
			if rel != "." {
				m["dir:"+rel] = ""
			}
		case d.Type().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			h := sha256.Sum256(b)
			m[rel] = hex.EncodeToString(h[:])
		default:
			m[rel] = "other:" + d.Type().String()
		}
		return nil
	})
	return m, err
}

func (r *run) agentVolume(name string) string { return r.project + "_" + name + "-chaos" }

// agentRun runs `coffer ARGS` as agent name in a one-off container: its volume, its
// host name, its tree at /data, and extra mounts.
func (r *run) agentRun(ctx context.Context, name, cname string, mounts []string, args ...string) (string, string, int, error) {
	base := []string{"run", "--rm", "--name", cname, "--network", r.net, "--hostname", name,
		"-e", "COFFER_CONFIG=/var/lib/coffer/coffer.yaml", "-e", "COFFER_PASSPHRASE=" + passphrase,
		"-v", r.agentVolume(name) + ":/var/lib/coffer",
		"-v", filepath.Join(r.dir, "trees", name) + ":/data:ro"}
	for _, m := range mounts {
		base = append(base, "-v", m)
	}
	base = append(base, "--entrypoint", "/usr/local/bin/coffer", r.image)
	out, errs, code, err := r.cmd(ctx, "docker", append(base, args...)...)
	if ctx.Err() != nil {
		// The docker CLI died with the context; the container may still run.
		kctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		_ = r.docker(kctx, "rm", "-f", cname)
		cancel()
	}
	return out, errs, code, err
}

var clearMessage = regexp.MustCompile(`(?m)^coffer: \S.*`) // immutable: the format of cli.md's errors

// backupLoop backs up agent name's changing tree until stop closes.
func (r *run) backupLoop(ctx context.Context, name string, client int, tree *agentTree, stop <-chan struct{}) {
	for seq := 1; ; seq++ {
		select {
		case <-stop:
			return
		default:
		}
		if err := tree.mutate(); err != nil {
			r.t.Errorf("%s: mutate: %v", name, err)
			return
		}
		m, err := manifest(tree.dir)
		if err != nil {
			r.t.Errorf("%s: manifest: %v", name, err)
			return
		}
		a := &attempt{Agent: name, Seq: seq, Manifest: m, Files: len(m), Start: r.now(), StartWall: time.Now()}
		cname := fmt.Sprintf("%s-%s-b%d", r.project, name, seq)
		// A backup still running at the bound gets SIGQUIT first: the Go runtime prints
		// every goroutine's stack on stderr and exits, and the dump is kept in
		// hung/NAME.txt (where the agent waited). The context is the backstop.
		var quit atomic.Bool
		quitTimer := time.AfterFunc(backupTimeout, func() {
			quit.Store(true)
			qctx, qcancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer qcancel()
			_ = r.docker(qctx, "kill", "-s", "QUIT", cname)
		})
		bctx, cancel := context.WithTimeout(ctx, backupTimeout+time.Minute)
		out, stderr, code, err := r.agentRun(bctx, name, cname, nil, "--json", "-q", "backup", "/data")
		quitTimer.Stop()
		timedOut := bctx.Err() != nil || quit.Load()
		cancel()
		if quit.Load() {
			if err := os.MkdirAll(filepath.Join(r.dir, "hung"), 0o755); err == nil {
				_ = os.WriteFile(filepath.Join(r.dir, "hung", cname+".txt"), []byte(stderr), 0o644)
			}
		}
		a.End, a.EndWall, a.Exit = r.now(), time.Now(), code
		switch {
		case timedOut:
			a.Exit, a.Error = -1, fmt.Sprintf("backup still running after %v: killed (goroutine dump in hung/%s.txt)", backupTimeout, cname)
		case err != nil:
			a.Exit, a.Error = -1, "harness: "+err.Error()
		case code == 125:
			a.Error = "harness: docker run: " + strings.TrimSpace(stderr)
		case code == 0:
			a.SnapshotID = summaryID(out)
			if a.SnapshotID == "" {
				a.Error = "exit 0 without a summary: " + strings.TrimSpace(out+stderr)
			}
		default:
			a.Error = strings.TrimSpace(stderr)
			a.Clear = clearMessage.MatchString(stderr) && !strings.Contains(stderr, "goroutine ") && !strings.Contains(stderr, "panic:")
		}
		r.mu.Lock()
		r.attempts = append(r.attempts, a)
		r.mu.Unlock()
		if a.SnapshotID != "" {
			r.logf("backup %s #%d ok %s in %.1fs", name, seq, short(a.SnapshotID), (a.End - a.Start).Seconds())
		} else {
			r.logf("backup %s #%d FAILED (exit %d) in %.1fs: %s", name, seq, a.Exit, (a.End - a.Start).Seconds(), lastLine(a.Error))
		}
		select {
		case <-stop:
			return
		case <-time.After(time.Duration(500+tree.rng.Intn(1500)) * time.Millisecond):
		}
	}
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndex(s, "\n"); i >= 0 {
		return s[i+1:]
	}
	return s
}

func summaryID(out string) string {
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	id := ""
	for sc.Scan() {
		var s struct {
			Type   string `json:"message_type"`
			ID     string `json:"snapshot_id"`
			Status string `json:"status"`
		}
		if json.Unmarshal(sc.Bytes(), &s) == nil && s.Type == "summary" && s.Status == "completed" {
			id = s.ID
		}
	}
	return id
}

type listedSnapshot struct {
	ID   string    `json:"id"`
	Host string    `json:"host"`
	Time time.Time `json:"time"`
}

// listSnapshots lists the vault as the first agent.
func (r *run) listSnapshots(ctx context.Context, n int) ([]listedSnapshot, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	out, stderr, code, err := r.agentRun(ctx, agentName(1), fmt.Sprintf("%s-list-%d", r.project, n), nil, "--json", "snapshots")
	if err != nil || code != 0 {
		return nil, fmt.Errorf("snapshots: exit %d %v: %s", code, err, lastLine(stderr))
	}
	var l []listedSnapshot
	if err := json.Unmarshal([]byte(out), &l); err != nil {
		return nil, fmt.Errorf("snapshots: %w", err)
	}
	return l, nil
}

// listLoop lists the snapshots every few seconds for the history.
func (r *run) listLoop(ctx context.Context, client int, stop <-chan struct{}) {
	rng := rand.New(rand.NewSource(r.seed + 7))
	for n := 1; ; n++ {
		start := r.now()
		l, err := r.listSnapshots(ctx, n)
		end := r.now()
		if err == nil {
			op := Op{Client: client, Kind: OpList, Start: start, End: end}
			for _, s := range l {
				op.Listed = append(op.Listed, s.ID)
			}
			r.mu.Lock()
			r.lists = append(r.lists, op)
			r.mu.Unlock()
		} else {
			r.logf("list #%d failed: %v", n, err)
		}
		select {
		case <-stop:
			return
		case <-time.After(time.Duration(2000+rng.Intn(3000)) * time.Millisecond):
		}
	}
}

// ---- setup and teardown ----

func (r *run) sh(ctx context.Context, args ...string) error {
	c := exec.CommandContext(ctx, args[0], args[1:]...)
	c.Env, c.Dir = r.env, r.root
	f, err := os.OpenFile(filepath.Join(r.dir, "cluster.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	c.Stdout, c.Stderr = f, f
	if err := c.Run(); err != nil {
		return fmt.Errorf("%s: %w (see %s/cluster.log)", strings.Join(args, " "), err, r.dir)
	}
	return nil
}

func (r *run) containerID(ctx context.Context, svc string) (string, error) {
	out, _, _, err := r.cmd(ctx, "docker", "ps", "-aq", "--filter", "label=com.docker.compose.project="+r.project,
		"--filter", "label=com.docker.compose.service="+svc, "--filter", "label=com.docker.compose.oneoff=False")
	id := strings.TrimSpace(out)
	if err != nil || id == "" || strings.Contains(id, "\n") {
		return "", fmt.Errorf("container of %s: %q %v", svc, id, err)
	}
	return id, nil
}

func (r *run) setup(ctx context.Context, agents int) error {
	if err := os.MkdirAll(r.small, 0o700); err != nil {
		return err
	}
	if err := syscall.Mount("tmpfs", r.small, "tmpfs", 0, fmt.Sprintf("size=%dm,uid=10001,gid=10001,mode=0700", smallVolumeMiB)); err != nil {
		return fmt.Errorf("mount the small volume (the suite runs as root): %w", err)
	}
	start := r.now()
	if err := r.sh(ctx, filepath.Join(r.root, "deploy/cluster.sh"), "up"); err != nil {
		return err
	}
	r.logf("setup: cluster up in %.0fs", (r.now() - start).Seconds())
	for _, svc := range []string{"meta-1", "meta-2", "meta-3", "chunk-1", "chunk-2", "chunk-3", "chunk-4", "chunk-5", "chunk-6", "chunk-7"} {
		id, err := r.containerID(ctx, svc)
		if err != nil {
			return err
		}
		r.ids[svc] = id
	}
	out, _, _, _ := r.cmd(ctx, "docker", "network", "ls", "-q", "--filter", "name="+r.net)
	if strings.TrimSpace(out) == "" {
		return fmt.Errorf("network %s not found", r.net)
	}
	// The agents: enrolled with one-time tokens into their own volumes, as docs/deploy.md's
	// step 7 does for the compose agent.
	metas := strings.Join([]string{r.addr("meta-1") + ":7000", r.addr("meta-2") + ":7000", r.addr("meta-3") + ":7000"}, ",")
	for i := 1; i <= agents; i++ {
		name := agentName(i)
		if err := os.MkdirAll(filepath.Join(r.dir, "trees", name), 0o755); err != nil {
			return err
		}
		tok, stderr, code, err := r.admin(ctx, "--vault", vault, "admin", "enroll-token", "create", "--name", name, "--ttl", "1h")
		if err != nil || code != 0 {
			return fmt.Errorf("enroll-token for %s: %v %s", name, err, stderr)
		}
		if err := r.docker(ctx, "volume", "create", "--label", "coffer-chaos="+r.project, r.agentVolume(name)); err != nil {
			return err
		}
		_, stderr, code, err = r.agentRun(ctx, name, r.project+"-enroll-"+name, []string{r.cluster + "/carry:/carry:ro"},
			"agent", "enroll", "--token", strings.TrimSpace(tok), "--meta", metas, "--ca", "/carry/ca.pem", "--out", "/var/lib/coffer")
		if err != nil || code != 0 {
			return fmt.Errorf("enroll %s: exit %d %v: %s", name, code, err, stderr)
		}
	}
	var lastErr string
	for try := 0; try < 10; try++ {
		_, stderr, code, err := r.agentRun(ctx, agentName(1), r.project+"-init", nil, "init")
		if err == nil && code == 0 {
			r.logf("setup: %d agents enrolled, vault %s initialised", agents, vault)
			return nil
		}
		lastErr = fmt.Sprintf("exit %d %v: %s", code, err, stderr)
		time.Sleep(3 * time.Second)
	}
	return fmt.Errorf("init: %s", lastErr)
}

func (r *run) teardown(agents int) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if !*keepFlag {
		if err := r.sh(ctx, filepath.Join(r.root, "deploy/cluster.sh"), "down"); err != nil {
			r.t.Errorf("teardown: %v", err)
		}
		for i := 1; i <= agents; i++ {
			_ = r.docker(ctx, "volume", "rm", "-f", r.agentVolume(agentName(i)))
		}
		if err := syscall.Unmount(r.small, 0); err != nil {
			r.t.Errorf("teardown: unmount %s: %v", r.small, err)
		}
	}
}

func loadavg() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0
	}
	f, _ := strconv.ParseFloat(strings.Fields(string(b))[0], 64)
	return f
}

// ---- the checks ----

// restoreCheck restores snapshot id as agent and compares it with the manifest.
func (r *run) restoreCheck(ctx context.Context, a *attempt, id string) (string, error) {
	rdir := filepath.Join(r.dir, "restore", short(id))
	if err := os.MkdirAll(rdir, 0o755); err != nil {
		return "", err
	}
	defer os.RemoveAll(rdir)
	if err := os.Chown(rdir, 10001, 10001); err != nil {
		return "", err
	}
	var lastErr error
	for try := 0; try < 3; try++ {
		_ = os.RemoveAll(filepath.Join(rdir, "data"))
		rctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
		_, stderr, code, err := r.agentRun(rctx, a.Agent, fmt.Sprintf("%s-restore-%s", r.project, short(id)), []string{rdir + ":/restore"},
			"-q", "restore", id, "--target", "/restore")
		cancel()
		if err == nil && code == 0 {
			lastErr = nil
			break
		}
		lastErr = fmt.Errorf("restore %s: exit %d %v: %s", short(id), code, err, lastLine(stderr))
	}
	if lastErr != nil {
		return "lost", lastErr
	}
	got, err := manifest(filepath.Join(rdir, "data"))
	if err != nil {
		return "lost", err
	}
	for p, h := range a.Manifest {
		if got[p] != h {
			return "different", fmt.Errorf("snapshot %s: %s differs (want %.12s, got %.12s)", short(id), p, h, got[p])
		}
	}
	for p := range got {
		if _, ok := a.Manifest[p]; !ok {
			return "different", fmt.Errorf("snapshot %s: %s was not backed up", short(id), p)
		}
	}
	return "ok", nil
}

type pgCounts struct {
	PGCount int            `json:"pg_count"`
	Counts  map[string]int `json:"counts"`
}

// waitHealthy polls admin pgs until every PG is healthy.
func (r *run) waitHealthy(ctx context.Context) (time.Duration, pgCounts, error) {
	start := time.Now()
	var last pgCounts
	for {
		out, stderr, code, err := r.admin(ctx, "--json", "admin", "pgs")
		if err == nil && code == 0 {
			var c pgCounts
			if json.Unmarshal([]byte(out), &c) == nil {
				last = c
				if c.PGCount > 0 && c.Counts["healthy"] == c.PGCount {
					return time.Since(start), c, nil
				}
			}
		} else {
			r.logf("admin pgs: exit %d %v: %s", code, err, lastLine(stderr))
		}
		if time.Since(start) > healthyWithin {
			return time.Since(start), last, fmt.Errorf("PGs not all healthy %v after the last fault: %v", healthyWithin, last.Counts)
		}
		time.Sleep(5 * time.Second)
	}
}

var panicLine = regexp.MustCompile(`(?m)^(panic: |fatal error: |goroutine \d+ \[running\])`) // immutable

// Summary is the run's JSON summary (results/summary.json, docs/reliability.md).
type Summary struct {
	Seed            int64          `json:"seed"`
	Mode            string         `json:"mode"`
	Started         time.Time      `json:"started"`
	DurationS       float64        `json:"duration_s"`
	SetupS          float64        `json:"setup_s"`
	LoadStart       float64        `json:"load_avg_start"`
	LoadMax         float64        `json:"load_avg_max"`
	Commit          string         `json:"commit"`
	Image           string         `json:"image"`
	Faults          int            `json:"faults"`
	FaultsByKind    map[Kind]int   `json:"faults_by_kind"`
	Backups         int            `json:"backups"`
	Acknowledged    int            `json:"acknowledged"`
	Failed          int            `json:"failed"`
	InsideAttempted int            `json:"inside_envelope_attempted"`
	InsideFailed    int            `json:"inside_envelope_failed"`
	InsideFailRate  float64        `json:"inside_envelope_failure_rate"`
	OutsideAttempt  int            `json:"outside_envelope_attempted"`
	OutsideFailed   int            `json:"outside_envelope_failed"`
	UnclearFailures int            `json:"unclear_failures"`
	Indeterminate   int            `json:"indeterminate_committed"`
	Phantoms        []string       `json:"phantom_snapshots"`
	RestoresChecked int            `json:"restores_checked"`
	Lost            int            `json:"lost"`
	Different       int            `json:"different"`
	Linearizable    string         `json:"linearizable"`
	HistoryOps      int            `json:"history_ops"`
	Panics          []string       `json:"panics"`
	TimeToHealthyS  float64        `json:"time_to_healthy_s"`
	PGCounts        map[string]int `json:"pg_counts_at_end"`
	FailureMessages map[string]int `json:"failure_messages"`
	Problems        []string       `json:"problems"`
}

var hexRun = regexp.MustCompile(`[0-9a-f]{8,}|\d+(\.\d+)?(ms|s|µs)|\d+\.\d+\.\d+\.\d+:\d+|\d+`) // immutable

// TestChaos is the suite (COFFER_CHAOS=1; `make test-chaos`, `make test-chaos-short`).
func TestChaos(t *testing.T) {
	if os.Getenv("COFFER_CHAOS") == "" {
		t.Skip("COFFER_CHAOS=1 runs the fault-injection suite (make test-chaos); it needs Docker, docker-compose, root and the image")
	}
	v, err := variantFor(*modeFlag)
	if err != nil {
		t.Fatal(err)
	}
	seed := *seedFlag
	if seed == 0 {
		seed = time.Now().UnixNano() % 1_000_000
	}
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	results := *resultsFlag
	if results == "" {
		results = filepath.Join(root, "bin", "chaos")
	}
	dir := filepath.Join(results, fmt.Sprintf("%s-%d-%s", *modeFlag, seed, time.Now().UTC().Format("20060102T150405")))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	nl, err := os.Create(filepath.Join(dir, "nemesis.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer nl.Close()
	r := &run{t: t, root: root, dir: dir, seed: seed, project: *projectFlag, subnet: *subnetFlag, image: *imageFlag,
		net: *projectFlag + "_coffer", cluster: filepath.Join(dir, "cluster"), small: filepath.Join(dir, "small-volume"),
		t0: time.Now(), ids: map[string]string{}, nemLog: nl}
	r.env = append(os.Environ(), "COFFER_IMAGE="+r.image, "COMPOSE_PROJECT_NAME="+r.project, "COFFER_SUBNET_PREFIX="+r.subnet,
		"COFFER_CLUSTER_DIR="+r.cluster, "COFFER_COMPOSE_OVERRIDE="+filepath.Join(root, "deploy/chaos/compose.chaos.yaml"),
		"COFFER_CHAOS_SMALL_VOLUME="+r.small, "COFFER_AGENT_DATA="+filepath.Join(dir, "trees"), "COFFER_NO_AGENT=1")
	if out, _, _, _ := r.cmd(context.Background(), "docker", "ps", "-aq", "--filter", "label=com.docker.compose.project="+r.project); strings.TrimSpace(out) != "" {
		t.Fatalf("project %s already has containers: COMPOSE_PROJECT_NAME=%s deploy/cluster.sh down", r.project, r.project)
	}
	plan := NewPlan(seed, v.pairRounds, v.exclusive)
	sum := Summary{Seed: seed, Mode: *modeFlag, Image: r.image, Started: r.t0.UTC(), LoadStart: loadavg(), FaultsByKind: map[Kind]int{},
		FailureMessages: map[string]int{}, Phantoms: []string{}, Panics: []string{}}
	if out, _, _, _ := r.cmd(context.Background(), "git", "rev-parse", "--short", "HEAD"); out != "" {
		sum.Commit = strings.TrimSpace(out)
	}
	r.logf("seed %d, mode %s, %d faults in %d rounds, load average %.2f, results %s", seed, *modeFlag, plan.Count(), len(plan.Rounds), sum.LoadStart, dir)
	for i, rd := range plan.Rounds {
		var d []string
		for _, f := range rd.Faults {
			d = append(d, f.describe())
		}
		r.logf("plan round %2d: %s", i+1, strings.Join(d, " + "))
	}

	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Minute)
	defer cancel()
	defer r.teardown(*agentsFlag)
	if err := r.setup(ctx, *agentsFlag); err != nil {
		r.saveLogs(ctx, &sum)
		t.Fatalf("setup: %v", err)
	}
	sum.SetupS = r.now().Seconds()

	loadStop := make(chan struct{})
	go func() {
		for {
			select {
			case <-loadStop:
				return
			case <-time.After(5 * time.Second):
				l := loadavg()
				r.mu.Lock()
				r.loadMax = max(r.loadMax, l)
				r.mu.Unlock()
			}
		}
	}()

	// The workload, then the nemesis once every agent has one snapshot.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := 1; i <= *agentsFlag; i++ {
		name := agentName(i)
		tree := &agentTree{dir: filepath.Join(dir, "trees", name), rng: rand.New(rand.NewSource(seed*31 + int64(i)))}
		wg.Add(1)
		go func() { defer wg.Done(); r.backupLoop(ctx, name, i-1, tree, stop) }()
	}
	wg.Add(1)
	go func() { defer wg.Done(); r.listLoop(ctx, *agentsFlag, stop) }()
	warm := time.Now()
	for time.Since(warm) < 3*time.Minute {
		r.mu.Lock()
		n := len(r.attempts)
		r.mu.Unlock()
		if n >= *agentsFlag {
			break
		}
		time.Sleep(time.Second)
	}
	r.logf("nemesis: start")
	nemErr := r.nemesis(ctx, plan)
	if nemErr != nil {
		sum.Problems = append(sum.Problems, "nemesis: "+nemErr.Error())
	}
	lastFault := r.now()
	r.logf("nemesis: done; %v of backups without faults", v.calm)
	time.Sleep(v.calm)
	close(stop)
	wg.Wait()
	close(loadStop)
	r.logf("workload stopped")

	// Healing: every PG healthy within healthyWithin of the last fault.
	hctx, hcancel := context.WithTimeout(ctx, healthyWithin+time.Minute)
	took, counts, herr := r.waitHealthy(hctx)
	hcancel()
	sum.TimeToHealthyS = (r.now() - lastFault).Seconds()
	sum.PGCounts = counts.Counts
	if herr != nil {
		sum.Problems = append(sum.Problems, herr.Error())
	}
	r.logf("PGs: %v (%.0fs of polling, %.0fs after the last fault)", counts.Counts, took.Seconds(), sum.TimeToHealthyS)
	// The cluster's own words at the end (why a PG is degraded, repair status): status.txt, pgs.txt.
	for name, args := range map[string][]string{"status.txt": {"admin", "status"}, "pgs.txt": {"admin", "pgs"}} {
		actx, acancel := context.WithTimeout(ctx, time.Minute)
		out, stderr, _, _ := r.admin(actx, args...)
		acancel()
		if err := os.WriteFile(filepath.Join(dir, name), []byte(out+stderr), 0o644); err != nil {
			r.logf("%s: %v", name, err)
		}
	}

	// Classify the attempts.
	env := DefaultEnvelope()
	acked := map[string]*attempt{}
	for _, a := range r.attempts {
		a.Exposure = env.Expose(r.windows, a.Start, a.End)
		sum.Backups++
		if a.Exposure.Inside {
			sum.InsideAttempted++
		} else {
			sum.OutsideAttempt++
		}
		if a.SnapshotID != "" {
			sum.Acknowledged++
			acked[a.SnapshotID] = a
			continue
		}
		sum.Failed++
		if a.Exposure.Inside {
			sum.InsideFailed++
		} else {
			sum.OutsideFailed++
		}
		if !a.Clear {
			sum.UnclearFailures++
		}
		sum.FailureMessages[hexRun.ReplaceAllString(lastLine(a.Error), "N")]++
	}
	if sum.InsideAttempted > 0 {
		sum.InsideFailRate = float64(sum.InsideFailed) / float64(sum.InsideAttempted)
	}
	for _, w := range r.windows {
		sum.Faults++
		sum.FaultsByKind[w.Kind]++
	}

	// The final listing, then the history: acknowledged commits, indeterminate ones that a
	// listing shows, and the listings.
	var final []listedSnapshot
	for try := 1; ; try++ {
		start := r.now()
		l, err := r.listSnapshots(ctx, 100000+try)
		if err == nil {
			final = l
			op := Op{Client: *agentsFlag, Kind: OpList, Start: start, End: r.now()}
			for _, s := range l {
				op.Listed = append(op.Listed, s.ID)
			}
			r.lists = append(r.lists, op)
			break
		}
		if try == 10 {
			t.Fatalf("final listing: %v", err)
		}
		time.Sleep(5 * time.Second)
	}
	listed := map[string]listedSnapshot{}
	for _, s := range final {
		listed[s.ID] = s
	}
	var ops []Op
	for _, a := range r.attempts {
		if a.SnapshotID != "" {
			ops = append(ops, Op{Client: clientOf(a.Agent), Kind: OpCommit, ID: a.SnapshotID, Start: a.Start, End: a.End})
		}
	}
	seenAnywhere := map[string]bool{}
	for _, l := range r.lists {
		for _, id := range l.Listed {
			seenAnywhere[id] = true
		}
	}
	for id := range seenAnywhere {
		if acked[id] != nil {
			continue
		}
		// A snapshot nobody was told about: a failed backup of that host whose run covers
		// the commit time took effect after all (indeterminate); else a phantom.
		s, ok := listed[id]
		var match *attempt
		for _, a := range r.attempts {
			if ok && a.SnapshotID == "" && a.Agent == s.Host && !s.Time.Before(a.StartWall.Add(-2*time.Second)) && !s.Time.After(a.EndWall.Add(2*time.Second)) {
				match = a
			}
		}
		if match == nil {
			sum.Phantoms = append(sum.Phantoms, id)
			continue
		}
		sum.Indeterminate++
		match.SnapshotID = id // restored and compared below like an acknowledged one
		acked[id] = match
		ops = append(ops, Op{Client: clientOf(match.Agent), Kind: OpCommit, ID: id, Indeterminate: true, Start: match.Start, End: match.End})
		r.logf("snapshot %s of %s #%d is listed although that backup failed (exit %d): indeterminate, committed", short(id), match.Agent, match.Seq, match.Exit)
	}
	ops = append(ops, r.lists...)
	sum.HistoryOps = len(ops)
	res, info := CheckLinearizable(ops, 2*time.Minute)
	sum.Linearizable = map[porcupine.CheckResult]string{porcupine.Ok: "ok", porcupine.Illegal: "illegal", porcupine.Unknown: "unknown (timed out)"}[res]
	if err := porcupine.VisualizePath(SnapshotSetModel(), info, filepath.Join(dir, "history.html")); err != nil {
		r.logf("visualization: %v", err)
	}
	r.logf("history: %d ops, linearizable: %s", len(ops), sum.Linearizable)

	// Every acknowledged (or indeterminate, listed) snapshot is listed and restores
	// bit-identical.
	ids := make([]string, 0, len(acked))
	for id := range acked {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	var rmu sync.Mutex
	sem := make(chan struct{}, 4)
	var rwg sync.WaitGroup
	for _, id := range ids {
		a := acked[id]
		if _, ok := listed[id]; !ok {
			sum.Lost++
			sum.Problems = append(sum.Problems, fmt.Sprintf("snapshot %s (%s #%d) acknowledged but not listed", short(id), a.Agent, a.Seq))
			continue
		}
		rwg.Add(1)
		sem <- struct{}{}
		go func() {
			defer rwg.Done()
			defer func() { <-sem }()
			verdict, err := r.restoreCheck(ctx, a, id)
			rmu.Lock()
			defer rmu.Unlock()
			sum.RestoresChecked++
			switch verdict {
			case "lost":
				sum.Lost++
			case "different":
				sum.Different++
			}
			if err != nil {
				sum.Problems = append(sum.Problems, err.Error())
				r.logf("restore %s: %s: %v", short(id), verdict, err)
			}
		}()
	}
	rwg.Wait()
	r.logf("restores: %d checked, %d lost, %d different", sum.RestoresChecked, sum.Lost, sum.Different)

	r.saveLogs(ctx, &sum)
	sum.DurationS = r.now().Seconds()
	sum.LoadMax = r.loadMax

	// Verdicts.
	if sum.Faults < v.minFaults {
		sum.Problems = append(sum.Problems, fmt.Sprintf("%d faults injected, want ≥ %d", sum.Faults, v.minFaults))
	}
	if sum.Lost > 0 || sum.Different > 0 {
		sum.Problems = append(sum.Problems, fmt.Sprintf("%d lost, %d different", sum.Lost, sum.Different))
	}
	if res != porcupine.Ok {
		sum.Problems = append(sum.Problems, "history not linearizable: "+sum.Linearizable+" (history.html)")
	}
	if len(sum.Phantoms) > 0 {
		sum.Problems = append(sum.Problems, fmt.Sprintf("%d listed snapshots no backup accounts for", len(sum.Phantoms)))
	}
	if sum.UnclearFailures > 0 {
		sum.Problems = append(sum.Problems, fmt.Sprintf("%d failed backups without a clear `coffer: ...` message", sum.UnclearFailures))
	}
	if len(sum.Panics) > 0 {
		sum.Problems = append(sum.Problems, fmt.Sprintf("panics in node logs: %v", sum.Panics))
	}
	if sum.InsideFailed > 0 {
		sum.Problems = append(sum.Problems, fmt.Sprintf("%d of %d backups failed inside the envelope (%.1f%%)", sum.InsideFailed, sum.InsideAttempted, 100*sum.InsideFailRate))
	}
	writeJSON(t, filepath.Join(dir, "summary.json"), sum)
	writeJSON(t, filepath.Join(dir, "backups.json"), r.attempts)
	writeJSON(t, filepath.Join(dir, "faults.json"), r.windows)
	r.logf("summary: %d faults %v; %d backups, %d acknowledged, %d failed (inside the envelope %d/%d failed, outside %d/%d); %d indeterminate; restores %d checked, %d lost, %d different; linearizable %s; healthy %.0fs after the last fault; load %.1f..%.1f",
		sum.Faults, sum.FaultsByKind, sum.Backups, sum.Acknowledged, sum.Failed, sum.InsideFailed, sum.InsideAttempted, sum.OutsideFailed, sum.OutsideAttempt,
		sum.Indeterminate, sum.RestoresChecked, sum.Lost, sum.Different, sum.Linearizable, sum.TimeToHealthyS, sum.LoadStart, sum.LoadMax)
	for m, n := range sum.FailureMessages {
		r.logf("failure x%d: %s", n, m)
	}
	for _, p := range sum.Problems {
		t.Error(p)
	}
}

// agentName is the enrolled name and host name of the suite's agent i (the compose
// file's own agent is agent-1).
func agentName(i int) string { return fmt.Sprintf("chaos-%d", i) }

func clientOf(agent string) int {
	n, _ := strconv.Atoi(strings.TrimPrefix(agent, "chaos-"))
	return n - 1
}

// saveLogs copies every node's log into the results and looks for panics.
func (r *run) saveLogs(ctx context.Context, sum *Summary) {
	if err := os.MkdirAll(filepath.Join(r.dir, "logs"), 0o755); err != nil {
		return
	}
	for svc, id := range r.ids {
		out, errs, _, err := r.cmd(ctx, "docker", "logs", "--timestamps", id)
		if err != nil {
			continue
		}
		log := out + errs
		_ = os.WriteFile(filepath.Join(r.dir, "logs", svc+".log"), []byte(log), 0o644)
		if m := panicLine.FindString(log); m != "" {
			sum.Panics = append(sum.Panics, svc+": "+strings.TrimSpace(m))
		}
	}
}

func writeJSON(t *testing.T, path string, v any) {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		t.Error(err)
		return
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Error(err)
	}
}
