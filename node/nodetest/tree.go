package nodetest

import (
	"bytes"
	"crypto/sha256"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"syscall"
	"testing"
	"time"
)

// TreeOpts shape a generated source tree.
type TreeOpts struct {
	Seed uint64
	// BigFile is the size of a file made of one 1 MiB random block repeated (0 = none).
	BigFile int64
}

// MakeTree writes a tree holding every kind of entry a backup must keep: regular, empty,
// random and all-zero files, a sparse file with a hole, relative and dangling symlinks, a
// hardlink pair, a fifo, an empty directory, a setgid directory, restrictive and executable
// modes, unusual names, fixed modification times, and (as root) other owners.
func MakeTree(t testing.TB, dir string, o TreeOpts) {
	t.Helper()
	r := rand.New(rand.NewPCG(o.Seed, 7))
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	random := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		return b
	}
	write := func(rel string, data []byte, mode os.FileMode) {
		t.Helper()
		p := filepath.Join(dir, rel)
		must(os.MkdirAll(filepath.Dir(p), 0o755))
		must(os.WriteFile(p, data, mode))
		must(os.Chmod(p, mode))
	}
	write("docs/readme.txt", bytes.Repeat([]byte("coffer keeps every byte.\n"), 400), 0o644)
	write("docs/empty", nil, 0o644)
	write("data/a/b/c/deep.bin", random(3<<20+17), 0o644)
	write("data/zeros.bin", make([]byte, 1<<20), 0o644)
	write("data/secret.key", random(100), 0o600)
	write("bin/tool.sh", []byte("#!/bin/sh\necho hi\n"), 0o755)
	write("names/with space.txt", []byte("space"), 0o644)
	write("names/ünïcødé 文件.txt", []byte("unicode"), 0o644)
	for i := range 40 {
		write(filepath.Join("many", "f"+string(rune('a'+i%26))+string(rune('a'+i/26))), random(int(r.Uint32N(20000))), 0o644)
	}
	// Sparse: 1 MiB data, 6 MiB hole, 1 MiB data.
	sp := filepath.Join(dir, "data/sparse.img")
	f, err := os.Create(sp)
	must(err)
	_, err = f.Write(random(1 << 20))
	must(err)
	_, err = f.WriteAt(random(1<<20), 7<<20)
	must(err)
	must(f.Close())
	if o.BigFile > 0 {
		block := random(1 << 20)
		bf, err := os.Create(filepath.Join(dir, "big/repeated.bin"))
		if os.IsNotExist(err) {
			must(os.MkdirAll(filepath.Join(dir, "big"), 0o755))
			bf, err = os.Create(filepath.Join(dir, "big/repeated.bin"))
		}
		must(err)
		for written := int64(0); written < o.BigFile; written += int64(len(block)) {
			n := min(int64(len(block)), o.BigFile-written)
			_, err := bf.Write(block[:n])
			must(err)
		}
		must(bf.Close())
	}
	must(os.Symlink("../docs/readme.txt", filepath.Join(dir, "data/link-to-readme")))
	must(os.Symlink("does/not/exist", filepath.Join(dir, "data/dangling")))
	must(os.Link(filepath.Join(dir, "docs/readme.txt"), filepath.Join(dir, "data/hardlink.txt")))
	must(syscall.Mkfifo(filepath.Join(dir, "data/fifo"), 0o640))
	must(os.MkdirAll(filepath.Join(dir, "empty/dir"), 0o755))
	must(os.MkdirAll(filepath.Join(dir, "shared"), 0o755))
	must(os.Chmod(filepath.Join(dir, "shared"), 0o2775|os.ModeSetgid))
	if os.Geteuid() == 0 {
		must(os.Lchown(filepath.Join(dir, "data/secret.key"), 1234, 5678))
	}
	// Fixed times, deepest first so directory times stick.
	var paths []string
	must(filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		paths = append(paths, p)
		return err
	}))
	sort.Sort(sort.Reverse(sort.StringSlice(paths)))
	base := time.Date(2024, 3, 1, 12, 0, 0, 0, time.UTC)
	for i, p := range paths {
		ts := base.Add(time.Duration(i)*time.Hour + time.Duration(r.Uint32N(1e9)))
		if fi, err := os.Lstat(p); err == nil && fi.Mode()&os.ModeSymlink != 0 {
			must(lutimes(p, ts))
			continue
		}
		must(os.Chtimes(p, ts, ts))
	}
}

