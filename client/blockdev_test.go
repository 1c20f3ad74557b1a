package client

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// loopDevice attaches the file at p to a free loop device and returns its path; it skips
// the test where loop devices are not available (not root, no losetup, a container).
func loopDevice(t *testing.T, p string) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("loop devices need root")
	}
	out, err := exec.Command("losetup", "--find", "--show", p).CombinedOutput()
	if err != nil {
		t.Skipf("losetup: %v: %s", err, out)
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() {
		if out, err := exec.Command("losetup", "-d", dev).CombinedOutput(); err != nil {
			t.Errorf("losetup -d %s: %v: %s", dev, err, out)
		}
	})
	return dev
}

// TestBlockDeviceRoundTrip backs up a block device (a loop device) and restores it onto
// another device holding garbage: holes and zero blocks are written as zeros there, and
// the device reads back identical.
func TestBlockDeviceRoundTrip(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	const size = 6 << 20
	content := randBytes(31, size)
	clear(content[1<<20 : 3<<20]) // two zero blocks of 1 MiB
	srcFile, dstFile := filepath.Join(dir, "src.img"), filepath.Join(dir, "dst.img")
	if err := os.WriteFile(srcFile, content, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dstFile, bytes.Repeat([]byte{0xff}, size), 0o600); err != nil {
		t.Fatal(err)
	}
	src, dst := loopDevice(t, srcFile), loopDevice(t, dstFile)
	e := newEnv(t)
	a := e.open(t)
	res, err := a.BackupBlock(ctx, BlockOptions{Path: src, BlockSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	if b := res.Blocks; b.Size != size || b.Total != 6 || b.Holes != 2 {
		t.Errorf("device blocks %+v", b)
	}
	if _, err := a.RestoreImage(ctx, res.Snapshot, ImageRestoreOptions{Target: dst}); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(dst)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, content) {
		t.Error("restored device differs from the source")
	}
	// A device smaller than the image is refused, and a regular file is never overwritten.
	small := filepath.Join(dir, "small.img")
	if err := os.WriteFile(small, make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := a.RestoreImage(ctx, res.Snapshot, ImageRestoreOptions{Target: loopDevice(t, small)}); err == nil {
		t.Error("restore onto a too small device succeeded")
	}
	if _, err := a.RestoreImage(ctx, res.Snapshot, ImageRestoreOptions{Target: dstFile}); err == nil {
		t.Error("restore over an existing regular file succeeded")
	}
}
