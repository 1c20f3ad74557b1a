package fsm

import (
	"fmt"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cofferhq/coffer/meta"
)

// auditKey orders entries by log index.
func auditKey(seq uint64) string { return fmt.Sprintf("%s%016x", prefixAudit, seq) }

// applyAudit records e with Seq = the log index and Time = the cluster clock.
func (f *FSM) applyAudit(b *pebble.Batch, e meta.AuditEntry, now time.Time, index uint64) (any, error) {
	if e.Action == "" || e.Principal == "" || e.Outcome == "" {
		return nil, fmt.Errorf("%w: audit entry needs principal, action and outcome", meta.ErrInvalid)
	}
	e.Seq, e.Time = index, now
	return e, f.put(b, auditKey(index), e)
}

// AuditLog returns the newest limit audit entries (all when limit ≤ 0), oldest first.
func (f *FSM) AuditLog(limit int) ([]meta.AuditEntry, error) {
	var out []meta.AuditEntry
	err := f.scan(prefixAudit, func(val []byte) error {
		var e meta.AuditEntry
		if err := f.codec.Unmarshal(val, &e); err != nil {
			return err
		}
		out = append(out, e)
		if limit > 0 && len(out) > 2*limit {
			out = append(out[:0], out[len(out)-limit:]...)
		}
		return nil
	})
	if limit > 0 && len(out) > limit {
		out = out[len(out)-limit:]
	}
	return out, err
}
