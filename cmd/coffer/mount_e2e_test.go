package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cofferhq/coffer/client/clientconfig"
	"github.com/cofferhq/coffer/node"
	"github.com/cofferhq/coffer/node/nodetest"
)

// needFUSE skips the test where FUSE mounts cannot be made (no /dev/fuse).
func needFUSE(t *testing.T) {
	t.Helper()
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skipf("no FUSE here (%v): the mount tests need /dev/fuse", err)
	}
}

// mounted reports whether dir is a mount point of this machine.
func mounted(t *testing.T, dir string) bool {
	t.Helper()
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if fields := strings.Fields(sc.Text()); len(fields) > 4 && fields[4] == dir {
			return true
		}
	}
	return false
}

// startMount runs "coffer mount mnt" in the background and waits until snapshots/
// lists want entries. stop interrupts it (as Ctrl-C does) and returns its exit code
// and stderr.
func startMount(t *testing.T, env map[string]string, mnt string, want int, extra ...string) (stop func() (int, string)) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	type result struct {
		code   int
		stderr string
	}
	done := make(chan result, 1)
	go func() {
		var stdout, stderr bytes.Buffer
		args := append(append([]string{"mount"}, extra...), mnt)
		code := run(ctx, args, strings.NewReader(""), &stdout, &stderr, func(k string) string { return env[k] })
		done <- result{code, stderr.String()}
	}()
	stopped := false
	stop = func() (int, string) {
		if !stopped {
			stopped = true
			cancel()
		}
		select {
		case r := <-done:
			return r.code, r.stderr
		case <-time.After(2 * time.Minute):
			t.Fatal("coffer mount did not stop within 2 minutes of the interrupt")
		}
		return 0, ""
	}
	t.Cleanup(func() {
		if !stopped {
			stop()
		}
	})
	deadline := time.Now().Add(2 * time.Minute)
	for {
		ents, err := os.ReadDir(filepath.Join(mnt, "snapshots"))
		if err == nil && len(ents) == want {
			return stop
		}
		select {
		case r := <-done:
			t.Fatalf("coffer mount exited %d before serving: %s", r.code, r.stderr)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("mount not serving %d snapshots after 2 minutes (last: %d entries, %v)", want, len(ents), err)
		}
		time.Sleep(50 * time.Millisecond) // polling for the mount to appear
	}
}

// statLines runs stat over every entry below root (sorted by path) and returns one line
// per entry: name, type and mode, link count, owner, group, modification time and, for
// everything but directories (whose size the snapshot does not record), size.
func statLines(t *testing.T, root string) []string {
	t.Helper()
	cmd := exec.Command("sh", "-c", `find . -mindepth 1 -print0 | LC_ALL=C sort -z | xargs -0 stat -c '%F|%n %f %h %u %g %.9Y %s'`)
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("stat below %s: %v", root, err)
	}
	var lines []string
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		typ, rest, _ := strings.Cut(l, "|")
		if typ == "directory" {
			rest = rest[:strings.LastIndexByte(rest, ' ')]
		}
		lines = append(lines, rest)
	}
	return lines
}

