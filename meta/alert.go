package meta

import (
	"context"
	"fmt"
	"net/url"
	"regexp"
	"slices"
	"time"
)

// AlertKind names what an alert is about. Sinks may subscribe to some kinds only.
type AlertKind string

// Alert kinds (the triggers of issue 15).
const (
	AlertJobFailed    AlertKind = "job-failed"    // a failed or partially failed job
	AlertAnomaly      AlertKind = "anomaly"       // a job far outside its host+policy's history
	AlertMissedRun    AlertKind = "missed-run"    // a scheduled run did not happen (RPO breach)
	AlertNodeDown     AlertKind = "node-down"     // a chunk node is down or out
	AlertPGDegraded   AlertKind = "pg-degraded"   // placement groups with missing shards
	AlertCapacity     AlertKind = "capacity"      // a node's disk above AlertCapacityPercent
	AlertCertExpiry   AlertKind = "cert-expiry"   // a certificate close to its end
	AlertVerifyFailed AlertKind = "verify-failed" // a verify job failed
	AlertTest         AlertKind = "test"          // `coffer admin alert test`
)

// AlertKinds lists every kind, in documentation order.
func AlertKinds() []AlertKind {
	return []AlertKind{AlertJobFailed, AlertAnomaly, AlertMissedRun, AlertNodeDown, AlertPGDegraded,
		AlertCapacity, AlertCertExpiry, AlertVerifyFailed, AlertTest}
}

// AlertEvent reports whether alerts of kind k are one-time events (a job, a missed run,
// a test) rather than conditions that the leader resolves when they end: an event alert
// stays recorded (its key taken) until it is compacted.
func AlertEvent(k AlertKind) bool {
	switch k {
	case AlertJobFailed, AlertAnomaly, AlertMissedRun, AlertVerifyFailed, AlertTest:
		return true
	}
	return false
}

// DefaultAlertRetention is how long fired alerts are kept after they were resolved (or,
// for events, raised) when the configuration does not say.
const DefaultAlertRetention = 90 * 24 * time.Hour

// AlertCapacityPercent is the used share of a node's disk above which it alerts.
const AlertCapacityPercent = 85

// AlertMaxAttempts is how many failed deliveries of one alert to one sink the leader
// makes before it gives up (and audits the failure).
const AlertMaxAttempts = 8

// AlertMaxAge is how long after it was raised an alert is still delivered: a sink added
// later, or a leader back after a long outage, does not replay old news.
const AlertMaxAge = 24 * time.Hour

// Alert severities.
const (
	SeverityWarning  = "warning"
	SeverityCritical = "critical"
)

// Sink kinds.
const (
	SinkWebhook = "webhook" // JSON POST to URL
	SinkCommand = "command" // run Command with the JSON on standard input
)

// AlertSink is where alerts go: a webhook (an http or https URL that receives a JSON
// POST) or a command that the meta leader runs with the alert's JSON on its standard
// input. A command runs only when the leader's node configuration allows it
// (alerts.commands in cofferd's config): an API credential alone cannot make the meta
// servers run a program. Kinds limits the sink to some alert kinds (empty: all).
type AlertSink struct {
	Name    string      `cbor:"name" json:"name"`
	Kind    string      `cbor:"kind" json:"kind"`
	URL     string      `cbor:"url,omitempty" json:"url,omitempty"`
	Command []string    `cbor:"command,omitempty" json:"command,omitempty"`
	Kinds   []AlertKind `cbor:"kinds,omitempty" json:"kinds,omitempty"`
	// Created is the cluster time the sink was added (set by the FSM): alerts raised
	// before it are not sent to it.
	Created time.Time `cbor:"created" json:"created"`
}

// sinkName is the pattern of sink names (immutable once compiled).
var sinkName = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)

