package main

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"

	"golang.org/x/sys/unix"
)

// CPU scheduling of an upload on the host's budget (docs/benchmarks.md, "2026-12-07
// (eleventh session)").
//
// An upload is clocked by acknowledgements: quic-go sends a connection's packets from
// its own goroutines as the cluster's ACKs open the congestion window. With as many Ps
// (GOMAXPROCS) as the CPUs the agent may use, compression and hashing hold every P, and
// the Go scheduler looks at the network only when its run queues are empty or every 10
// ms (sysmon): the agent computes in bursts while its packets and ACKs wait, and the
// cluster waits for them. So an upload runs with one P more than those CPUs (its
// chunking and sealing workers stay at the CPU count) and its threads at the kernel's
// SCHED_BATCH policy, under which a waking thread does not preempt a running one (the
// agent's own or the host's): the spare P's thread takes the network at the end of the
// computing thread's time slice rather than on every packet. On one pinned core this
// took 15% off large-file backups and no agent CPU; the spare P alone took 10% off for
// 10% more CPU (the context switches of preempting on every wake).

// Scheduling policies of --sched.
const (
	schedBatch  = "batch"  // SCHED_BATCH and one spare P (the default)
	schedNormal = "normal" // the process as started
)

// errUnknownSched is returned by checkSched for a policy it does not know.
var errUnknownSched = errors.New("unknown scheduling policy")

// checkSched returns an error naming policy unless it is one of --sched's values.
func checkSched(policy string) error {
	if policy == schedBatch || policy == schedNormal {
		return nil
	}
	return fmt.Errorf("%w %q (want %s or %s)", errUnknownSched, policy, schedBatch, schedNormal)
}

// processTuner applies a scheduling policy to the whole coffer process. main makes one
// from the Ps the runtime chose at start (the CPUs of the process's affinity and cgroup
// quota); tests run commands in their own process and have none (app.tune is nil).
type processTuner struct {
	cpus   int                     // GOMAXPROCS at process start
	getenv func(key string) string // GOMAXPROCS set by the user is left alone
}

// newProcessTuner returns the tuner of this process; call it before anything changes
// GOMAXPROCS.
func newProcessTuner(getenv func(string) string) processTuner {
	return processTuner{cpus: runtime.GOMAXPROCS(0), getenv: getenv}
}

// tuneForUpload applies --sched's policy to the process for cmd (nil a.tune: left
// alone); what cannot be set is logged as a warning, and the command goes on.
func (a *app) tuneForUpload(cmd, policy string) {
	if a.tune == nil {
		return
	}
	if err := a.tune.forUpload(policy); err != nil {
		a.logger().Warn(cmd+" runs at the scheduling it was started with", "err", err)
	}
}

// forUpload applies policy (checkSched's values) for an upload: for batch, one P more
// than cpus unless the user set GOMAXPROCS, and SCHED_BATCH for every thread of the
// process that runs at the normal policy (a policy the user chose, such as SCHED_IDLE
// or a real-time one, is kept; the nice value is kept). Threads created later inherit
// the policy. normal changes nothing. The error, if any, says what could not be set;
// the process is still fine to use.
func (t processTuner) forUpload(policy string) error {
	if policy != schedBatch {
		return nil
	}
	if t.getenv("GOMAXPROCS") == "" && t.cpus > 0 {
		runtime.GOMAXPROCS(t.cpus + 1)
	}
	if err := setBatchThreads(); err != nil {
		return fmt.Errorf("SCHED_BATCH: %w", err)
	}
	return nil
}

// setBatchThreads moves every thread of this process that runs at SCHED_NORMAL to
// SCHED_BATCH, keeping its nice value. It passes over /proc/self/task until a pass
// changes nothing, so that a thread cloned from an unchanged one meanwhile is caught;
// threads that exit meanwhile are skipped. Lowering one's own threads' priority needs
// no privilege.
func setBatchThreads() error {
	for pass := 0; pass < 8; pass++ {
		ents, err := os.ReadDir("/proc/self/task")
		if err != nil {
			return err
		}
		changed := 0
		for _, e := range ents {
			tid, err := strconv.Atoi(e.Name())
			if err != nil {
				continue
			}
			attr, err := unix.SchedGetAttr(tid, 0)
			if errors.Is(err, unix.ESRCH) {
				continue
			}
			if err != nil {
				return fmt.Errorf("thread %d: %w", tid, err)
			}
			if attr.Policy != unix.SCHED_NORMAL {
				continue
			}
			attr.Policy = unix.SCHED_BATCH
			attr.Size = unix.SizeofSchedAttr
			if err := unix.SchedSetAttr(tid, attr, 0); err != nil && !errors.Is(err, unix.ESRCH) {
				return fmt.Errorf("thread %d: %w", tid, err)
			}
			changed++
		}
		if changed == 0 {
			return nil
		}
	}
	return errors.New("threads kept appearing at the normal policy")
}
