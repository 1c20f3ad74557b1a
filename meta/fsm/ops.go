package fsm

import (
	"encoding/binary"
	"fmt"
	"strings"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cofferhq/coffer/meta"
	"github.com/cofferhq/coffer/meta/command"
)

// Keys of the operations state (issue 15): automatic retention, alert sinks and alerts.
const (
	keyRetentionLast  = "ops/ret/last" // cluster time of the last retention round
	prefixRetention   = "ops/ret/v/"   // + vault: its latest meta.RetentionReport
	prefixAlertSink   = "ops/sink/"    // + name: meta.AlertSink
	prefixAlert       = "ops/al/"      // + %016x Seq: meta.Alert
	prefixAlertKey    = "ops/ak/"      // + key: the Seq of its alert (8 bytes, big endian)
	alertSeqKeyDigits = 16
)

func retentionKey(v meta.VaultID) string { return prefixRetention + string(v) }
func alertKey(seq uint64) string         { return fmt.Sprintf("%s%016x", prefixAlert, seq) }

// knownOpsKey reports whether k is an operations key (FSM snapshot restore check).
func knownOpsKey(k string) bool {
	switch {
	case k == keyRetentionLast:
		return true
	case strings.HasPrefix(k, prefixRetention):
		return meta.ValidateVaultID(meta.VaultID(k[len(prefixRetention):])) == nil
	case strings.HasPrefix(k, prefixAlertSink):
		return len(k) > len(prefixAlertSink)
	case strings.HasPrefix(k, prefixAlert):
		return len(k) == len(prefixAlert)+alertSeqKeyDigits
	case strings.HasPrefix(k, prefixAlertKey):
		return len(k) > len(prefixAlertKey)
	}
	return false
}

// applyOps executes the operations commands.
func (f *FSM) applyOps(b *pebble.Batch, index uint64, body command.Body, now time.Time) (any, error) {
	switch c := body.(type) {
	case command.ApplyRetention:
		return f.auditedRetention(b, index, c.Vault, now, f.applyRetentionPolicy)
	case command.RetentionRound:
		return now, f.put(b, keyRetentionLast, now)
	case command.SetAlertSink:
		entry := meta.AuditEntry{Principal: c.By.Name, Role: c.By.Role, Action: "alert sink set", Target: c.Sink.Name}
		s, err := f.setAlertSink(b, c, now)
		if err == nil {
			entry.Reason = describeSink(s)
		}
		if aerr := f.writeAudit(b, index, now, entry, err, ""); aerr != nil && err == nil {
			return nil, aerr
		}
		return s, err
	case command.RemoveAlertSink:
		entry := meta.AuditEntry{Principal: c.By.Name, Role: c.By.Role, Action: "alert sink remove", Target: c.Name}
		err := c.By.Authorize(meta.ActAlerts, "")
		if err == nil {
			err = f.removeAlertSink(b, c.Name)
		}
		if aerr := f.writeAudit(b, index, now, entry, err, ""); aerr != nil && err == nil {
			return nil, aerr
		}
		return nil, err
	case command.RaiseAlert:
		return f.raiseAlert(b, index, c.Alert, now)
	case command.ResolveAlert:
		return f.resolveAlert(b, c.Key, now)
	case command.AlertAttempt:
		return f.alertAttempt(b, index, c, now)
	case command.ApplyVaultRetention:
		return f.auditedRetention(b, index, c.Vault, now, f.applyVaultRetention)
	case command.CompactAlerts:
		return f.compactAlerts(b, time.Duration(c.Retain), now)
	case command.FlagJob:
		j, err := f.ownJob(b, meta.SystemPrincipal(), c.ID)
		if err != nil {
			return nil, err
		}
		if !j.Done() {
			return nil, fmt.Errorf("%w: job %s is still running: only an ended job is checked for anomalies", meta.ErrInvalid, c.ID)
		}
		j.Anomaly = c.Anomaly
		return j, f.put(b, jobKey(j.ID), j)
	}
	return nil, fmt.Errorf("%w: unhandled operations command %T", meta.ErrInvalid, body)
}