// ValidateAlertSink checks a sink: a name of lower-case letters, digits, '.', '_' and
// '-'; a webhook with an absolute http(s) URL, or a command with an absolute program
// path; known kinds.
func ValidateAlertSink(s AlertSink) error {
	if !sinkName.MatchString(s.Name) {
		return fmt.Errorf("%w: alert sink name %q (want 1-63 of a-z 0-9 . _ -, starting with a letter or digit)", ErrInvalid, s.Name)
	}
	switch s.Kind {
	case SinkWebhook:
		u, err := url.Parse(s.URL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("%w: alert sink %s: webhook URL %q is not an absolute http or https URL", ErrInvalid, s.Name, s.URL)
		}
		if len(s.Command) > 0 {
			return fmt.Errorf("%w: alert sink %s: a webhook has no command", ErrInvalid, s.Name)
		}
	case SinkCommand:
		if len(s.Command) == 0 || len(s.Command[0]) == 0 || s.Command[0][0] != '/' {
			return fmt.Errorf("%w: alert sink %s: a command sink needs an absolute program path, got %q", ErrInvalid, s.Name, s.Command)
		}
		if s.URL != "" {
			return fmt.Errorf("%w: alert sink %s: a command sink has no URL", ErrInvalid, s.Name)
		}
	default:
		return fmt.Errorf("%w: alert sink %s: kind %q (want webhook or command)", ErrInvalid, s.Name, s.Kind)
	}
	for _, k := range s.Kinds {
		if !slices.Contains(AlertKinds(), k) {
			return fmt.Errorf("%w: alert sink %s: unknown alert kind %q (known: %v)", ErrInvalid, s.Name, k, AlertKinds())
		}
	}
	return nil
}

// Wants reports whether the sink takes alerts of kind k raised at cluster time raised.
func (s AlertSink) Wants(k AlertKind, raised time.Time) bool {
	if raised.Before(s.Created) {
		return false
	}
	return len(s.Kinds) == 0 || slices.Contains(s.Kinds, k)
}

// Alert is one fired alert. Key identifies the event or condition (at most one open
// alert per key: "node-down/n3", "job-failed/<job ID>"); Seq, the Raft log index that
// raised it, identifies the alert itself and is sent as its idempotency key.
type Alert struct {
	Seq      uint64            `cbor:"seq" json:"seq"`
	Key      string            `cbor:"key" json:"key"`
	Kind     AlertKind         `cbor:"kind" json:"kind"`
	Severity string            `cbor:"severity" json:"severity"`
	Subject  string            `cbor:"subject" json:"subject"` // host, node, vault or certificate
	Message  string            `cbor:"message" json:"message"`
	Details  map[string]string `cbor:"details,omitempty" json:"details,omitempty"`
	Raised   time.Time         `cbor:"raised" json:"raised"` // cluster time
	// Resolved is when the alert's condition ended (condition alerts only).
	Resolved   *time.Time      `cbor:"resolved,omitempty" json:"resolved,omitempty"`
	Deliveries []AlertDelivery `cbor:"deliveries,omitempty" json:"deliveries"`
}

// ID is the alert's stable identifier, the idempotency key of its deliveries.
func (a Alert) ID() string { return fmt.Sprintf("alert-%d", a.Seq) }

// Delivery returns the record of the alert's delivery to sink (zero when none yet).
func (a Alert) Delivery(sink string) AlertDelivery {
	for _, d := range a.Deliveries {
		if d.Sink == sink {
			return d
		}
	}
	return AlertDelivery{Sink: sink}
}

// AlertDelivery is the state of one alert's delivery to one sink.
type AlertDelivery struct {
	Sink        string    `cbor:"sink" json:"sink"`
	Attempts    int       `cbor:"attempts" json:"attempts"`
	LastAttempt time.Time `cbor:"last_attempt" json:"last_attempt"`
	Delivered   bool      `cbor:"delivered,omitempty" json:"delivered"`
	GaveUp      bool      `cbor:"gave_up,omitempty" json:"gave_up"`
	Error       string    `cbor:"error,omitempty" json:"error,omitempty"`
}

// Done reports whether no further attempt will be made.
func (d AlertDelivery) Done() bool { return d.Delivered || d.GaveUp }

// NextAttempt returns when the next attempt is due after d's failures: at once for the
// first, then base, 2 base, 4 base, ... after the last (cluster time), never more than
// 10 min (the leader's default base is 5 s).
func (d AlertDelivery) NextAttempt(base time.Duration) time.Time {
	if d.Attempts == 0 {
		return time.Time{}
	}
	wait := base << min(d.Attempts-1, 10)
	return d.LastAttempt.Add(min(wait, 10*time.Minute))
}

