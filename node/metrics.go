package node

import (
	"context"
	"github.com/cofferhq/coffer/chunkstore/coord"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/cofferhq/coffer/meta"
	"github.com/cofferhq/coffer/transport"
	"github.com/cofferhq/coffer/transport/authz"
)

// Metrics (docs/operations.md, "Metrics", lists every series). Each node has its own
// registry: the node's figures are read at scrape time by figureCollector; the only
// series updated as things happen are the histograms below.
type nodeMetrics struct {
	reg *prometheus.Registry
	// rpcDuration is the time a handler took per RPC method; rpcErrors counts the RPCs
	// that failed, by method and wire code.
	rpcDuration *prometheus.HistogramVec
	rpcErrors   *prometheus.CounterVec
	// backupDuration is the duration of each backup this meta server committed as
	// leader, as the agent measured it (SnapshotStats.DurationS).
	backupDuration *prometheus.HistogramVec
}

// rpcBuckets span a local Has (well under a millisecond) to a slow batched Put.
func rpcBuckets() []float64 {
	return []float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30}
}

// backupBuckets span one second to a day.
func backupBuckets() []float64 { return prometheus.ExponentialBuckets(1, 4, 9) } // 1 s .. 18 h

// newNodeMetrics builds the node's registry: Go runtime and process collectors, the
// figure collector and the event histograms.
func newNodeMetrics(n *Node) *nodeMetrics {
	m := &nodeMetrics{
		reg: prometheus.NewRegistry(),
		rpcDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "coffer_rpc_duration_seconds", Buckets: rpcBuckets(),
			Help: "Time this node took to serve an RPC, by method (methods outside the authorization table: \"other\").",
		}, []string{"method"}),
		rpcErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "coffer_rpc_errors_total",
			Help: "RPCs this node answered with an error, by method and wire code.",
		}, []string{"method", "code"}),
		backupDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "coffer_backup_duration_seconds", Buckets: backupBuckets(),
			Help: "Duration of each backup this meta server committed as leader (measured by the agent), by status.",
		}, []string{"status"}),
	}
	if n.cfg.Has(RoleMeta) {
		for _, s := range []string{"completed", "partially failed"} {
			m.backupDuration.WithLabelValues(s) // present at zero before the first commit
		}
	}
	m.reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.rpcDuration, m.rpcErrors, m.backupDuration,
		&figureCollector{n: n},
	)
	return m
}

// observeCommit records a committed snapshot (meta server's OnCommit).
func (m *nodeMetrics) observeCommit(s meta.Snapshot) {
	status := s.Stats.Status
	if status == "" {
		status = "completed"
	}
	m.backupDuration.WithLabelValues(status).Observe(max(0, s.Stats.DurationS))
}

// instrument wraps the node's RPC handler: it times every RPC and counts failures.
// Methods are labelled only when the authorization table knows them (checkPeer refuses
// the rest before they get here), so peers cannot grow the label set. Each RPC is logged
// at debug level with a "request" group (a per-node sequence number, method, peer,
// role, duration, wire code), an internal or no-space (disk full) error at warn level;
// bodies never.
func (m *nodeMetrics) instrument(table *authz.Table, h transport.Handler, log *slog.Logger) transport.Handler {
	var seq atomic.Uint64
	return transport.HandlerFunc(func(ctx context.Context, peer transport.Peer, method string, body []byte) ([]byte, error) {
		id := seq.Add(1)
		start := time.Now()
		out, err := h.ServeRPC(ctx, peer, method, body)
		d := time.Since(start)
		label := method
		if _, ok := table.Rule(method); !ok {
			label = "other"
		}
		m.rpcDuration.WithLabelValues(label).Observe(d.Seconds())
		code := transport.CodeOf(err)
		if err != nil {
			m.rpcErrors.WithLabelValues(label, strings.ReplaceAll(code.String(), " ", "_")).Inc()
		}
		level := slog.LevelDebug
		if code == transport.Internal || code == transport.NoSpace { // a full disk needs an operator
			level = slog.LevelWarn
		}
		if log.Enabled(ctx, level) {
			attrs := []any{slog.Group("request", "id", id, "method", method, "peer", peer.Principal, "role", string(peer.Role),
				"duration", d, "code", code.String())}
			if err != nil {
				attrs = append(attrs, "err", err.Error())
			}
			log.Log(ctx, level, "rpc", attrs...)
		}
		return out, err
	})
}

