package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestCheckSched(t *testing.T) {
	for _, ok := range []string{"batch", "normal"} {
		if err := checkSched(ok); err != nil {
			t.Errorf("checkSched(%q) = %v", ok, err)
		}
	}
	err := checkSched("fast")
	if !errors.Is(err, errUnknownSched) || !strings.Contains(err.Error(), `"fast"`) {
		t.Fatalf("checkSched(fast) = %v, want errUnknownSched naming it", err)
	}
}

// A bad --sched is a usage error, given before anything is read or connected.
func TestBackupRejectsUnknownSched(t *testing.T) {
	var out, errb bytes.Buffer
	env := func(k string) string {
		if k == "COFFER_CONFIG" {
			return "/nonexistent/coffer.yaml"
		}
		return ""
	}
	code := run(context.Background(), []string{"backup", "--sched", "realtime", t.TempDir()}, strings.NewReader(""), &out, &errb, env)
	if code != exitUsage {
		t.Fatalf("exit %d, want %d (usage); stderr: %s", code, exitUsage, errb.String())
	}
	if !strings.Contains(errb.String(), `--sched: unknown scheduling policy "realtime"`) {
		t.Fatalf("stderr does not name the bad policy: %s", errb.String())
	}
}

// schedReport is what the helper process prints: its Ps before and after forUpload and
// the policy of every thread, including threads created after it.
type schedReport struct {
	CPUs     int
	Procs    int
	Err      string
	Policies map[int]uint32
}

// TestSchedHelperProcess is the body of the child processes of TestForUpload (it
// changes its whole process's scheduling, which a test must not do to the test binary
// others share); it does nothing in a plain test run.
func TestSchedHelperProcess(t *testing.T) {
	policy := os.Getenv("COFFER_SCHED_HELPER")
	if policy == "" {
		t.Skip("helper process of TestForUpload")
	}
	tuner := newProcessTuner(os.Getenv)
	rep := schedReport{CPUs: tuner.cpus, Policies: map[int]uint32{}}
	if err := tuner.forUpload(policy); err != nil {
		rep.Err = err.Error()
	}
	rep.Procs = runtime.GOMAXPROCS(0)
	// Threads created after the change: goroutines locked to threads of their own.
	release := make(chan struct{})
	locked := make(chan struct{})
	for range 4 {
		go func() {
			runtime.LockOSThread()
			locked <- struct{}{}
			<-release
		}()
	}
	for range 4 {
		<-locked
	}
	ents, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		tid, _ := strconv.Atoi(e.Name())
		attr, err := unix.SchedGetAttr(tid, 0)
		if err != nil {
			continue // exited
		}
		rep.Policies[tid] = attr.Policy
	}
	close(release)
	if err := json.NewEncoder(os.Stdout).Encode(rep); err != nil {
		t.Fatal(err)
	}
}

func runSchedHelper(t *testing.T, env ...string) schedReport {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestSchedHelperProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), env...)
	if !strings.Contains(strings.Join(env, " "), "GOMAXPROCS=") {
		cmd.Env = append(cmd.Env, "GOMAXPROCS=") // the runtime's own choice
	}
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("helper: %v: %s", err, out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(line, "{") {
			var rep schedReport
			if err := json.Unmarshal([]byte(line), &rep); err != nil {
				t.Fatal(err)
			}
			return rep
		}
	}
	t.Fatalf("helper printed no report: %s", out)
	return schedReport{}
}

func TestForUpload(t *testing.T) {
	t.Run("batch", func(t *testing.T) {
		rep := runSchedHelper(t, "COFFER_SCHED_HELPER=batch")
		if rep.Err != "" {
			t.Fatalf("forUpload: %s", rep.Err)
		}
		if rep.Procs != rep.CPUs+1 {
			t.Errorf("GOMAXPROCS %d after forUpload, want %d (one spare P)", rep.Procs, rep.CPUs+1)
		}
		if len(rep.Policies) < 5 {
			t.Fatalf("only %d threads seen", len(rep.Policies))
		}
		for tid, p := range rep.Policies {
			if p != unix.SCHED_BATCH {
				t.Errorf("thread %d at policy %d, want SCHED_BATCH (%d)", tid, p, unix.SCHED_BATCH)
			}
		}
	})
	t.Run("normal", func(t *testing.T) {
		rep := runSchedHelper(t, "COFFER_SCHED_HELPER=normal")
		if rep.Procs != rep.CPUs {
			t.Errorf("GOMAXPROCS %d, want %d (unchanged)", rep.Procs, rep.CPUs)
		}
		for tid, p := range rep.Policies {
			if p != unix.SCHED_NORMAL {
				t.Errorf("thread %d at policy %d, want SCHED_NORMAL", tid, p)
			}
		}
	})
	t.Run("user's GOMAXPROCS kept", func(t *testing.T) {
		rep := runSchedHelper(t, "COFFER_SCHED_HELPER=batch", "GOMAXPROCS=3")
		if rep.CPUs != 3 || rep.Procs != 3 {
			t.Errorf("GOMAXPROCS %d -> %d, want 3 kept", rep.CPUs, rep.Procs)
		}
	})
}
