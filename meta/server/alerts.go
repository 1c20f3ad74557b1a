package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"slices"
	"strings"
	"time"

	"github.com/cofferhq/coffer/meta"
	"github.com/cofferhq/coffer/meta/command"
	"github.com/cofferhq/coffer/placement"
)

// AlertConfig configures the leader's alert delivery and probes. Zero fields take the
// defaults.
type AlertConfig struct {
	// Commands are the programs (absolute paths) this server may run for command sinks;
	// a command sink naming another program fails its delivery (and says why). Empty:
	// no command sink runs here.
	Commands []string
	// Timeout bounds one delivery (an HTTP POST or a command run); zero = 10 s.
	Timeout time.Duration
	// RetryBase is the wait after a first failed delivery, doubled after each further
	// one (cluster time); zero = 5 s.
	RetryBase time.Duration
	// MissedRunGrace is how long after its scheduled time a policy's run may start
	// (agents add a random delay) before the leader raises a missed-run alert (cluster
	// time); zero = 15 min.
	MissedRunGrace time.Duration
	// Client posts webhooks; nil = an http.Client that follows no redirects.
	Client *http.Client
	// ProbeInterval is how often (real time) the leader looks at node states, PG health
	// and Probe; zero = 30 s.
	ProbeInterval time.Duration
	// Probe reports the conditions the node layer sees (capacity, certificate expiry):
	// the alerts that should be open now, of the kinds in covered. An open alert of a
	// covered kind that Probe no longer reports is resolved. Nil: none.
	Probe func(ctx context.Context) (active []meta.Alert, covered []meta.AlertKind, err error)
}

func (c AlertConfig) timeout() time.Duration {
	if c.Timeout <= 0 {
		return 10 * time.Second
	}
	return c.Timeout
}

func (c AlertConfig) retryBase() time.Duration {
	if c.RetryBase <= 0 {
		return 5 * time.Second
	}
	return c.RetryBase
}

func (c AlertConfig) missedRunGrace() time.Duration {
	if c.MissedRunGrace <= 0 {
		return 15 * time.Minute
	}
	return c.MissedRunGrace
}

func (c AlertConfig) probeInterval() time.Duration {
	if c.ProbeInterval <= 0 {
		return 30 * time.Second
	}
	return c.ProbeInterval
}

