package bench

import (
	"os"
	"runtime"
	"strings"
	"testing"
)

// TestCheckDropCaches: --drop-caches is refused up front, naming why, exactly when the
// process cannot write the kernel's knob.
func TestCheckDropCaches(t *testing.T) {
	err := checkDropCaches()
	canWrite := runtime.GOOS == "linux" && os.Geteuid() == 0
	if canWrite && err != nil {
		t.Fatalf("root on Linux: %v", err)
	}
	if !canWrite && (err == nil || !strings.Contains(err.Error(), "--drop-caches needs root on Linux")) {
		t.Fatalf("without root: %v, want an error naming the flag and root", err)
	}
}
