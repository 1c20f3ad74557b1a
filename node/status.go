package node

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/cofferhq/coffer/meta"
	"github.com/cofferhq/coffer/node/statuspage"
	"github.com/cofferhq/coffer/placement"
	"github.com/cofferhq/coffer/transport"
	"github.com/cofferhq/coffer/transport/pki"
	"github.com/cofferhq/coffer/transport/wire"
)

// Status page defaults.
const (
	defaultStatusSample = time.Minute
	// statusHistory is the samples the page's charts keep: a day at the default interval.
	statusHistory = 1440
	// statusNodeTimeout bounds each node's "node.Status" answer; statusParallel the
	// calls in flight.
	statusNodeTimeout = 2 * time.Second
	statusParallel    = 16
	// What the page lists: audit entries, the job timeline's window and jobs, alerts
	// shown and alerts scanned for anomaly flags.
	statusAuditEntries = 25
	statusJobWindow    = 24 * time.Hour
	statusJobs         = 500
	statusAlertRows    = 20
	statusAlertScan    = 500
)

// validateStatus checks the status page settings: a loopback listener must be bound to
// a loopback IP, since it asks for no certificate.
func (c Config) validateStatus() error {
	if c.StatusSampleInterval < 0 || (c.StatusSampleInterval > 0 && c.StatusSampleInterval < time.Second) {
		return fmt.Errorf("status_sample_interval %s: want at least 1s (0 means %s)", c.StatusSampleInterval, defaultStatusSample)
	}
	if c.StatusListen == "" {
		if c.StatusLoopback {
			return errors.New("status_loopback is set but status_listen is empty")
		}
		return nil
	}
	host, _, err := net.SplitHostPort(c.StatusListen)
	if err != nil {
		return fmt.Errorf("status_listen %q: %v", c.StatusListen, err)
	}
	if c.StatusLoopback {
		ip := net.ParseIP(host)
		if ip == nil || !ip.IsLoopback() {
			return fmt.Errorf("status_listen %q: a plain (status_loopback) listener must be on a loopback IP such as 127.0.0.1 or [::1]; elsewhere leave status_loopback off and reach the page over HTTPS with an admin certificate", c.StatusListen)
		}
	}
	return nil
}

// statusPage is a node's status page: its listener, server and sample history.
type statusPage struct {
	srv     *http.Server
	ln      net.Listener
	history *statuspage.History
	every   time.Duration
}

// startStatus serves the status page on cfg.StatusListen and starts sampling. Owned by
// New; the server is closed by close.
func (n *Node) startStatus(ctx context.Context, id *pki.Identity) error {
	page, err := statuspage.NewPage()
	if err != nil {
		return fmt.Errorf("node: status page: %w", err)
	}
	every := n.cfg.StatusSampleInterval
	if n.deps.StatusSample > 0 {
		every = n.deps.StatusSample
	}
	if every == 0 {
		every = defaultStatusSample
	}
	sp := &statusPage{history: statuspage.NewHistory(statusHistory), every: every}
	ln, err := net.Listen("tcp", n.cfg.StatusListen)
	if err != nil {
		return fmt.Errorf("node: status page: %w", err)
	}
	h := &statuspage.Handler{Page: page, Gather: n.statusView, Authorize: n.authorizeStatus}
	if !n.cfg.StatusLoopback {
		tc := id.ServerTLS("http/1.1")
		ln = tls.NewListener(ln, tc)
	}
	sp.ln = ln
	sp.srv = &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       time.Minute,
		// Failed handshakes (a browser without an admin certificate) are routine: debug.
		ErrorLog:    slog.NewLogLogger(n.log.With("component", "statuspage").Handler(), slog.LevelDebug),
		BaseContext: func(net.Listener) context.Context { return ctx },
	}
	n.status = sp
	n.wg.Add(2)
	go func() {
		defer n.wg.Done()
		if err := sp.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			n.log.Error("status page stopped", "err", err)
		}
	}()
	go func() {
		defer n.wg.Done()
		n.sampleStatus(ctx)
	}()
	scheme := "https (admin certificates)"
	if n.cfg.StatusLoopback {
		scheme = "http (loopback)"
	}
	n.log.Info("status page", "addr", ln.Addr().String(), "scheme", scheme)
	return nil
}