// figureCollector reads the node's Figures at each scrape.
type figureCollector struct{ n *Node }

// figureScrapeTimeout bounds the reading of the figures in one scrape.
const figureScrapeTimeout = 5 * time.Second

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(name, help, labels, nil)
}

// The figure descriptors. NB: immutable, built once at package initialisation and only
// read; each names the Figures field it reports.
var (
	dNodeInfo = desc("coffer_node_info", "Always 1; labels name the node, its roles and failure domain.", "node", "roles", "domain")

	dBackupBytes   = desc("coffer_backup_bytes_total", "Chunk bytes clients wrote through this node's coordinator (chunk.Put, after encryption and compression).")
	dBackupChunks  = desc("coffer_backup_chunks_total", "Chunks clients wrote through this node's coordinator.")
	dDegradedWrite = desc("coffer_degraded_writes_total", "Writes this node's coordinator made around missing nodes, by kind (substitute_shards: shards put on a substitute because their owner was down or failed; reduced_domain: such shards in a failure domain the stripe already used; short_stripes: chunks acknowledged with fewer than k+m shards).", "kind")
	dRestoreBytes  = desc("coffer_restore_bytes_total", "Chunk bytes clients read through this node's coordinator (restore, ls, dump, verify).")
	dRestoreChunks = desc("coffer_restore_chunks_total", "Chunks clients read through this node's coordinator.")

	dAuditRefusals = desc("coffer_audit_refusals_total", "Refused requests this node reported to the audit log.")
	dAuditDropped  = desc("coffer_audit_reports_dropped_total", "Audit reports only logged on this node because too many were in flight.")
	dRevokedReqs   = desc("coffer_revoked_requests_total", "Requests refused because their certificate is revoked.")
	dRevocations   = desc("coffer_revocations", "Entries of the revocation list this node enforces.")
	dRevVersion    = desc("coffer_revocation_list_version", "Version of the revocation list this node enforces (the newest revocation's sequence number).")
	dRevCurrent    = desc("coffer_revocation_list_current", "1 once the node holds the meta leader's current revocation list (until then it serves only cluster nodes).")

	dMapEpoch = desc("coffer_cluster_map_epoch", "Epoch of the cluster map this node holds (0: none yet).")
	dMapNodes = desc("coffer_cluster_nodes", "Chunk nodes of this node's cluster map, by placement state.", "state")
	dMembers  = desc("coffer_gossip_members", "Gossip members as this node sees them, by state.", "state")

	dSegShards     = desc("coffer_segstore_shards", "Live shards in this node's segment store.")
	dSegLive       = desc("coffer_segstore_live_bytes", "Live shard bytes in this node's segment store.")
	dSegFile       = desc("coffer_segstore_file_bytes", "Size of this node's segment files (live and dead records).")
	dSegSegments   = desc("coffer_segstore_segments", "Segment files of this node's segment store.")
	dSegAvailable  = desc("coffer_segstore_capacity_available_bytes", "Bytes still available to the segment store (free space of its file system).")
	dSegDamaged    = desc("coffer_segstore_damaged_records_total", "Damaged records the segment store found since it was opened.")
	dCompactRuns   = desc("coffer_segstore_compactions_total", "Compactions the segment store ran since it was opened.")
	dCompactSegs   = desc("coffer_segstore_compacted_segments_total", "Segment files compaction removed.")
	dCompactCopied = desc("coffer_segstore_compaction_copied_bytes_total", "Bytes compaction copied into the current segment.")
	dCompactFreed  = desc("coffer_segstore_compaction_reclaimed_bytes_total", "Bytes of the segment files compaction removed.")

	dPGs = desc("coffer_pgs", "PGs this node leads (repair leader), by state in its last repair pass.", "state")

	dRepairRunning  = desc("coffer_repair_running", "1 while a repair pass runs on this node.")
	dRepairEpoch    = desc("coffer_repair_map_epoch", "Map epoch of the running or last repair pass.")
	dRepairPGsLed   = desc("coffer_repair_pgs_led", "PGs this node leads in the running or last repair pass.")
	dRepairPGsDone  = desc("coffer_repair_pgs_done", "PGs done in the running repair pass.")
	dRepairPasses   = desc("coffer_repair_passes_total", "Repair passes completed, by kind (normal, deep: a deep scrub).", "kind")
	dRepairShards   = desc("coffer_repair_shards_total", "Shards repair wrote or removed, by action (rebuilt, copied, dropped).", "action")
	dRepairWritten  = desc("coffer_repair_written_bytes_total", "Shard bytes repair wrote.")
	dRepairLastDur  = desc("coffer_repair_last_pass_duration_seconds", "Duration of the last completed repair pass.")
	dRepairUnread   = desc("coffer_repair_unreadable_stripes", "Stripes with fewer than k good shards in the last completed pass.")
	dScrubRunning   = desc("coffer_scrub_deep_running", "1 while a deep scrub pass runs on this node.")
	dScrubFindings  = desc("coffer_scrub_findings_total", "Shards scrub found missing or damaged, by kind (missing, corrupt).", "kind")
	dScrubLastStrip = desc("coffer_scrub_last_deep_stripes", "Stripes checked by the last completed deep scrub pass.")

	dGCSweptBytes  = desc("coffer_gc_reclaimed_bytes_total", "Shard bytes garbage-collection sweep orders deleted on this node.")
	dGCSweptChunks = desc("coffer_gc_swept_chunks_total", "Chunks whose shards garbage-collection sweeps deleted on this node.")
	dGCSweptShards = desc("coffer_gc_swept_shards_total", "Shards garbage-collection sweeps deleted on this node.")
	dGCSpared      = desc("coffer_gc_spared_chunks_total", "Sweep candidates kept because they were written or touched after the cutoff.")

	dRaftState     = desc("coffer_raft_state", "1 for this meta server's Raft state (Leader, Follower, Candidate, Shutdown), 0 for the others.", "state")
	dRaftTerm      = desc("coffer_raft_term", "Raft term.")
	dRaftCommit    = desc("coffer_raft_commit_index", "Raft commit index.")
	dRaftApplied   = desc("coffer_raft_applied_index", "Raft index applied to the state machine.")
	dRaftLastLog   = desc("coffer_raft_last_log_index", "Last Raft log index.")
	dRaftLeaderChg = desc("coffer_raft_leader_changes_total", "Leader elections this meta server observed since it started.")
	dEnrollRefused = desc("coffer_enroll_refusals_total", "Enrollment attempts this meta server refused, by reason (rate_limited, token, invalid).", "reason")
	dGCEpoch       = desc("coffer_gc_epoch", "Current garbage-collection epoch (meta state).")
	dGCRunning     = desc("coffer_gc_running", "1 while a garbage collection is in progress (meta state).")
	dGCLastBytes   = desc("coffer_gc_last_reclaimed_bytes", "Shard bytes the last finished collection swept, cluster-wide (meta state).")
	dGCLastChunks  = desc("coffer_gc_last_swept_chunks", "Chunks the last finished collection swept, cluster-wide (meta state).")
	dGCLastEnded   = desc("coffer_gc_last_end_timestamp_seconds", "Cluster time the last collection ended (0: none yet).")
	dJobs          = desc("coffer_jobs", "Job records the meta state holds (within the job retention), by kind and status; recounted at most every 30 s.", "kind", "status")
	dJobsEnded     = desc("coffer_jobs_ended_total", "Jobs that ended while this meta server led, by kind and status.", "kind", "status")

	dReplBytes     = desc("coffer_replication_bytes_total", "Sealed chunk bytes replication runs copied into this (the target) cluster, by replication job (meta state).", "job")
	dReplChunks    = desc("coffer_replication_chunks_total", "Chunks replication runs copied into this cluster, by replication job (meta state).", "job")
	dReplSnapshots = desc("coffer_replication_snapshots_total", "Snapshot records replication runs imported into this cluster, by replication job (meta state).", "job")
	dReplSuccess   = desc("coffer_replication_last_success_timestamp_seconds", "Cluster time the job's last completed run ended (0: none yet), by replication job (meta state).", "job")
	dReplFailed    = desc("coffer_replication_last_run_failed", "1 when the job's last run failed, by replication job (meta state).", "job")
)