// auditedRetention runs apply (applyRetentionPolicy or applyVaultRetention) on vault and
// audits it as the system principal: the snapshots removed and the report's summary, or
// the refusal.
func (f *FSM) auditedRetention(b *pebble.Batch, index uint64, vault meta.VaultID, now time.Time,
	apply func(*pebble.Batch, uint64, meta.VaultID, time.Time) (meta.RetentionReport, error)) (any, error) {
	sys := meta.SystemPrincipal()
	entry := meta.AuditEntry{Principal: sys.Name, Role: sys.Role, Action: "retention", Vault: vault}
	rep, err := apply(b, index, vault, now)
	if err == nil {
		entry.Target, entry.Reason = idList(rep.Removed), rep.Summary()
	}
	if aerr := f.writeAudit(b, index, now, entry, err, ""); aerr != nil && err == nil {
		return nil, aerr
	}
	return rep, err
}

// applyRetentionPolicy removes what the vault's stored policy does not keep at now and
// records the report. Locked and held snapshots are never removed (meta.PlanRetention
// keeps them; CheckDelete checks each again).
func (f *FSM) applyRetentionPolicy(b *pebble.Batch, index uint64, vault meta.VaultID, now time.Time) (meta.RetentionReport, error) {
	v, snaps, err := f.vaultAndSnapshots(b, vault)
	if err != nil {
		return meta.RetentionReport{}, err
	}
	if v.Deleted != nil {
		return meta.RetentionReport{}, fmt.Errorf("%w: vault %s is deleted: retention does not run in it", meta.ErrInvalid, vault)
	}
	if v.Retention == nil || v.Retention.Keep.Empty() {
		return meta.RetentionReport{}, fmt.Errorf("%w: vault %s stores no retention rules", meta.ErrInvalid, vault)
	}
	plan := meta.PlanRetention(snaps, v.Retention.Keep, now)
	return f.removePlanned(b, snaps, plan, now, meta.RetentionReport{Vault: vault, Seq: index, Time: now, Policy: v.Retention.Keep})
}

// removePlanned removes the snapshots plan removes from rep.Vault, each checked again
// (meta.CheckDelete as the system principal: a lock or hold is never missed), and
// records rep, completed with the plan, as the vault's retention report.
func (f *FSM) removePlanned(b *pebble.Batch, snaps []meta.Snapshot, plan meta.RetentionPlan, now time.Time, rep meta.RetentionReport) (meta.RetentionReport, error) {
	byID := make(map[meta.SnapshotID]meta.Snapshot, len(snaps))
	for _, s := range snaps {
		byID[s.ID] = s
	}
	sys := meta.SystemPrincipal()
	for _, id := range plan.Removed {
		if err := meta.CheckDelete(sys, byID[id], now, meta.Bypass{}); err != nil {
			return meta.RetentionReport{}, fmt.Errorf("fsm: retention in vault %s: %w", rep.Vault, err)
		}
	}
	for _, id := range plan.Removed {
		must(b.Delete([]byte(snapshotKey(rep.Vault, id)), nil))
	}
	rep.Kept, rep.Removed, rep.Held = plan.Kept, plan.Removed, plan.Held
	if rep.Removed == nil {
		rep.Removed = []meta.SnapshotID{}
	}
	if rep.Held == nil {
		rep.Held = []meta.HeldSnapshot{}
	}
	return rep, f.put(b, retentionKey(rep.Vault), rep)
}

