package client

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// TestScanDirCountsLikeWalkDir: the progress scan counts the regular files below a
// directory and their bytes exactly as filepath.WalkDir with Lstat would (symlinks to
// files and to directories are neither counted nor followed, empty files count), and a
// cancelled scan stops with the context's error.
func TestScanDirCountsLikeWalkDir(t *testing.T) {
	dir := t.TempDir()
	for i, p := range []string{"a/b/c/f1", "a/f2", "a/b/f3", "d/empty", "e/f/g/h/f4"} {
		writeFile(t, filepath.Join(dir, p), make([]byte, 100*i), 0o644)
	}
	if err := os.MkdirAll(filepath.Join(dir, "x/y"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(dir, "a"), filepath.Join(dir, "x/link-to-dir")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(dir, "a/f2"), filepath.Join(dir, "x/link-to-file")); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(filepath.Join(dir, "x/fifo"), 0o644); err != nil {
		t.Fatal(err)
	}
	var wantFiles, wantBytes int64
	if err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		wantFiles++
		wantBytes += fi.Size()
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	var b backup
	if err := b.scanDir(context.Background(), dir); err != nil {
		t.Fatal(err)
	}
	if b.totalFiles.Load() != wantFiles || b.totalBytes.Load() != wantBytes {
		t.Errorf("scan: %d files, %d bytes; WalkDir: %d files, %d bytes", b.totalFiles.Load(), b.totalBytes.Load(), wantFiles, wantBytes)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	var c backup
	if err := c.scanDir(ctx, dir); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled scan: %v, want context.Canceled", err)
	}
}

// TestOpenDirErrors: openDir names the path and the cause of a failure.
func TestOpenDirErrors(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "file"), []byte("x"), 0o644)
	if _, err := openDir(filepath.Join(dir, "missing")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing directory: %v, want ErrNotExist", err)
	}
	var pe *fs.PathError
	if _, err := openDir(filepath.Join(dir, "file")); !errors.As(err, &pe) || !errors.Is(err, syscall.ENOTDIR) || pe.Path != filepath.Join(dir, "file") {
		t.Errorf("a file: %v, want a PathError naming it with ENOTDIR", err)
	}
	f, err := openDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	names, err := f.Readdirnames(-1)
	if err != nil || len(names) != 1 || names[0] != "file" {
		t.Errorf("listing: %q, %v", names, err)
	}
}
