package main

import (
	"context"
	"flag"
	"log/slog"
	"os"
	"time"

	"github.com/cofferhq/coffer/client/agent"
	"github.com/cofferhq/coffer/client/agentmetrics"
	"github.com/cofferhq/coffer/meta"
	"github.com/cofferhq/coffer/transport"
	"github.com/cofferhq/coffer/transport/metricsrv"
)

func agentRunSpec() *cmdSpec {
	return &cmdSpec{
		name:  "agent run",
		short: "run the backup agent daemon: scheduled backups by the cluster's policies",
		long: `Runs until stopped (SIGTERM or SIGINT): fetches the backup policies that apply
to this host (by its enrolled name or its labels; see "coffer admin policy
create"), re-reads them every --poll and when they change reschedules, and runs
each policy at its cron schedule plus a random delay (at most --max-jitter and
a tenth of the time between two runs), into this host's vault (--vault or the
config's). Each run is a job in the cluster ("coffer jobs"): opened when it
starts, closed completed, partially failed or failed (with the reason, such as
a failing pre-hook and its output) when it ends. A transient failure (the
cluster or a node unreachable) is retried up to --retries times, waiting
--backoff, then twice as long each time. Two jobs of one policy never run at
once: a run that comes due while the previous one still runs is skipped and
logged. A heartbeat every --heartbeat keeps the running jobs alive; when the
agent dies, the meta leader marks its running job failed after the cluster's
jobs timeout (default 5m).

A policy's verify schedules (--verify-schedule, --verify-full of "coffer admin
policy") run here too, as jobs of kind verify: the chunks of the policy's
snapshots (tagged policy-NAME) are read back, decrypted and checked against their
IDs (a sample of each snapshot made since the last completed verify, or every
chunk); the report is kept on the job, and a bad chunk fails it (a verify-failed
alert). A verify and a backup of one policy may run at once; two runs of one
schedule never do.

It needs a backup-agent certificate (coffer agent enroll) and the vault
passphrase without a terminal: --passphrase-file FILE or COFFER_PASSPHRASE.
Logs go to stderr (info level; -q: errors only; --log-format json: one JSON
object per line). With --metrics-listen ADDR it serves Prometheus metrics of its
jobs at http://ADDR/metrics (off by default). Its backups run at the scheduling
of "coffer backup --sched" (--sched, default batch). A systemd unit for it is in
deploy/systemd.`,
		examples: []string{
			"coffer agent run --passphrase-file /etc/coffer/passphrase",
			"coffer --config /etc/coffer/agent.json agent run --poll 1m --max-jitter 10m",
			"coffer agent run --metrics-listen 127.0.0.1:9451",
		},
		new: func() command { return &agentRunCmd{} },
	}
}

type agentRunCmd struct {
	cache                      cacheFlags
	sched                      string
	poll, heartbeat, maxJitter time.Duration
	backoff                    time.Duration
	retries                    int
	metricsListen              string
}

func (c *agentRunCmd) addFlags(fs *flag.FlagSet) {
	c.cache.add(fs, "use no local cache (trees are downloaded and the vault key derived at start)")
	fs.DurationVar(&c.poll, "poll", agent.DefaultPoll, "re-read the policies every `D`")
	fs.DurationVar(&c.heartbeat, "heartbeat", agent.DefaultHeartbeat, "send a heartbeat every `D`")
	fs.DurationVar(&c.maxJitter, "max-jitter", agent.DefaultMaxJitter, "delay each scheduled run by a random time of at most `D` (0: none)")
	fs.IntVar(&c.retries, "retries", agent.DefaultRetries, "retry a transient failure `N` times")
	fs.DurationVar(&c.backoff, "backoff", agent.DefaultBackoff, "wait `D` before the first retry (doubling)")
	fs.StringVar(&c.sched, "sched", schedBatch, "CPU scheduling `POLICY` of the daemon: batch or normal (see coffer backup --help)")
	fs.StringVar(&c.metricsListen, "metrics-listen", "", "serve Prometheus metrics at http://`ADDR`/metrics (host:port; off by default)")
}

