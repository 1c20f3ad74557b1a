package fsm

import (
	"fmt"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/cofferhq/coffer/meta"
)

// RecentAudit returns the newest audit entries, up to limit (at least 1), newest first:
// the status page's "recent audit entries".
func (f *FSM) RecentAudit(limit int) ([]meta.AuditEntry, error) {
	limit = max(limit, 1)
	h, err := f.acquire()
	if err != nil {
		return nil, err
	}
	defer func() { _ = h.unref() }()
	it, err := h.db.NewIter(&pebble.IterOptions{LowerBound: []byte(prefixAudit), UpperBound: prefixEnd(prefixAudit)})
	if err != nil {
		return nil, fmt.Errorf("fsm: recent audit: %w", err)
	}
	var out []meta.AuditEntry
	for it.Last(); it.Valid() && len(out) < limit; it.Prev() {
		val, err := it.ValueAndErr()
		var e meta.AuditEntry
		if err == nil {
			err = f.codec.Unmarshal(val, &e)
		}
		if err != nil {
			_ = it.Close()
			return nil, fmt.Errorf("fsm: recent audit at %q: %w", it.Key(), err)
		}
		out = append(out, e)
	}
	if err := it.Close(); err != nil {
		return nil, fmt.Errorf("fsm: recent audit: %w", err)
	}
	return out, nil
}

// RecentJobs returns the jobs still running or ended at or after since, oldest first, at
// most limit (the newest ones; limit <= 0: all): the status page's job timeline.
func (f *FSM) RecentJobs(since time.Time, limit int) ([]meta.Job, error) {
	all, err := f.Jobs()
	if err != nil {
		return nil, fmt.Errorf("fsm: recent jobs: %w", err)
	}
	var out []meta.Job
	for _, j := range all {
		if !j.Done() || !j.End.Before(since) {
			out = append(out, j)
		}
	}
	if limit > 0 && len(out) > limit {
		out = out[len(out)-limit:]
	}
	return out, nil
}