func (c AlertConfig) client() *http.Client {
	if c.Client != nil {
		return c.Client
	}
	return &http.Client{Timeout: c.timeout(), CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

var _ meta.AlertAdmin = (*Server)(nil)

// alertsDue runs, in the background, one pass of probes (when due) and deliveries on the
// leader. One pass at a time: alertMu is held through it, so no alert is sent twice
// concurrently.
func (s *Server) alertsDue() {
	if !s.alertMu.TryLock() {
		return
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer s.alertMu.Unlock()
		ctx, cancel := s.stopContext()
		defer cancel()
		if s.probedAt.IsZero() || time.Since(s.probedAt) >= s.cfg.Alerts.probeInterval() {
			s.probedAt = time.Now()
			s.probe(ctx)
		}
		s.deliverAlerts(ctx)
	}()
}

// RaiseAlert records an alert through the log (one per open key; see
// command.RaiseAlert) and returns the recorded one. Leader only.
func (s *Server) RaiseAlert(ctx context.Context, a meta.Alert) (meta.Alert, error) {
	if err := s.leaderWrite(); err != nil {
		return meta.Alert{}, err
	}
	if old, ok, err := s.fsm.OpenAlert(a.Key); err != nil {
		return meta.Alert{}, err
	} else if ok {
		return old, nil
	}
	res, err := s.propose(timeoutOf(ctx), command.RaiseAlert{Alert: a})
	if err != nil {
		return meta.Alert{}, err
	}
	return res.(meta.Alert), nil
}

// resolveMissing resolves the open alerts of kind whose keys are not in active.
func (s *Server) resolveMissing(ctx context.Context, kind meta.AlertKind, active map[string]bool) {
	keys, err := s.fsm.OpenAlertKeys(kind)
	if err != nil {
		s.log.Warn("list open alerts", "kind", kind, "err", err)
		return
	}
	for _, k := range keys {
		if active[k] {
			continue
		}
		if _, err := s.propose(timeoutOf(ctx), command.ResolveAlert{Key: k}); err != nil {
			s.log.Warn("resolve alert", "key", k, "err", err)
		}
	}
}

// raiseAll raises each alert (a no-op for keys already open) and resolves the open
// alerts of the covered kinds that are no longer active.
func (s *Server) raiseAll(ctx context.Context, active []meta.Alert, covered []meta.AlertKind) {
	keys := map[string]bool{}
	for _, a := range active {
		keys[a.Key] = true
		if _, err := s.RaiseAlert(ctx, a); err != nil {
			s.log.Warn("raise alert", "key", a.Key, "err", err)
		}
	}
	for _, k := range covered {
		s.resolveMissing(ctx, k, keys)
	}
}

// probe raises and resolves the condition alerts: nodes down or out (cluster map),
// degraded placement groups (PGHealth) and whatever AlertConfig.Probe reports.
func (s *Server) probe(ctx context.Context) {
	if m, ok, err := s.fsm.ClusterMap(); err == nil && ok {
		var down []meta.Alert
		for _, n := range m.Nodes {
			if n.State != placement.StateDown && n.State != placement.StateOut {
				continue
			}
			since := ""
			if n.Since != 0 {
				since = " since " + time.Unix(0, n.Since).UTC().Format(time.RFC3339)
			}
			down = append(down, meta.Alert{Key: "node-down/" + string(n.ID), Kind: meta.AlertNodeDown, Severity: meta.SeverityCritical,
				Subject: string(n.ID), Message: fmt.Sprintf("chunk node %s is %s%s", n.ID, n.State, since),
				Details: map[string]string{"node": string(n.ID), "state": string(n.State), "addr": n.Addr}})
		}
		s.raiseAll(ctx, down, []meta.AlertKind{meta.AlertNodeDown})
	}
	if s.cfg.PGHealth != nil {
		pctx, cancel := context.WithTimeout(ctx, s.cfg.Alerts.timeout())
		reps, err := s.cfg.PGHealth(pctx)
		cancel()
		if err == nil || len(reps) > 0 {
			var pgs, stripes, unreadable int
			reasons := map[string]int{}
			for _, r := range reps {
				if st := r.State(); st == "degraded" || st == "unreadable" || st == "inconsistent" {
					pgs++
					stripes += r.Degraded
					unreadable += r.Unreadable
					if r.Reason != "" {
						reasons[r.Reason]++
					}
				}
			}
			why, most := "", 0
			for r, n := range reasons {
				if n > most || (n == most && r < why) {
					why, most = r, n
				}
			}
			var active []meta.Alert
			if pgs > 0 {
				sev := meta.SeverityWarning
				if unreadable > 0 {
					sev = meta.SeverityCritical
				}
				msg := fmt.Sprintf("%d placement groups degraded (%d stripes missing shards, %d unreadable)", pgs, stripes, unreadable)
				if why != "" {
					msg += fmt.Sprintf("; %d: %s", most, why)
				}
				active = append(active, meta.Alert{Key: "pg-degraded/cluster", Kind: meta.AlertPGDegraded, Severity: sev, Subject: "cluster",
					Message: msg,
					Details: map[string]string{"pgs": fmt.Sprint(pgs), "stripes": fmt.Sprint(stripes), "unreadable": fmt.Sprint(unreadable)}})
			}
			s.raiseAll(ctx, active, []meta.AlertKind{meta.AlertPGDegraded})
		}
	}
	s.missedRuns(ctx)
	var active []meta.Alert
	var covered []meta.AlertKind
	probed := true
	if s.cfg.Alerts.Probe != nil {
		var err error
		active, covered, err = s.cfg.Alerts.Probe(ctx)
		if err != nil {
			s.log.Warn("alert probe", "err", err)
			covered, probed = nil, false // resolve nothing on a failed probe
		}
	}
	// Every issued certificate close to its end (not only this server's own).
	if certs, err := s.fsm.IssuedCerts(); err != nil {
		s.log.Warn("read issued certificates for expiry alerts", "err", err)
		covered = slices.DeleteFunc(covered, func(k meta.AlertKind) bool { return k == meta.AlertCertExpiry })
	} else if revs, _, err := s.fsm.Revocations(); err != nil {
		s.log.Warn("read revocations for expiry alerts", "err", err)
		covered = slices.DeleteFunc(covered, func(k meta.AlertKind) bool { return k == meta.AlertCertExpiry })
	} else {
		seen := map[string]bool{}
		for _, a := range active {
			seen[a.Key] = true
		}
		for _, a := range meta.CertExpiryAlerts(certs, revs, s.fsm.Now()) {
			if !seen[a.Key] {
				active = append(active, a)
			}
		}
		if probed && !slices.Contains(covered, meta.AlertCertExpiry) && s.cfg.Alerts.Probe == nil {
			covered = append(covered, meta.AlertCertExpiry)
		}
	}
	s.raiseAll(ctx, active, covered)
}

// deliverAlerts sends every alert raised in the last meta.AlertMaxAge whose delivery to
// a sink that takes it is neither done nor waiting for its retry, and records each
// attempt in the log. The record is written after the send: a leader that fails
// between the two leaves the attempt unrecorded, and the next leader sends again with
// the same idempotency key (the alert's ID), which the receiver can use to drop it.
func (s *Server) deliverAlerts(ctx context.Context) {
	sinks, err := s.fsm.AlertSinks()
	if err != nil || len(sinks) == 0 {
		return
	}
	now := s.fsm.Now()
	alerts, err := s.fsm.Alerts(meta.AlertFilter{}, func(a meta.Alert) bool { return a.Raised.Before(now.Add(-meta.AlertMaxAge)) })
	if err != nil {
		s.log.Warn("list alerts to deliver", "err", err)
		return
	}
	s.alertPasses.Add(1)
	slices.Reverse(alerts) // oldest first
	for _, a := range alerts {
		for _, sink := range sinks {
			if ctx.Err() != nil || !s.IsLeader() {
				return
			}
			d := a.Delivery(sink.Name)
			if !sink.Wants(a.Kind, a.Raised) || d.Done() || now.Before(d.NextAttempt(s.cfg.Alerts.retryBase())) {
				continue
			}
			serr := s.send(ctx, sink, a, d.Attempts+1)
			att := command.AlertAttempt{Seq: a.Seq, Sink: sink.Name, OK: serr == nil}
			if serr != nil {
				att.Error = serr.Error()
				s.log.Warn("alert delivery failed", "alert", a.ID(), "sink", sink.Name, "attempt", d.Attempts+1, "err", serr)
			}
			if _, err := s.propose(timeoutOf(ctx), att); err != nil {
				s.log.Warn("record alert delivery", "alert", a.ID(), "sink", sink.Name, "err", err)
				return
			}
		}
	}
}

// AlertPayload is the JSON a webhook receives (and a command reads on its standard
// input). ID is the idempotency key: every attempt of one alert carries the same.
type AlertPayload struct {
	ID       string            `json:"id"`
	Seq      uint64            `json:"seq"`
	Key      string            `json:"key"`
	Kind     meta.AlertKind    `json:"kind"`
	Severity string            `json:"severity"`
	Subject  string            `json:"subject"`
	Message  string            `json:"message"`
	Details  map[string]string `json:"details,omitempty"`
	Raised   time.Time         `json:"raised"`
	Sink     string            `json:"sink"`
	Attempt  int               `json:"attempt"`
}

// send delivers a to sink once.
func (s *Server) send(ctx context.Context, sink meta.AlertSink, a meta.Alert, attempt int) error {
	body, err := json.Marshal(AlertPayload{ID: a.ID(), Seq: a.Seq, Key: a.Key, Kind: a.Kind, Severity: a.Severity, Subject: a.Subject,
		Message: a.Message, Details: a.Details, Raised: a.Raised, Sink: sink.Name, Attempt: attempt})
	if err != nil {
		return fmt.Errorf("encode alert: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Alerts.timeout())
	defer cancel()
	switch sink.Kind {
	case meta.SinkWebhook:
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, sink.URL, bytes.NewReader(body))
		if err != nil {
			return fmt.Errorf("webhook request: %w", err)
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Idempotency-Key", a.ID())
		req.Header.Set("User-Agent", "coffer-alerts")
		resp, err := s.cfg.Alerts.client().Do(req)
		if err != nil {
			return fmt.Errorf("webhook: %w", err)
		}
		defer resp.Body.Close()
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		if resp.StatusCode/100 != 2 {
			return fmt.Errorf("webhook answered %s: %s", resp.Status, strings.TrimSpace(string(msg)))
		}
		return nil
	case meta.SinkCommand:
		if !slices.Contains(s.cfg.Alerts.Commands, sink.Command[0]) {
			return fmt.Errorf("command %s is not among the alert commands this meta server (%s) may run (alerts.commands in its configuration)", sink.Command[0], s.cfg.ID)
		}
		cmd := exec.CommandContext(ctx, sink.Command[0], sink.Command[1:]...)
		cmd.Stdin = bytes.NewReader(body)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		cmd.Env = []string{"COFFER_ALERT_ID=" + a.ID(), "COFFER_ALERT_KIND=" + string(a.Kind), "PATH=/usr/bin:/bin"}
		if err := cmd.Run(); err != nil {
			tail := out.String()
			if len(tail) > 512 {
				tail = tail[len(tail)-512:]
			}
			return fmt.Errorf("command %s: %w: %s", sink.Command[0], err, strings.TrimSpace(tail))
		}
		return nil
	}
	return fmt.Errorf("%w: sink kind %q", meta.ErrInvalid, sink.Kind)
}

// SetAlertSink implements meta.AlertAdmin.
func (s *Server) SetAlertSink(ctx context.Context, sink meta.AlertSink) (meta.AlertSink, error) {
	if err := s.leaderWrite(); err != nil {
		return meta.AlertSink{}, err
	}
	res, err := s.propose(timeoutOf(ctx), command.SetAlertSink{Sink: sink, By: meta.PrincipalFrom(ctx)})
	if err != nil {
		return meta.AlertSink{}, err
	}
	return res.(meta.AlertSink), nil
}

// RemoveAlertSink implements meta.AlertAdmin.
func (s *Server) RemoveAlertSink(ctx context.Context, name string) error {
	if err := s.leaderWrite(); err != nil {
		return err
	}
	_, err := s.propose(timeoutOf(ctx), command.RemoveAlertSink{Name: name, By: meta.PrincipalFrom(ctx)})
	return err
}

// AlertSinks implements meta.AlertAdmin (admin only: URLs may carry tokens).
func (s *Server) AlertSinks(ctx context.Context) ([]meta.AlertSink, error) {
	if err := s.leaderRead(); err != nil {
		return nil, err
	}
	if err := meta.PrincipalFrom(ctx).Authorize(meta.ActAlerts, ""); err != nil {
		return nil, fmt.Errorf("server: alert sinks: %w", err)
	}
	sinks, err := s.fsm.AlertSinks()
	if sinks == nil {
		sinks = []meta.AlertSink{}
	}
	return sinks, err
}

// Alerts implements meta.AlertAdmin (admins and nodes: the status page).
func (s *Server) Alerts(ctx context.Context, f meta.AlertFilter) ([]meta.Alert, error) {
	if err := s.leaderRead(); err != nil {
		return nil, err
	}
	if p := meta.PrincipalFrom(ctx); !p.SeesTopology() {
		return nil, fmt.Errorf("%w: server: alerts: %s may not read the cluster's alerts", meta.ErrDenied, p)
	}
	out, err := s.fsm.Alerts(f, nil)
	if out == nil {
		out = []meta.Alert{}
	}
	return out, err
}

// TestAlert implements meta.AlertAdmin: it raises a test alert, delivers it at once and
// returns it with the outcome of the first attempt to each sink.
func (s *Server) TestAlert(ctx context.Context, message string) (meta.Alert, error) {
	if err := s.leaderWrite(); err != nil {
		return meta.Alert{}, err
	}
	p := meta.PrincipalFrom(ctx)
	if err := p.Authorize(meta.ActAlerts, ""); err != nil {
		return meta.Alert{}, fmt.Errorf("server: alert test: %w", err)
	}
	if message == "" {
		message = "test alert from coffer admin alert test"
	}
	a, err := s.RaiseAlert(ctx, meta.Alert{Key: fmt.Sprintf("test/%d", s.cfg.Now().UnixNano()), Kind: meta.AlertTest,
		Severity: meta.SeverityWarning, Subject: p.Name, Message: message})
	if err != nil {
		return meta.Alert{}, err
	}
	s.alertMu.Lock()
	s.deliverAlerts(ctx)
	s.alertMu.Unlock()
	got, ok, err := s.fsm.OpenAlert(a.Key)
	if err != nil || !ok {
		return a, errors.Join(err, fmt.Errorf("%w: test alert %s vanished", meta.ErrNotFound, a.ID()))
	}
	return got, nil
}