func (c *agentRunCmd) run(ctx context.Context, a *app, args []string) error {
	spec := agentRunSpec()
	if len(args) > 0 {
		return usagef(spec, "agent run takes no arguments, got %q", args[0])
	}
	if c.poll <= 0 || c.heartbeat <= 0 || c.retries < 0 || c.backoff <= 0 || c.maxJitter < 0 {
		return usagef(spec, "--poll, --heartbeat and --backoff must be positive, --retries and --max-jitter not negative")
	}
	if err := checkSched(c.sched); err != nil {
		return usagef(spec, "--sched: %v", err)
	}
	a.tuneForUpload("agent", c.sched)
	s, ag, err := openAgent(ctx, a, c.cache.session(a))
	if err != nil {
		return err
	}
	defer s.Close()
	defer ag.Close()
	if s.role != transport.RoleAgent && s.role != transport.RoleAdmin {
		return plainf(nil, "agent run needs a backup-agent certificate (this one's role is %s)", s.role)
	}
	level := slog.LevelInfo
	if a.g.quiet {
		level = slog.LevelError
	}
	var log *slog.Logger
	if a.g.logFormat == logFormatJSON {
		log = slog.New(slog.NewJSONHandler(a.stderr, &slog.HandlerOptions{Level: level, ReplaceAttr: redactSecrets})).
			With("component", "agent")
	} else {
		log = slog.New(slog.NewTextHandler(a.stderr, &slog.HandlerOptions{Level: level}))
	}
	var jobs meta.JobService = s.meta
	if c.metricsListen != "" {
		m := agentmetrics.New()
		jobs = m.WrapJobs(s.meta)
		srv, err := metricsrv.Start(c.metricsListen, m.Registry(), log)
		if err != nil {
			return usagef(spec, "--metrics-listen: %v", err)
		}
		defer srv.Close(context.WithoutCancel(ctx))
		log.Info("serving metrics", "url", "http://"+srv.Addr()+metricsrv.Path)
	}
	hostname, _ := os.Hostname()
	jitter := c.maxJitter
	if jitter == 0 {
		jitter = -1 // none
	}
	retries := c.retries
	if retries == 0 {
		retries = -1 // none
	}
	runner := agent.BackupRunner{Agent: ag, Locker: s.meta, Vault: s.vault, Output: a.stderr, Now: a.now}
	verifier := agent.ChunkVerifier{Agent: ag, Jobs: jobs}
	d, err := agent.New(agent.Config{Jobs: jobs, Run: runner.Run, Verify: verifier.Verify, Hostname: hostname, Version: version, Vault: s.vault,
		Logger: log, Poll: c.poll, Heartbeat: c.heartbeat, MaxJitter: jitter, Retries: retries, Backoff: c.backoff})
	if err != nil {
		return err
	}
	log.Info("agent started", "vault", s.vault, "version", version)
	return d.Run(ctx)
}

// recordManualJob opens a job for a manual backup; on failure it warns and returns
// nil (the backup runs unrecorded: job records must not stop a backup).
func recordManualJob(ctx context.Context, a *app, s *session) *meta.Job {
	st := meta.JobStart{Trigger: meta.TriggerManual, Vault: s.vault, Version: version}
	if s.role != transport.RoleAgent {
		st.Host = s.agent.Host // an admin backs up as the machine's host name
		if meta.ValidateAgentName(st.Host) != nil {
			return nil
		}
	}
	j, err := s.meta.StartJob(ctx, st)
	if err != nil {
		a.logger().Warn("backup not recorded as a job", "err", err)
		return nil
	}
	return &j
}

// finishManualJob records the end of a manual backup's job (no-op for nil).
func finishManualJob(ctx context.Context, a *app, s *session, j *meta.Job, r meta.JobReport) {
	if j == nil {
		return
	}
	r.ID, r.Final, r.Attempts = j.ID, true, 1
	if _, err := agent.Report(context.WithoutCancel(ctx), s.meta, r, time.Second); err != nil {
		a.logger().Warn("backup's job end not recorded", "job", j.ID, "err", err)
	}
}