func (c *figureCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{dNodeInfo, dBackupBytes, dBackupChunks, dDegradedWrite, dRestoreBytes, dRestoreChunks,
		dAuditRefusals, dAuditDropped, dRevokedReqs, dRevocations, dRevVersion, dRevCurrent,
		dMapEpoch, dMapNodes, dMembers,
		dSegShards, dSegLive, dSegFile, dSegSegments, dSegAvailable, dSegDamaged, dCompactRuns, dCompactSegs, dCompactCopied, dCompactFreed,
		dPGs, dRepairRunning, dRepairEpoch, dRepairPGsLed, dRepairPGsDone, dRepairPasses, dRepairShards, dRepairWritten,
		dRepairLastDur, dRepairUnread, dScrubRunning, dScrubFindings, dScrubLastStrip,
		dGCSweptBytes, dGCSweptChunks, dGCSweptShards, dGCSpared,
		dRaftState, dRaftTerm, dRaftCommit, dRaftApplied, dRaftLastLog, dRaftLeaderChg, dEnrollRefused,
		dGCEpoch, dGCRunning, dGCLastBytes, dGCLastChunks, dGCLastEnded, dJobs, dJobsEnded,
		dReplBytes, dReplChunks, dReplSnapshots, dReplSuccess, dReplFailed,
	} {
		ch <- d
	}
}

