package bench

import (
	"fmt"
	"os"
	"syscall"
)

// dropCachesFile is the kernel's knob: writing "1" drops the clean page cache.
const dropCachesFile = "/proc/sys/vm/drop_caches"

// checkDropCaches fails, before any scenario runs, when the page cache cannot be dropped
// (not root, or not Linux).
func checkDropCaches() error {
	f, err := os.OpenFile(dropCachesFile, os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("bench: --drop-caches needs root on Linux: %w", err)
	}
	return f.Close()
}

// dropCaches writes dirty data out and drops the clean page cache. On the machine of
// docs/benchmarks.md, creating files right after a large tree was removed ran several times
// slower until the page cache was dropped, so a restore's time depended on what the
// scenario before it had deleted; dropping the cache gives every tool the same start.
func dropCaches() error {
	syscall.Sync()
	if err := os.WriteFile(dropCachesFile, []byte("1"), 0); err != nil {
		return fmt.Errorf("bench: drop caches: %w", err)
	}
	return nil
}
