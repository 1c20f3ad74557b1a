package client

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// toolchainDir returns the extracted golang.org/toolchain module of version v (as `go mod
// download golang.org/toolchain@v0.0.1-go1.26.0.linux-amd64` leaves it), or "".
func toolchainDir(v string) string {
	cache := os.Getenv("GOMODCACHE")
	if cache == "" {
		home, _ := os.UserHomeDir()
		cache = filepath.Join(home, "go", "pkg", "mod")
	}
	d := filepath.Join(cache, "golang.org", "toolchain@v0.0.1-"+v+".linux-amd64")
	if _, err := os.Stat(filepath.Join(d, "src")); err != nil {
		return ""
	}
	return d
}

// blockHashes returns the SHA-256 of every bs-byte block of the file at p: an account of
// its content independent of the agent.
func blockHashes(t *testing.T, p string, bs int) [][32]byte {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out [][32]byte
	buf := make([]byte, bs)
	for {
		n, err := io.ReadFull(f, buf)
		if n > 0 {
			out = append(out, sha256.Sum256(buf[:n]))
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}

// updateScript returns debugfs commands that turn an image holding tree old (at its
// root) into one holding tree new: changed and new files written, removed files and
// directories deleted.
func updateScript(t *testing.T, old, new string) (string, int) {
	t.Helper()
	var cmds []string
	changed := 0
	err := filepath.WalkDir(new, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(new, p)
		if rel == "." {
			return nil
		}
		op := filepath.Join(old, rel)
		oi, oerr := os.Lstat(op)
		switch {
		case d.IsDir():
			if oerr != nil {
				cmds = append(cmds, "mkdir /"+rel)
			}
		case d.Type().IsRegular():
			if oerr == nil {
				a, _ := os.ReadFile(op)
				b, err := os.ReadFile(p)
				if err != nil {
					return err
				}
				if bytes.Equal(a, b) && oi.Mode().IsRegular() {
					return nil
				}
				cmds = append(cmds, "rm /"+rel)
			}
			cmds = append(cmds, fmt.Sprintf("write %s /%s", p, rel))
			changed++
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var gone []string
	err = filepath.WalkDir(old, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(old, p)
		if rel == "." {
			return nil
		}
		if _, err := os.Lstat(filepath.Join(new, rel)); err == nil {
			return nil
		}
		if d.IsDir() {
			gone = append(gone, "rmdir /"+rel)
		} else {
			cmds = append(cmds, "rm /"+rel)
			changed++
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.Reverse(gone) // deepest first
	cmds = append(cmds, gone...)
	for _, c := range cmds {
		if strings.ContainsAny(c, "\n\"") {
			t.Fatalf("unexpected file name in %q", c)
		}
	}
	return strings.Join(cmds, "\n") + "\n", changed
}

// TestExt4ImageToolchainUpdate is the acceptance test on a real file system image: an
// ext4 image holding the go1.26.0 toolchain is backed up; the go1.26.1 tree is written
// into the same image (debugfs); the second backup stores at most 1.2x the bytes of the
// blocks that differ (computed here with SHA-256, independently of the agent) and
// restores to the new image; a third backup of the new image against the first
// snapshot with a dirty map of exactly those blocks reads only them.
//
// It needs mke2fs and debugfs and both toolchain modules in the module cache:
// `make test-ext4` downloads them and runs it with COFFER_EXT4_TEST=1.
func TestExt4ImageToolchainUpdate(t *testing.T) {
	if os.Getenv("COFFER_EXT4_TEST") == "" {
		t.Skip("set COFFER_EXT4_TEST=1 to run (make test-ext4)")
	}
	t0, t1 := toolchainDir("go1.26.0"), toolchainDir("go1.26.1")
	if t0 == "" || t1 == "" {
		t.Fatal("go1.26.0 and go1.26.1 toolchain modules are not in the module cache (make test-ext4 downloads them)")
	}
	for _, tool := range []string{"mke2fs", "debugfs"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not found (e2fsprogs)", tool)
		}
	}
	ctx := context.Background()
	dir := t.TempDir()
	img := filepath.Join(dir, "go.img")
	run := func(name string, args ...string) {
		t.Helper()
		out, err := exec.Command(name, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("%s %v: %v\n%s", name, args, err, out)
		}
	}
	run("mke2fs", "-q", "-F", "-t", "ext4", "-b", "4096", "-E", "root_owner=0:0", "-d", t0, img, "400M")
	const bs = DefaultBlockSize
	before := blockHashes(t, img, bs)

	e := newEnv(t)
	e.cfg.CacheDir = filepath.Join(dir, "cache")
	a := e.open(t)
	first, err := a.BackupBlock(ctx, BlockOptions{Path: img})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("go1.26.0 image: %d blocks, %d holes or zero, stored %d bytes", first.Blocks.Total, first.Blocks.Holes, first.Snapshot.Stats.BytesAdded)

	script, nfiles := updateScript(t, t0, t1)
	sp := filepath.Join(dir, "update.debugfs")
	if err := os.WriteFile(sp, []byte(script), 0o600); err != nil {
		t.Fatal(err)
	}
	run("debugfs", "-w", "-f", sp, img)
	if out, err := exec.Command("debugfs", "-R", "cat /src/os/statat.go", img).Output(); err != nil || !bytes.Contains(out, []byte("package os")) {
		t.Fatalf("the go1.26.1 tree was not written into the image: %v %q", err, out)
	}
	after := blockHashes(t, img, bs)
	var diff []int64
	var diffBytes int64
	fi, _ := os.Stat(img)
	for i := range after {
		if i >= len(before) || before[i] != after[i] {
			diff = append(diff, int64(i))
			diffBytes += min(bs, fi.Size()-int64(i)*bs)
		}
	}
	t.Logf("go1.26.1 written: %d files changed, %d of %d blocks differ (%d bytes)", nfiles, len(diff), len(after), diffBytes)
	if len(diff) == 0 {
		t.Fatal("no block differs")
	}

	second, err := a.BackupBlock(ctx, BlockOptions{Path: img})
	if err != nil {
		t.Fatal(err)
	}
	added := second.Snapshot.Stats.BytesAdded
	t.Logf("full-read backup: read %d bytes, %d blocks changed, stored %d bytes (%.2fx the differing blocks)",
		second.BytesRead, second.Blocks.Changed, added, float64(added)/float64(diffBytes))
	if float64(added) > 1.2*float64(diffBytes) {
		t.Errorf("stored %d bytes, more than 1.2x the %d bytes of differing blocks", added, diffBytes)
	}
	if second.Blocks.Changed != int64(len(diff)) {
		t.Errorf("agent found %d changed blocks, the test %d", second.Blocks.Changed, len(diff))
	}
	restored := func(snap BackupResult) {
		t.Helper()
		out := filepath.Join(t.TempDir(), "r.img")
		if _, err := a.RestoreImage(ctx, snap.Snapshot, ImageRestoreOptions{Target: out}); err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(blockHashes(t, out, bs), after) {
			t.Fatal("restored image differs from the go1.26.1 image")
		}
	}
	restored(second)

	// Dirty map of exactly the differing blocks, against the first snapshot.
	var m strings.Builder
	fmt.Fprintf(&m, "coffer-dirty-map 1\nblock-size %d\n", bs)
	for _, b := range diff {
		fmt.Fprintf(&m, "%d 1\n", b)
	}
	dm, err := ParseDirtyMap(strings.NewReader(m.String()))
	if err != nil {
		t.Fatal(err)
	}
	log := &readLog{blocks: map[int64]bool{}, bs: bs}
	third, err := a.BackupBlock(ctx, BlockOptions{Path: img, DirtyMap: dm, Parent: first.Snapshot.ID.String(), OnRead: log.hook})
	if err != nil {
		t.Fatal(err)
	}
	read, _ := log.take()
	// Differing blocks that became holes or zero are not read either (no data there).
	for _, b := range read {
		if !slices.Contains(diff, b) {
			t.Errorf("dirty-map backup read block %d, which the map does not list", b)
		}
	}
	t.Logf("dirty-map backup: read %d blocks (%d bytes), reused %d", len(read), third.BytesRead, third.Blocks.Reused)
	restored(third)
}