// applyVaultRetention removes what meta.PlanVaultRetention does not keep at now (the
// backup policies' own rules for their snapshots, the vault's stored rules for the rest)
// and records the report. Locked and held snapshots are never removed (PlanRetention
// keeps them; CheckDelete checks each again).
func (f *FSM) applyVaultRetention(b *pebble.Batch, index uint64, vault meta.VaultID, now time.Time) (meta.RetentionReport, error) {
	v, snaps, err := f.vaultAndSnapshots(b, vault)
	if err != nil {
		return meta.RetentionReport{}, err
	}
	if v.Deleted != nil {
		return meta.RetentionReport{}, fmt.Errorf("%w: vault %s is deleted: retention does not run in it", meta.ErrInvalid, vault)
	}
	policies, err := decodeAll[meta.BackupPolicy](f, b, prefixPolicy)
	if err != nil {
		return meta.RetentionReport{}, fmt.Errorf("fsm: retention in vault %s: read policies: %w", vault, err)
	}
	var keep *meta.Policy
	if v.Retention != nil {
		keep = &v.Retention.Keep
	}
	plan, used := meta.PlanVaultRetention(snaps, keep, policies, now)
	if (keep == nil || keep.Empty()) && len(used) == 0 {
		return meta.RetentionReport{}, fmt.Errorf("%w: vault %s stores no retention rules and holds no snapshot of a backup policy with its own", meta.ErrInvalid, vault)
	}
	rep := meta.RetentionReport{Vault: vault, Seq: index, Time: now, BackupPolicies: used}
	if keep != nil {
		rep.Policy = *keep
	}
	return f.removePlanned(b, snaps, plan, now, rep)
}

// compactAlerts removes the alerts resolved, or (events) raised, more than retain
// before now, with the key of an event alert; it returns how many went.
func (f *FSM) compactAlerts(b *pebble.Batch, retain time.Duration, now time.Time) (int, error) {
	if retain <= 0 {
		return 0, fmt.Errorf("%w: alert retention %v must be positive", meta.ErrInvalid, retain)
	}
	cut := now.Add(-retain)
	return deleteWhere(f, b, prefixAlert, func(a meta.Alert) bool {
		if a.Resolved != nil {
			return a.Resolved.Before(cut)
		}
		return meta.AlertEvent(a.Kind) && a.Raised.Before(cut)
	}, func(a meta.Alert) error {
		if seq, ok, err := openAlertSeq(b, a.Key); err != nil {
			return err
		} else if ok && seq == a.Seq {
			must(b.Delete([]byte(prefixAlertKey+a.Key), nil))
		}
		must(b.Delete([]byte(alertKey(a.Seq)), nil))
		return nil
	})
}

// RetentionLast returns the cluster time of the last retention round (zero: none yet).
func (f *FSM) RetentionLast() (time.Time, error) {
	var t time.Time
	_, err := f.getValue(keyRetentionLast, &t)
	return t, err
}

// RetentionReport returns a vault's latest automatic retention report (ok false: none).
func (f *FSM) RetentionReport(vault meta.VaultID) (rep meta.RetentionReport, ok bool, err error) {
	ok, err = f.getValue(retentionKey(vault), &rep)
	return rep, ok, err
}

// RetentionReports returns every vault's latest report, in vault order.
func (f *FSM) RetentionReports() ([]meta.RetentionReport, error) {
	return scanAll[meta.RetentionReport](f, prefixRetention)
}

func describeSink(s meta.AlertSink) string {
	target := s.URL
	if s.Kind == meta.SinkCommand {
		target = strings.Join(s.Command, " ")
	}
	kinds := "all kinds"
	if len(s.Kinds) > 0 {
		ks := make([]string, len(s.Kinds))
		for i, k := range s.Kinds {
			ks[i] = string(k)
		}
		kinds = strings.Join(ks, ",")
	}
	return fmt.Sprintf("%s %s (%s)", s.Kind, redactURL(target), kinds)
}

// redactURL drops a URL's user information and query (they may carry a token) for the
// audit log.
func redactURL(s string) string {
	if i := strings.Index(s, "?"); i >= 0 {
		s = s[:i] + "?…"
	}
	if i := strings.Index(s, "://"); i >= 0 {
		if j := strings.Index(s[i+3:], "@"); j >= 0 && !strings.Contains(s[i+3:i+3+j], "/") {
			s = s[:i+3] + "…@" + s[i+3+j+1:]
		}
	}
	return s
}

