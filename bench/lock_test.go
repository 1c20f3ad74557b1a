package bench

import (
	"strings"
	"testing"
)

// TestDataDirLock: a second run on the same data directory fails at once, naming it, and
// the directory is free again once the first run releases it.
func TestDataDirLock(t *testing.T) {
	dir := t.TempDir()
	unlock, err := lockDataDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lockDataDir(dir); err == nil || !strings.Contains(err.Error(), "in use by another coffer bench run") || !strings.Contains(err.Error(), dir) {
		t.Fatalf("second lock of %s: %v, want an in-use error naming it", dir, err)
	}
	unlock()
	unlock2, err := lockDataDir(dir)
	if err != nil {
		t.Fatalf("lock after release: %v", err)
	}
	unlock2()
}