// ValidateAlert checks an alert to raise: a key, a known kind and severity, a message.
func ValidateAlert(a Alert) error {
	switch {
	case a.Key == "" || len(a.Key) > 512:
		return fmt.Errorf("%w: alert key %q (want 1-512 bytes)", ErrInvalid, a.Key)
	case !slices.Contains(AlertKinds(), a.Kind):
		return fmt.Errorf("%w: alert kind %q", ErrInvalid, a.Kind)
	case a.Severity != SeverityWarning && a.Severity != SeverityCritical:
		return fmt.Errorf("%w: alert severity %q (want warning or critical)", ErrInvalid, a.Severity)
	case a.Message == "":
		return fmt.Errorf("%w: alert %s without a message", ErrInvalid, a.Key)
	}
	return nil
}

// AlertFilter selects fired alerts: newer than After (a Seq), open ones only, at most
// Limit (<= 0: all), newest first.
type AlertFilter struct {
	After uint64 `cbor:"after,omitempty" json:"after,omitempty"`
	Open  bool   `cbor:"open,omitempty" json:"open,omitempty"`
	Limit int    `cbor:"limit,omitempty" json:"limit,omitempty"`
}

// AlertAdmin manages alert sinks and reads fired alerts (meta/server implements it,
// metarpc.Client carries it). The status page reads Alerts.
type AlertAdmin interface {
	// SetAlertSink adds or replaces a sink (admin only; audited).
	SetAlertSink(ctx context.Context, s AlertSink) (AlertSink, error)
	// RemoveAlertSink removes a sink (admin only; audited). ErrNotFound if none.
	RemoveAlertSink(ctx context.Context, name string) error
	// AlertSinks lists the sinks (admin only).
	AlertSinks(ctx context.Context) ([]AlertSink, error)
	// Alerts lists fired alerts with their delivery state (admin and nodes).
	Alerts(ctx context.Context, f AlertFilter) ([]Alert, error)
	// TestAlert raises a test alert, delivered like any other to the sinks that take
	// kind "test" (all, unless a sink names its kinds); it returns the alert (admin).
	TestAlert(ctx context.Context, message string) (Alert, error)
}

// ActAlerts is the permission to manage alert sinks (admins).
const ActAlerts Action = "alerts"

// CertExpiryAlerts returns a cert-expiry alert for each issued certificate that is within
// CertExpiryWarning of its end at now (IssuedCert.State expiring) and is its principal's
// newest for its role: not revoked, not renewed (no record names it in Renews), and no
// unrevoked certificate of the same principal and role ends later. Keys are
// "cert-expiry/<serial>" (a node's own certificate raises the same key); severity is
// critical in the last 7 days.
func CertExpiryAlerts(certs []IssuedCert, revs []Revocation, now time.Time) []Alert {
	renewed := map[string]bool{}
	newest := map[string]time.Time{} // principal + role -> latest NotAfter of an unrevoked cert
	for _, c := range certs {
		if c.Renews != "" {
			renewed[c.Renews] = true
		}
		if _, ok := Revoked(revs, c.Serial, c.Principal, c.NotBefore); ok {
			continue
		}
		if k := c.Principal + "\x00" + c.Role; c.NotAfter.After(newest[k]) {
			newest[k] = c.NotAfter
		}
	}
	var out []Alert
	for _, c := range certs {
		if c.State(now, revs) != CertExpiring || renewed[c.Serial] || newest[c.Principal+"\x00"+c.Role].After(c.NotAfter) {
			continue
		}
		left := c.NotAfter.Sub(now)
		sev := SeverityWarning
		if left < 7*24*time.Hour {
			sev = SeverityCritical
		}
		out = append(out, Alert{Key: fmt.Sprintf("%s/%s", AlertCertExpiry, c.Serial), Kind: AlertCertExpiry, Severity: sev, Subject: c.Principal,
			Message: fmt.Sprintf("the %s certificate of %s (serial %s) ends %s (in %s); renew it", c.Role, c.Principal, c.Serial,
				c.NotAfter.UTC().Format(time.RFC3339), left.Round(time.Hour)),
			Details: map[string]string{"serial": c.Serial, "principal": c.Principal, "role": c.Role, "not_after": c.NotAfter.UTC().Format(time.RFC3339)}})
	}
	return out
}
