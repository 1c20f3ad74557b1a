package bench

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// lockName is the lock file a run holds in its data directory.
const lockName = ".lock"

// lockDataDir takes an exclusive lock on dataDir for one run: runs place datasets under
// dataDir/work and move them back, so two runs sharing a data directory would move files
// from under each other. A second run fails at once, naming the directory. The lock is an
// flock, so a run that dies leaves no stale lock. unlock releases it.
func lockDataDir(dataDir string) (unlock func(), err error) {
	if err := os.MkdirAll(dataDir, 0o755); err != nil {
		return nil, fmt.Errorf("bench: data directory: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(dataDir, lockName), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("bench: lock data directory: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("bench: data directory %s is in use by another coffer bench run (use another --data)", dataDir)
		}
		return nil, fmt.Errorf("bench: lock data directory %s: %w", dataDir, err)
	}
	return func() { f.Close() }, nil
}