func (c *figureCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(c.n.ctx, figureScrapeTimeout)
	defer cancel()
	f, err := c.n.Figures(ctx)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(dNodeInfo, err)
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
	}
	bit := func(b bool) float64 {
		if b {
			return 1
		}
		return 0
	}
	gauge(dNodeInfo, 1, f.Node, strings.Join(f.Roles, ","), f.Domain)
	counter(dBackupBytes, float64(f.BackupBytes))
	counter(dBackupChunks, float64(f.BackupChunks))
	var dw coord.DegradedWrites
	if c.n.chunks != nil {
		dw = c.n.chunks.Degraded()
	}
	counter(dDegradedWrite, float64(dw.SubstituteShards), "substitute_shards")
	counter(dDegradedWrite, float64(dw.ReducedDomain), "reduced_domain")
	counter(dDegradedWrite, float64(dw.ShortStripes), "short_stripes")
	counter(dRestoreBytes, float64(f.RestoreBytes))
	counter(dRestoreChunks, float64(f.RestoreChunks))
	counter(dAuditRefusals, float64(f.AuditRefusals))
	counter(dAuditDropped, float64(f.AuditDropped))
	counter(dRevokedReqs, float64(f.RevokedRequests))
	gauge(dRevocations, float64(f.Revocations))
	gauge(dRevVersion, float64(f.RevocationVersion))
	gauge(dRevCurrent, bit(f.RevocationCurrent))
	gauge(dMapEpoch, float64(f.MapEpoch))
	for s, v := range f.MapNodes {
		gauge(dMapNodes, float64(v), string(s))
	}
	for s, v := range f.Members {
		gauge(dMembers, float64(v), s)
	}
	if s := f.Shards; s != nil {
		gauge(dSegShards, float64(s.Shards.Shards))
		gauge(dSegLive, float64(s.Bytes))
		gauge(dSegFile, float64(s.FileBytes))
		gauge(dSegSegments, float64(s.Segments))
		gauge(dSegAvailable, float64(s.Capacity))
		counter(dSegDamaged, float64(s.Corrupt))
		counter(dCompactRuns, float64(s.Compact.Runs))
		counter(dCompactSegs, float64(s.Compact.Segments))
		counter(dCompactCopied, float64(s.Compact.Copied))
		counter(dCompactFreed, float64(s.Compact.Reclaimed))
	}
	for s, v := range f.PGs {
		gauge(dPGs, float64(v), s)
	}
	if r := f.Repair; r != nil {
		gauge(dRepairRunning, bit(r.Running))
		gauge(dRepairEpoch, float64(r.Epoch))
		gauge(dRepairPGsLed, float64(r.PGsLed))
		gauge(dRepairPGsDone, float64(r.PGsDone))
		counter(dRepairPasses, float64(r.Passes-r.DeepPasses), "normal")
		counter(dRepairPasses, float64(r.DeepPasses), "deep")
		counter(dRepairShards, float64(r.ShardsRebuilt), "rebuilt")
		counter(dRepairShards, float64(r.ShardsCopied), "copied")
		counter(dRepairShards, float64(r.ShardsDropped), "dropped")
		counter(dRepairWritten, float64(r.BytesWritten))
		last, _ := time.ParseDuration(r.LastPass) // "" before the first pass: 0
		gauge(dRepairLastDur, last.Seconds())
		gauge(dRepairUnread, float64(r.Last.Unreadable))
		gauge(dScrubRunning, bit(r.Running && r.Deep))
		counter(dScrubFindings, float64(r.FoundMissing), "missing")
		counter(dScrubFindings, float64(r.FoundCorrupt), "corrupt")
		gauge(dScrubLastStrip, float64(r.LastDeep.Stripes))
	}
	if g := f.GCSwept; g != nil {
		counter(dGCSweptBytes, float64(g.Bytes))
		counter(dGCSweptChunks, float64(g.Chunks))
		counter(dGCSweptShards, float64(g.Shards))
		counter(dGCSpared, float64(g.Spared))
	}
	if m := f.Meta; m != nil {
		for _, s := range []string{"Leader", "Follower", "Candidate", "Shutdown"} {
			gauge(dRaftState, bit(m.State == s), s)
		}
		gauge(dRaftTerm, float64(m.Term))
		gauge(dRaftCommit, float64(m.CommitIndex))
		gauge(dRaftApplied, float64(m.AppliedIndex))
		gauge(dRaftLastLog, float64(m.LastLogIndex))
		counter(dRaftLeaderChg, float64(m.LeaderChanges))
		for r, v := range m.EnrollRefused {
			counter(dEnrollRefused, float64(v), r)
		}
		gauge(dGCEpoch, float64(m.GC.Epoch))
		gauge(dGCRunning, bit(m.GC.Phase != "" && m.GC.Phase != meta.GCIdle))
		var lastBytes, lastChunks, lastEnded float64
		if l := m.GC.Last; l != nil {
			lastBytes, lastChunks = float64(l.SweptBytes), float64(l.SweptChunks)
			if !l.Ended.IsZero() {
				lastEnded = float64(l.Ended.Unix())
			}
		}
		gauge(dGCLastBytes, lastBytes)
		gauge(dGCLastChunks, lastChunks)
		gauge(dGCLastEnded, lastEnded)
		for jc, v := range m.Jobs {
			gauge(dJobs, float64(v), jc.Kind, jc.Status)
		}
		for jc, v := range m.JobsEnded {
			counter(dJobsEnded, float64(v), jc.Kind, jc.Status)
		}
	}
	if c.n.meta != nil {
		rs, err := c.n.meta.LocalReplications()
		if err != nil {
			ch <- prometheus.NewInvalidMetric(dReplBytes, err)
		}
		for _, r := range rs {
			job := r.Name
			counter(dReplBytes, float64(r.State.Bytes), job)
			counter(dReplChunks, float64(r.State.Chunks), job)
			counter(dReplSnapshots, float64(r.State.Snapshots), job)
			var last float64
			if !r.State.LastSuccess.IsZero() {
				last = float64(r.State.LastSuccess.Unix())
			}
			gauge(dReplSuccess, last, job)
			gauge(dReplFailed, bit(r.State.LastStatus == meta.JobFailed), job)
		}
	}
}