func (f *FSM) setAlertSink(b *pebble.Batch, c command.SetAlertSink, now time.Time) (meta.AlertSink, error) {
	if err := c.By.Authorize(meta.ActAlerts, ""); err != nil {
		return meta.AlertSink{}, err
	}
	s := c.Sink
	if err := meta.ValidateAlertSink(s); err != nil {
		return meta.AlertSink{}, err
	}
	s.Created = now
	return s, f.put(b, prefixAlertSink+s.Name, s)
}

func (f *FSM) removeAlertSink(b *pebble.Batch, name string) error {
	key := prefixAlertSink + name
	if _, ok, err := getCopy(b, key); err != nil {
		return err
	} else if !ok {
		return fmt.Errorf("alert sink %q: %w", name, meta.ErrNotFound)
	}
	must(b.Delete([]byte(key), nil))
	return nil
}

// AlertSinks returns the alert sinks by name.
func (f *FSM) AlertSinks() ([]meta.AlertSink, error) {
	return scanAll[meta.AlertSink](f, prefixAlertSink)
}

// openAlertSeq returns the Seq of the alert recorded under key (ok false: none).
func openAlertSeq(r getter, key string) (uint64, bool, error) {
	raw, ok, err := getCopy(r, prefixAlertKey+key)
	if err != nil || !ok {
		return 0, ok, err
	}
	if len(raw) != 8 {
		return 0, false, fmt.Errorf("%w: alert key %q holds %d bytes", meta.ErrInvalid, key, len(raw))
	}
	return binary.BigEndian.Uint64(raw), true, nil
}

func (f *FSM) readAlert(r getter, seq uint64) (meta.Alert, error) {
	var a meta.Alert
	raw, ok, err := getCopy(r, alertKey(seq))
	if err != nil {
		return a, err
	}
	if !ok {
		return a, fmt.Errorf("alert %d: %w", seq, meta.ErrNotFound)
	}
	if err := f.codec.Unmarshal(raw, &a); err != nil {
		return a, fmt.Errorf("fsm: decode alert %d: %w", seq, err)
	}
	return a, nil
}

// raiseAlert records a unless an alert with its key is already recorded (open, or a
// one-time event), in which case it returns that one unchanged.
func (f *FSM) raiseAlert(b *pebble.Batch, index uint64, a meta.Alert, now time.Time) (meta.Alert, error) {
	if err := meta.ValidateAlert(a); err != nil {
		return meta.Alert{}, err
	}
	if seq, ok, err := openAlertSeq(b, a.Key); err != nil {
		return meta.Alert{}, err
	} else if ok {
		return f.readAlert(b, seq)
	}
	a.Seq, a.Raised, a.Resolved, a.Deliveries = index, now, nil, nil
	var seq [8]byte
	binary.BigEndian.PutUint64(seq[:], index)
	must(b.Set([]byte(prefixAlertKey+a.Key), seq[:], nil))
	return a, f.put(b, alertKey(index), a)
}

// resolveAlert closes the open alert under key (nothing when there is none).
func (f *FSM) resolveAlert(b *pebble.Batch, key string, now time.Time) (any, error) {
	seq, ok, err := openAlertSeq(b, key)
	if err != nil || !ok {
		return nil, err
	}
	a, err := f.readAlert(b, seq)
	if err != nil {
		return nil, err
	}
	t := now
	a.Resolved = &t
	must(b.Delete([]byte(prefixAlertKey+key), nil))
	return a, f.put(b, alertKey(seq), a)
}

