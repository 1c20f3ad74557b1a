package profenv

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestProfileAndTraceFiles: with COFFER_CPUPROFILE and COFFER_TRACE set, the stop function
// writes a CPU profile (gzip) and an execution trace ("go 1.x trace" header); a path that
// cannot be created is a warning naming the variable, and nothing is written.
func TestProfileAndTraceFiles(t *testing.T) {
	dir := t.TempDir()
	env := map[string]string{
		CPUProfile: filepath.Join(dir, "cpu.pprof"),
		Trace:      filepath.Join(dir, "run.trace"),
	}
	var warn bytes.Buffer
	stop := Start(func(k string) string { return env[k] }, &warn, "cofferd")
	sum := 0
	for i := range 1 << 20 {
		sum += i
	}
	stop()
	if sum == 0 {
		t.Fatal("no work done")
	}
	prof, err := os.ReadFile(env[CPUProfile])
	if err != nil || len(prof) < 2 || prof[0] != 0x1f || prof[1] != 0x8b {
		t.Fatalf("CPU profile: %d bytes, %v; want a gzip file", len(prof), err)
	}
	tr, err := os.ReadFile(env[Trace])
	if err != nil || !bytes.HasPrefix(tr, []byte("go 1.")) {
		t.Fatalf("trace: %d bytes, %v; want a Go execution trace", len(tr), err)
	}

	bad := map[string]string{Trace: filepath.Join(dir, "missing", "run.trace")}
	stop = Start(func(k string) string { return bad[k] }, &warn, "cofferd")
	stop()
	if !strings.Contains(warn.String(), "cofferd: warning: "+Trace) {
		t.Fatalf("warnings %q do not name %s", warn.String(), Trace)
	}
	if _, err := os.Stat(bad[Trace]); !os.IsNotExist(err) {
		t.Fatalf("a trace under a missing directory: %v, want none written", err)
	}
}
