package node

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/cofferhq/coffer/meta"
	"github.com/cofferhq/coffer/node/replicate"
)

// replicationTick is how often the meta leader looks for replication runs that are due
// (a schedule's time, or a `coffer admin replicate run`).
const replicationTick = time.Second

// replicationReport is how often a running replication reports its progress to its job
// record (which also keeps the leader from expiring it as silent).
const replicationReport = 5 * time.Second

// replicator runs the replication jobs of this meta server while it leads (issue 19,
// part 2): the leader holds the jobs' credentials (in Raft) and the coordinator that
// stores the copied chunks, so no other process is involved.
type replicator struct {
	n       *Node
	mu      sync.Mutex
	running map[string]context.CancelFunc // job name → cancel of its run
	wg      sync.WaitGroup
}

// loop starts due runs while this server leads and cancels them when it stops leading.
// Owned by New; stops when ctx is cancelled.
func (r *replicator) loop(ctx context.Context) {
	t := time.NewTicker(replicationTick)
	defer t.Stop()
	defer r.wg.Wait()
	for {
		select {
		case <-ctx.Done():
			r.cancelAll()
			return
		case <-t.C:
		}
		if !r.n.meta.IsLeader() {
			r.cancelAll()
			continue
		}
		jobs, err := r.n.meta.Replications()
		if err != nil {
			continue
		}
		now := r.n.meta.ClusterNow()
		for _, j := range jobs {
			if trigger, due := replicationDue(j, now); due {
				r.start(ctx, j, trigger)
			}
		}
	}
}

// replicationDue reports whether job j should run at cluster time now, and why: an
// admin asked (a request after the last run) or its schedule's next time after the last
// run (or its creation) has come.
func replicationDue(j meta.Replication, now time.Time) (string, bool) {
	if j.RunRequested.After(j.State.LastRun) {
		return meta.TriggerManual, true
	}
	if j.Schedule == "" || now.IsZero() {
		return "", false
	}
	sched, err := meta.ParseSchedule(j.Schedule)
	if err != nil {
		return "", false
	}
	from := j.Created
	if j.State.LastRun.After(from) {
		from = j.State.LastRun
	}
	return meta.TriggerSchedule, !sched.Next(from).After(now)
}

func (r *replicator) cancelAll() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, cancel := range r.running {
		cancel()
	}
}

// start runs job j in the background unless it runs already.
func (r *replicator) start(ctx context.Context, j meta.Replication, trigger string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.running[j.Name]; ok {
		return
	}
	rctx, cancel := context.WithCancel(ctx)
	r.running[j.Name] = cancel
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		defer func() {
			cancel()
			r.mu.Lock()
			delete(r.running, j.Name)
			r.mu.Unlock()
		}()
		if _, err := r.n.RunReplication(rctx, j.Name, trigger, ReplicationRunOptions{}); err != nil {
			r.n.log.Warn("replication run failed", "job", j.Name, "vault", j.Vault, "err", err)
		}
	}()
}

// ReplicationRunOptions tune one replication run (tests).
type ReplicationRunOptions struct {
	// Progress, when set, sees the run's totals after each stored batch (tests interrupt
	// runs with it).
	Progress func(replicate.Stats)
	// Batch, when non-zero, is how many chunks are copied at a time (default 64).
	Batch int
}

// RunReplication runs replication job name once on this node, which must lead the meta
// group, recording the run as a job (kind replication) and in the job's state. The
// run's figures are returned, also on error.
func (n *Node) RunReplication(ctx context.Context, name, trigger string, ro ReplicationRunOptions) (replicate.Stats, error) {
	if n.meta == nil {
		return replicate.Stats{}, fmt.Errorf("%w: node: replication runs on a meta server", meta.ErrInvalid)
	}
	j, err := n.meta.Replication(ctx, name)
	if err != nil {
		return replicate.Stats{}, err
	}
	job, err := n.meta.StartJob(ctx, meta.JobStart{Host: meta.ReplicationHost, Policy: j.Name, Vault: j.Vault, Kind: meta.JobReplication, Trigger: trigger})
	if err != nil {
		return replicate.Stats{}, fmt.Errorf("node: replication %s: start job: %w", name, err)
	}
	if err := n.meta.RecordReplicationRun(ctx, meta.ReplicationRun{Name: name, Job: job.ID}); err != nil {
		n.log.Warn("cannot record a replication run's start", "job", name, "err", err)
	}
	log := n.log.With("replication", name, "job", job.ID)
	log.Info("replication run started", "vault", j.Vault, "source", j.Source, "trigger", trigger)
	var last time.Time
	stats := func(st replicate.Stats) meta.JobStats {
		return meta.JobStats{BytesAdded: st.Bytes, ChunksAdded: st.Chunks, Snapshots: st.Snapshots}
	}
	o := replicate.Options{LimitRate: j.LimitRate, Batch: ro.Batch, Logger: log, OnProgress: func(st replicate.Stats) {
		if ro.Progress != nil {
			ro.Progress(st)
		}
		if now := n.deps.Now(); now.Sub(last) >= replicationReport {
			last = now
			if _, err := n.meta.ReportJob(ctx, meta.JobReport{ID: job.ID, Stats: stats(st)}); err != nil {
				log.Debug("cannot report replication progress", "err", err)
			}
		}
	}}
	var st replicate.Stats
	src, err := replicate.Dial(ctx, j, n.log.With("component", "replication"))
	if err == nil {
		st, err = replicate.Run(ctx, j, src, n.chunks, n.meta, o)
		_ = src.Close()
	}
	status, msg := meta.JobCompleted, ""
	if err != nil {
		status, msg = meta.JobFailed, err.Error()
	}
	// The final records are written even when ctx was cancelled (an interrupted run).
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	if _, rerr := n.meta.ReportJob(fctx, meta.JobReport{ID: job.ID, Final: true, Status: status, Error: msg, Stats: stats(st)}); rerr != nil {
		log.Warn("cannot record a replication run's end", "err", rerr)
	}
	if rerr := n.meta.RecordReplicationRun(fctx, meta.ReplicationRun{Name: name, Job: job.ID, Final: true, Status: status, Error: msg,
		Bytes: st.Bytes, Chunks: st.Chunks}); rerr != nil {
		log.Warn("cannot record a replication run's end in its job", "err", rerr)
	}
	log.Info("replication run ended", "status", status, "bytes", st.Bytes, "chunks", st.Chunks, "snapshots", st.Snapshots,
		"strengthened", st.Strengthened, "skipped", st.Skipped, "err", msg)
	return st, err
}