// alertAttempt records one delivery attempt; a delivery and a final failure are audited
// (system principal, action "alert delivered" or "alert delivery failed").
func (f *FSM) alertAttempt(b *pebble.Batch, index uint64, c command.AlertAttempt, now time.Time) (meta.Alert, error) {
	a, err := f.readAlert(b, c.Seq)
	if err != nil {
		return meta.Alert{}, err
	}
	i := -1
	for j, d := range a.Deliveries {
		if d.Sink == c.Sink {
			i = j
		}
	}
	if i < 0 {
		a.Deliveries = append(a.Deliveries, meta.AlertDelivery{Sink: c.Sink})
		i = len(a.Deliveries) - 1
	}
	d := &a.Deliveries[i]
	if d.Done() {
		return meta.Alert{}, fmt.Errorf("%w: alert %d to sink %s is already %s", meta.ErrExists, c.Seq, c.Sink, map[bool]string{true: "delivered", false: "given up"}[d.Delivered])
	}
	d.Attempts++
	d.LastAttempt = now
	sys := meta.SystemPrincipal()
	entry := meta.AuditEntry{Principal: sys.Name, Role: sys.Role, Target: a.ID(), Reason: fmt.Sprintf("%s %s to sink %s, attempt %d", a.Kind, a.Key, c.Sink, d.Attempts)}
	switch {
	case c.OK:
		d.Delivered, d.Error = true, ""
		entry.Action = "alert delivered"
	case d.Attempts >= meta.AlertMaxAttempts:
		d.GaveUp, d.Error = true, c.Error
		entry.Action = "alert delivery failed"
		entry.Reason += ": " + c.Error
	default:
		d.Error = c.Error
	}
	if entry.Action != "" {
		if err := f.writeAudit(b, index, now, entry, nil, ""); err != nil {
			return meta.Alert{}, err
		}
	}
	return a, f.put(b, alertKey(a.Seq), a)
}

// OpenAlert returns the alert recorded under key, if any (open, or a one-time event).
func (f *FSM) OpenAlert(key string) (meta.Alert, bool, error) {
	h, err := f.acquire()
	if err != nil {
		return meta.Alert{}, false, err
	}
	defer func() { _ = h.unref() }()
	seq, ok, err := openAlertSeq(h.db, key)
	if err != nil || !ok {
		return meta.Alert{}, false, err
	}
	a, err := f.readAlert(h.db, seq)
	return a, err == nil, err
}

// Alerts returns alerts newest first: those with Seq > flt.After, open ones only when
// flt.Open, at most flt.Limit (<= 0: all). stop, when not nil, ends the scan at the
// first alert for which it returns true (the alert is not included).
func (f *FSM) Alerts(flt meta.AlertFilter, stop func(meta.Alert) bool) ([]meta.Alert, error) {
	h, err := f.acquire()
	if err != nil {
		return nil, err
	}
	defer func() { _ = h.unref() }()
	it, err := h.db.NewIter(&pebble.IterOptions{LowerBound: []byte(alertKey(flt.After + 1)), UpperBound: prefixEnd(prefixAlert)})
	if err != nil {
		return nil, fmt.Errorf("fsm: alerts: %w", err)
	}
	var out []meta.Alert
	for it.Last(); it.Valid() && (flt.Limit <= 0 || len(out) < flt.Limit); it.Prev() {
		var a meta.Alert
		val, err := it.ValueAndErr()
		if err == nil {
			err = f.codec.Unmarshal(val, &a)
		}
		if err != nil {
			_ = it.Close()
			return nil, fmt.Errorf("fsm: alerts at %q: %w", it.Key(), err)
		}
		if stop != nil && stop(a) {
			break
		}
		if flt.Open && a.Resolved != nil {
			continue
		}
		out = append(out, a)
	}
	if err := it.Close(); err != nil {
		return nil, fmt.Errorf("fsm: alerts: %w", err)
	}
	return out, nil
}

// OpenAlertKeys returns the keys of the open alerts of kind (keys "<kind>/...").
func (f *FSM) OpenAlertKeys(kind meta.AlertKind) ([]string, error) {
	h, err := f.acquire()
	if err != nil {
		return nil, err
	}
	defer func() { _ = h.unref() }()
	prefix := prefixAlertKey + string(kind) + "/"
	it, err := h.db.NewIter(&pebble.IterOptions{LowerBound: []byte(prefix), UpperBound: prefixEnd(prefix)})
	if err != nil {
		return nil, fmt.Errorf("fsm: open alerts: %w", err)
	}
	var out []string
	for it.First(); it.Valid(); it.Next() {
		out = append(out, string(it.Key()[len(prefixAlertKey):]))
	}
	if err := it.Close(); err != nil {
		return nil, fmt.Errorf("fsm: open alerts: %w", err)
	}
	return out, nil
}