// StatusAddr returns the status page's bound address, or "" when the node serves none.
func (n *Node) StatusAddr() string {
	if n.status == nil {
		return ""
	}
	return n.status.ln.Addr().String()
}

// closeStatus stops the status page's server (idempotent through close).
func (n *Node) closeStatus() error {
	if n.status == nil {
		return nil
	}
	if err := n.status.srv.Close(); err != nil {
		return fmt.Errorf("node: status page: %w", err)
	}
	return nil
}

// authorizeStatus admits a request to the status page: on the loopback listener one from
// a loopback address; on the HTTPS listener one with a verified admin client
// certificate that no revocation names, checked as a call of node.Status (what the page
// shows) is: the node must hold a current revocation list.
func (n *Node) authorizeStatus(r *http.Request) error {
	if n.cfg.StatusLoopback {
		host, _, err := net.SplitHostPort(r.RemoteAddr)
		if ip := net.ParseIP(host); err != nil || ip == nil || !ip.IsLoopback() {
			return fmt.Errorf("node %s: the plain status listener serves loopback clients only, not %s", n.cfg.ID, r.RemoteAddr)
		}
		return nil
	}
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		return fmt.Errorf("node %s: the status page needs an admin client certificate", n.cfg.ID)
	}
	var addr net.Addr
	if a, err := net.ResolveTCPAddr("tcp", r.RemoteAddr); err == nil {
		addr = a
	}
	peer := pki.PeerFromTLS(*r.TLS, addr)
	err := n.checkPeer(r.Context(), peer, methodStatus)
	if err == nil && peer.Role != transport.RoleAdmin {
		err = fmt.Errorf("node %s: %s %q may not see the status page (admin certificates only)", n.cfg.ID, peer.Role, peer.Principal)
	}
	if err != nil {
		n.log.Warn("status page refused", "peer", peer.Principal, "role", peer.Role, "addr", r.RemoteAddr, "err", err)
		return err
	}
	return nil
}