// CompareTrees fails the test unless the tree at got equals the one at want in entries,
// types, permission and special bits, modification times, sizes, contents, symlink
// targets, hardlink groups, sparse holes (got must stay sparse where want is) and, as
// root, owners.
func CompareTrees(t testing.TB, want, got string) {
	t.Helper()
	type entry struct {
		fi  os.FileInfo
		st  *syscall.Stat_t
		sum [32]byte
		lnk string
	}
	scan := func(root string) map[string]entry {
		t.Helper()
		out := map[string]entry{}
		err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			rel, _ := filepath.Rel(root, p)
			fi, err := os.Lstat(p)
			if err != nil {
				return err
			}
			e := entry{fi: fi, st: fi.Sys().(*syscall.Stat_t)}
			switch {
			case fi.Mode().IsRegular():
				f, err := os.Open(p)
				if err != nil {
					return err
				}
				h := sha256.New()
				_, err = io.Copy(h, f)
				f.Close()
				if err != nil {
					return err
				}
				copy(e.sum[:], h.Sum(nil))
			case fi.Mode()&os.ModeSymlink != 0:
				e.lnk, err = os.Readlink(p)
				if err != nil {
					return err
				}
			}
			out[rel] = e
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	w, g := scan(want), scan(got)
	for rel := range g {
		if _, ok := w[rel]; !ok {
			t.Errorf("restored tree has extra entry %q", rel)
		}
	}
	wantIno := map[uint64]string{}
	for rel, we := range w {
		ge, ok := g[rel]
		if !ok {
			t.Errorf("restored tree lacks %q", rel)
			continue
		}
		if we.fi.Mode() != ge.fi.Mode() {
			t.Errorf("%q: mode %v, want %v", rel, ge.fi.Mode(), we.fi.Mode())
		}
		if rel != "." && !we.fi.ModTime().Equal(ge.fi.ModTime()) {
			t.Errorf("%q: mtime %v, want %v", rel, ge.fi.ModTime(), we.fi.ModTime())
		}
		if os.Geteuid() == 0 && (we.st.Uid != ge.st.Uid || we.st.Gid != ge.st.Gid) {
			t.Errorf("%q: owner %d:%d, want %d:%d", rel, ge.st.Uid, ge.st.Gid, we.st.Uid, we.st.Gid)
		}
		if we.fi.Mode().IsRegular() {
			if we.fi.Size() != ge.fi.Size() || we.sum != ge.sum {
				t.Errorf("%q: content differs (size %d, want %d)", rel, ge.fi.Size(), we.fi.Size())
			}
			if alloc := we.st.Blocks * 512; alloc < we.fi.Size()/2 && ge.st.Blocks*512 > we.fi.Size()*3/4 {
				t.Errorf("%q: sparse source (%d bytes allocated) restored dense (%d of %d)", rel, alloc, ge.st.Blocks*512, ge.fi.Size())
			}
			if we.st.Nlink > 1 {
				if other, ok := wantIno[we.st.Ino]; ok {
					if g[other].st.Ino != ge.st.Ino {
						t.Errorf("%q and %q: hardlinked in the source, separate after restore", rel, other)
					}
				} else {
					wantIno[we.st.Ino] = rel
				}
			}
		}
		if we.lnk != ge.lnk {
			t.Errorf("%q: symlink target %q, want %q", rel, ge.lnk, we.lnk)
		}
	}
}
