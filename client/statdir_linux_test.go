package client

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// TestStatDirMatchesLstat lists a directory holding every kind of entry and checks
// each entry's information against os.Lstat, field by field, and the order against
// os.ReadDir.
func TestStatDirMatchesLstat(t *testing.T) {
	dir := t.TempDir()
	makeTree(t, dir)
	writeFile(t, filepath.Join(dir, "setgid"), []byte("x"), 0o644)
	if err := os.Chmod(filepath.Join(dir, "setgid"), 0o2755); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "sticky"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(dir, "sticky"), 0o1777); err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() == 0 {
		if err := unix.Mknod(filepath.Join(dir, "null"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))); err != nil {
			t.Logf("no device node (%v)", err)
		}
	}
	ents, err := statDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names, wantNames []string
	for _, e := range ents {
		names = append(names, e.name)
	}
	for _, e := range want {
		wantNames = append(wantNames, e.Name())
	}
	if !slices.Equal(names, wantNames) {
		t.Fatalf("statDir order %q, os.ReadDir %q", names, wantNames)
	}
	kinds := map[fs.FileMode]bool{}
	for _, e := range ents {
		if e.err != nil {
			t.Fatalf("%s: %v", e.name, e.err)
		}
		w, err := os.Lstat(filepath.Join(dir, e.name))
		if err != nil {
			t.Fatal(err)
		}
		g := e.fi
		if g.Name() != w.Name() || g.Size() != w.Size() || g.Mode() != w.Mode() || !g.ModTime().Equal(w.ModTime()) || g.IsDir() != w.IsDir() {
			t.Errorf("%s: statDir %v %d %v %v, os.Lstat %v %d %v %v", e.name, g.Name(), g.Size(), g.Mode(), g.ModTime(), w.Name(), w.Size(), w.Mode(), w.ModTime())
		}
		if gs, ws := g.Sys().(*syscall.Stat_t), w.Sys().(*syscall.Stat_t); !reflect.DeepEqual(gs, ws) {
			t.Errorf("%s: stat %+v, os.Lstat %+v", e.name, gs, ws)
		}
		kinds[g.Mode().Type()] = true
	}
	for _, k := range []fs.FileMode{0, fs.ModeDir, fs.ModeSymlink, fs.ModeNamedPipe} {
		if !kinds[k] {
			t.Errorf("no entry of type %v was checked", k)
		}
	}
}

// TestStatDirErrors: a missing directory is an error of the listing; an entry that
// cannot be stat'ed is an error of that entry, naming its path.
func TestStatDirErrors(t *testing.T) {
	dir := t.TempDir()
	if _, err := statDir(filepath.Join(dir, "missing")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing directory: %v", err)
	}
	writeFile(t, filepath.Join(dir, "f"), nil, 0o644)
	if _, err := statDir(filepath.Join(dir, "f")); err == nil {
		t.Error("listing a regular file succeeded")
	}
}