// sampleStatus adds a sample to the page's history every interval until ctx ends; until
// the node has a cluster map it tries every second (or every interval, if shorter).
func (n *Node) sampleStatus(ctx context.Context) {
	retry := min(time.Second, n.status.every)
	for {
		wait := retry
		if m := n.Map(); m != nil {
			rs, _ := n.metaC.RaftStatus(ctx) // without it the configured meta servers are asked
			rows := n.statusNodes(ctx, *m, rs)
			n.status.history.Add(sampleOf(n.deps.Now(), rows))
			wait = n.status.every
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// sampleOf sums the answering nodes' figures.
func sampleOf(now time.Time, rows []statuspage.NodeRow) statuspage.Sample {
	s := statuspage.Sample{Time: now}
	for _, r := range rows {
		if !r.Up {
			s.NodesDown++
			continue
		}
		s.NodesUp++
		s.Used += r.Bytes
		s.Capacity += r.Capacity
		s.RepairBytes += r.RepairBytes
	}
	return s
}

// statusView gathers the page: Raft, the map, every node's status, PG health, the
// history, and the audit log where this node keeps one. A section that fails carries
// its error; the others still show.
func (n *Node) statusView(ctx context.Context) statuspage.View {
	now := n.deps.Now()
	v := statuspage.View{Node: n.cfg.ID, Generated: now, SampleEvery: n.status.every, History: n.status.history.Samples()}
	rs, err := n.metaC.RaftStatus(ctx)
	if err != nil {
		v.RaftError = err.Error()
	}
	v.Raft = rs
	m, err := n.metaC.ClusterMap(ctx)
	if err != nil {
		if cur := n.Map(); cur != nil {
			m, err = *cur, nil // the last map this node read
		}
	}
	if err != nil {
		v.NodeError = fmt.Sprintf("no cluster map: %v", err)
		v.PGs.Error = v.NodeError
	} else {
		v.MapEpoch, v.PGCount, v.Profile = m.Epoch, m.PGCount, fmt.Sprintf("%d+%d", m.Profile.K, m.Profile.M)
		v.Nodes = n.statusNodes(ctx, m, rs)
		if reps, err := n.metaC.PGHealth(ctx); err != nil {
			v.PGs.Error = fmt.Sprintf("PG health: %v", err)
		} else {
			v.PGs = statuspage.SummarisePGs(m, reps)
		}
	}
	alerts, err := n.metaC.Alerts(ctx, meta.AlertFilter{Limit: statusAlertScan})
	if err != nil {
		v.Alerts.Error = fmt.Sprintf("alerts: %v", err)
	}
	v.Alerts.Alerts = alertRows(alerts, statusAlertRows)
	v.Jobs = statuspage.JobSection{From: now.Add(-statusJobWindow), To: now}
	if n.meta == nil {
		v.Jobs.Note = "Job records are kept by the meta servers: this node (" + n.cfg.ID + ") has none. Open a meta node's status page for the timeline."
		v.Audit.Note = "The audit log is kept by the meta servers: this node (" + n.cfg.ID + ") has none. Open a meta node's status page for it."
		return v
	}
	if js, err := n.meta.RecentJobs(ctx, v.Jobs.From, statusJobs); err != nil {
		v.Jobs.Error = fmt.Sprintf("jobs: %v", err)
	} else {
		v.Jobs.Jobs = jobRows(js, anomalies(alerts))
		v.Jobs.From = timelineStart(js, v.Jobs.From, now)
		if len(js) == 0 {
			v.Jobs.Note = "No backup job ran or ended in the last 24 hours (jobs are recorded by agents running policies: coffer agent run)."
		}
	}
	if es, err := n.meta.RecentAudit(ctx, statusAuditEntries); err != nil {
		v.Audit.Error = fmt.Sprintf("audit log: %v", err)
	} else {
		v.Audit.Entries = es
	}
	return v
}

// timelineStart narrows the timeline's window [from, now] to the jobs in it: it starts a
// tenth of the span before the earliest job's start (at least a minute before now), so a
// few recent jobs are not squeezed against the right edge of a day.
func timelineStart(js []meta.Job, from, now time.Time) time.Time {
	if len(js) == 0 {
		return from
	}
	first := now
	for _, j := range js {
		if j.Start.Before(first) {
			first = j.Start
		}
	}
	start := first.Add(-now.Sub(first) / 10)
	start = minTime(start, now.Add(-time.Minute))
	if start.Before(from) {
		return from
	}
	return start
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// anomalies maps job IDs to the message of the anomaly alert raised about them (the
// alert's "job" detail, or its key "anomaly/<job ID>").
func anomalies(alerts []meta.Alert) map[string]string {
	out := map[string]string{}
	for _, a := range alerts {
		if a.Kind != meta.AlertAnomaly {
			continue
		}
		id := a.Details["job"]
		if id == "" {
			if rest, ok := strings.CutPrefix(a.Key, string(meta.AlertAnomaly)+"/"); ok {
				id = rest
			}
		}
		if id != "" && out[id] == "" {
			out[id] = a.Message
		}
	}
	return out
}

// jobRows turns job records into the page's rows, newest first; the timeline lane is
// host and policy. A job's anomaly is its own flag (meta.Job.Anomaly, set by the
// leader), else the message of an anomaly alert naming it.
func jobRows(js []meta.Job, anomaly map[string]string) []statuspage.Job {
	out := make([]statuspage.Job, 0, len(js))
	for i := len(js) - 1; i >= 0; i-- {
		j := js[i]
		lane := j.Host
		if j.Policy != "" {
			lane += " · " + j.Policy
		}
		kind := j.Kind
		if j.Trigger != "" {
			kind += " (" + j.Trigger + ")"
		}
		out = append(out, statuspage.Job{ID: j.ID, Name: lane, Kind: kind, Status: j.Status, Start: j.Start, End: j.End,
			Bytes: j.Stats.BytesAdded, Error: j.Error, Anomaly: j.Anomaly})
		if out[len(out)-1].Anomaly == "" {
			out[len(out)-1].Anomaly = anomaly[j.ID] // the alert, before the flag's record is read
		}
	}
	return out
}

// alertRows turns the newest alerts (newest first) into at most n page rows.
func alertRows(as []meta.Alert, n int) []statuspage.Alert {
	var out []statuspage.Alert
	for _, a := range as {
		if len(out) == n {
			break
		}
		name := string(a.Kind)
		if a.Subject != "" {
			name += " " + a.Subject
		}
		out = append(out, statuspage.Alert{Time: a.Raised, Severity: a.Severity, Name: name, Message: a.Message, Resolved: a.Resolved != nil})
	}
	return out
}

// statusNodes lists every node of the map and every meta server with its own status
// report (as `coffer admin status` does); a node that does not answer within 2 s is
// shown down with the error. Sorted by ID.
func (n *Node) statusNodes(ctx context.Context, m placement.Map, rs meta.RaftStatus) []statuspage.NodeRow {
	var rows []statuspage.NodeRow
	byID := map[string]int{}
	for _, nd := range m.Nodes {
		byID[string(nd.ID)] = len(rows)
		rows = append(rows, statuspage.NodeRow{ID: string(nd.ID), Addr: nd.Addr, Roles: []string{"chunk"}, Domain: nd.Domain, MapState: string(nd.State)})
	}
	servers := rs.Servers
	if len(servers) == 0 { // no Raft view: the configured voters
		for _, ms := range n.cfg.MetaServers {
			servers = append(servers, meta.Server{ID: ms.ID, Addr: ms.Addr})
		}
	}
	for _, s := range servers {
		if i, ok := byID[s.ID]; ok {
			rows[i].Roles = append(rows[i].Roles, "meta")
			continue
		}
		byID[s.ID] = len(rows)
		rows = append(rows, statuspage.NodeRow{ID: s.ID, Addr: s.Addr, Roles: []string{"meta"}})
	}
	sem := make(chan struct{}, statusParallel)
	var wg sync.WaitGroup
	for i := range rows {
		r := &rows[i]
		if r.Addr == "" {
			r.Error = "no address"
			continue
		}
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			cctx, cancel := context.WithTimeout(ctx, statusNodeTimeout)
			defer cancel()
			var st meta.NodeStatus
			var err error
			if r.ID == n.cfg.ID {
				st, err = n.Status(cctx)
			} else {
				err = wire.Call(cctx, n.ep, r.Addr, methodStatus, struct{}{}, &st)
			}
			if err != nil {
				r.Error = err.Error()
				return
			}
			r.Up = true
			if len(st.Roles) > 0 {
				r.Roles = append([]string(nil), st.Roles...)
			}
			if st.Domain != "" {
				r.Domain = st.Domain
			}
			r.Shards, r.Bytes, r.Capacity, r.Damaged = st.Shards.Shards, st.Shards.Bytes, st.Shards.Capacity, st.Shards.Corrupt
			if st.Repair != nil {
				r.RepairRunning, r.RepairBytes = st.Repair.Running, st.Repair.BytesWritten
				r.FoundCorrupt, r.FoundMissing = st.Repair.FoundCorrupt, st.Repair.FoundMissing
			}
		}()
	}
	wg.Wait()
	sort.SliceStable(rows, func(i, j int) bool { return rows[i].ID < rows[j].ID })
	return rows
}