// TestCLIMount backs up a mixed tree (sparse file, symlinks, hardlinks, a FIFO, 10,000
// small files) to a cluster over loopback QUIC, mounts the vault with coffer mount,
// compares the snapshot's directory with the source (diff -r, then stat of every entry,
// then nodetest.CompareTrees: contents, modes, times, hardlink inodes, sparse holes),
// checks hosts/<host>/latest and that writes are refused, and unmounts by interrupting
// the command. A restore operator then mounts the same vault: its reads go through
// restore grants.
func TestCLIMount(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a cluster")
	}
	needFUSE(t)
	c := nodetest.New(t, nodetest.Opts{})
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	nodetest.MakeTree(t, src, nodetest.TreeOpts{Seed: 19})
	for i := range 100 {
		d := filepath.Join(src, "small", fmt.Sprintf("d%02d", i))
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		for j := range 100 {
			if err := os.WriteFile(filepath.Join(d, fmt.Sprintf("f%02d", j)), []byte(fmt.Sprintf("small file %d/%d\n", i, j)), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	env := map[string]string{
		"COFFER_CONFIG":     node.DevClientConfig(c.Dir),
		"COFFER_PASSPHRASE": "mount test passphrase",
		"COFFER_CACHE_DIR":  filepath.Join(dir, "cache"),
	}
	if code, _, stderr := cli(t, env, "init"); code != exitOK {
		t.Fatalf("init: exit %d: %s", code, stderr)
	}
	code, out, stderr := cli(t, env, "--json", "backup", src)
	if code != exitOK {
		t.Fatalf("backup: exit %d: %s", code, stderr)
	}
	snapID, _ := lastJSON(t, out)["snapshot_id"].(string)
	if len(snapID) < 8 {
		t.Fatalf("backup summary without a snapshot ID: %s", out)
	}

	mnt := filepath.Join(dir, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	stop := startMount(t, env, mnt, 1)
	if !mounted(t, mnt) {
		t.Fatalf("%s serves snapshots but is not in mountinfo", mnt)
	}
	ents, _ := os.ReadDir(filepath.Join(mnt, "snapshots"))
	name := ents[0].Name()
	if !strings.HasSuffix(name, "_"+snapID[:8]) {
		t.Errorf("snapshot directory %q does not end in the snapshot's ID %s", name, snapID[:8])
	}
	host, _ := os.Hostname()
	if target, err := os.Readlink(filepath.Join(mnt, "hosts", host, "latest")); err != nil || target != "../../snapshots/"+name {
		t.Errorf("hosts/%s/latest -> %q (%v), want ../../snapshots/%s", host, target, err, name)
	}
	got := filepath.Join(mnt, "snapshots", name, "src")

	// diff -r: identical but for the FIFO, which diff reports and never compares.
	diff := exec.Command("diff", "-r", "--no-dereference", src, got)
	dout, err := diff.CombinedOutput()
	for _, line := range strings.Split(strings.TrimSpace(string(dout)), "\n") {
		if line != "" && !strings.HasSuffix(line, "is a fifo") {
			t.Errorf("diff -r: %s", line)
		}
	}
	if ee := (*exec.ExitError)(nil); err != nil && !(errors.As(err, &ee) && ee.ExitCode() == 1) {
		t.Fatalf("diff -r: %v: %s", err, dout)
	}
	// stat of every entry.
	want, have := statLines(t, src), statLines(t, got)
	if len(want) < 10_000 {
		t.Fatalf("stat saw %d source entries, want over 10,000", len(want))
	}
	if len(want) != len(have) {
		t.Errorf("stat: %d entries in the mount, %d in the source", len(have), len(want))
	}
	bad := 0
	for i := range min(len(want), len(have)) {
		if want[i] != have[i] && bad < 10 {
			bad++
			t.Errorf("stat differs:\n source %s\n mount  %s", want[i], have[i])
		}
	}
	nodetest.CompareTrees(t, src, got)

	// Read-only: nothing can be created or written.
	if err := os.WriteFile(filepath.Join(got, "new"), []byte("x"), 0o644); !errors.Is(err, syscall.EROFS) {
		t.Errorf("creating a file in the mount: %v, want EROFS", err)
	}
	if f, err := os.OpenFile(filepath.Join(got, "docs", "readme.txt"), os.O_WRONLY, 0); !errors.Is(err, syscall.EROFS) {
		if f != nil {
			f.Close()
		}
		t.Errorf("opening a file for writing: %v, want EROFS", err)
	}

	code, stderr = stop()
	if code != exitOK || !strings.Contains(stderr, "unmounted") {
		t.Fatalf("coffer mount after the interrupt: exit %d: %s", code, stderr)
	}
	if mounted(t, mnt) {
		t.Fatalf("%s still mounted after the interrupt", mnt)
	}

	// A restore operator mounts the vault: chunk nodes serve it only through grants.
	f, err := clientconfig.Load(node.DevClientConfig(c.Dir))
	if err != nil {
		t.Fatal(err)
	}
	key, csr, cert := filepath.Join(dir, "dr-key.pem"), filepath.Join(dir, "dr.csr"), filepath.Join(dir, "dr.pem")
	if code, _, stderr := cli(t, nil, "cert", "request", "--principal", "dr", "--key", key, "--csr", csr); code != exitOK {
		t.Fatalf("cert request: exit %d: %s", code, stderr)
	}
	if code, _, stderr := cli(t, env, "admin", "cert", "issue", "--role", "restore-operator", "--principal", "dr", "--csr", csr, "--out", cert); code != exitOK {
		t.Fatalf("cert issue: exit %d: %s", code, stderr)
	}
	drCfg := filepath.Join(dir, "dr.yaml")
	if err := clientconfig.Save(drCfg, clientconfig.File{Meta: f.Meta, CA: f.CA, Cert: cert, Key: key}); err != nil {
		t.Fatal(err)
	}
	drEnv := map[string]string{"COFFER_CONFIG": drCfg, "COFFER_PASSPHRASE": env["COFFER_PASSPHRASE"], "COFFER_CACHE_DIR": filepath.Join(dir, "dr-cache")}
	stop = startMount(t, drEnv, mnt, 1)
	for _, p := range []string{"data/a/b/c/deep.bin", "data/sparse.img", "small/d42/f17"} {
		w, err1 := os.ReadFile(filepath.Join(src, p))
		g, err2 := os.ReadFile(filepath.Join(mnt, "snapshots", name, "src", p))
		if err1 != nil || err2 != nil || !bytes.Equal(w, g) {
			t.Errorf("restore operator reading %s: %v %v, equal %v", p, err1, err2, bytes.Equal(w, g))
		}
	}
	if code, stderr := stop(); code != exitOK || mounted(t, mnt) {
		t.Fatalf("restore operator's mount after the interrupt: exit %d, still mounted %v: %s", code, mounted(t, mnt), stderr)
	}
}
