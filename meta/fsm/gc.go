package fsm

import (
	"fmt"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cofferhq/coffer/meta"
	"github.com/cofferhq/coffer/meta/command"
)

// keyGC holds the meta.GCState.
const keyGC = "gc/state"

// GCState returns the garbage-collection state (epoch 0, idle before any collection).
func (f *FSM) GCState() (meta.GCState, error) {
	var st meta.GCState
	ok, err := f.getValue(keyGC, &st)
	if err == nil && !ok {
		st = meta.GCState{Phase: meta.GCIdle}
	}
	return st, err
}

func (f *FSM) readGC(b *pebble.Batch) (meta.GCState, error) {
	raw, ok, err := getCopy(b, keyGC)
	if err != nil || !ok {
		return meta.GCState{Phase: meta.GCIdle}, err
	}
	var st meta.GCState
	if err := f.codec.Unmarshal(raw, &st); err != nil {
		return st, fmt.Errorf("%w: decode %s: %v", meta.ErrInvalid, keyGC, err)
	}
	return st, nil
}

// applyGC executes the GC commands.
func (f *FSM) applyGC(b *pebble.Batch, body command.Body, now time.Time) (any, error) {
	st, err := f.readGC(b)
	if err != nil {
		return nil, err
	}
	switch c := body.(type) {
	case command.GCBegin:
		if c.Epoch != st.Epoch+1 {
			return nil, fmt.Errorf("%w: gc epoch %d, want exactly %d (current %d + 1)", meta.ErrInvalid, c.Epoch, st.Epoch+1, st.Epoch)
		}
		if c.Leader == "" || c.Grace < 0 {
			return nil, fmt.Errorf("%w: gc begin: leader %q, grace %d", meta.ErrInvalid, c.Leader, c.Grace)
		}
		if st.Phase != meta.GCIdle && st.Phase != "" {
			// A collection left unfinished (its leader lost office or crashed) is
			// abandoned; its chunk nodes stop obeying its orders from now on.
			st.Last = &meta.GCReport{Epoch: st.Epoch, Began: st.Began, Ended: now,
				Error: fmt.Sprintf("abandoned in the %s phase when epoch %d began", st.Phase, c.Epoch)}
		}
		st.Epoch, st.Phase, st.Leader, st.Began, st.Grace = c.Epoch, meta.GCMark, c.Leader, now, time.Duration(c.Grace)
	case command.GCSweep:
		if c.Epoch != st.Epoch || st.Phase != meta.GCMark {
			return nil, fmt.Errorf("%w: gc sweep for epoch %d, but epoch %d is in the %s phase", meta.ErrInvalid, c.Epoch, st.Epoch, st.Phase)
		}
		st.Phase = meta.GCSweep
	case command.GCEnd:
		if c.Epoch != st.Epoch || st.Phase == meta.GCIdle {
			return nil, fmt.Errorf("%w: gc end for epoch %d, but epoch %d is in the %s phase", meta.ErrInvalid, c.Epoch, st.Epoch, st.Phase)
		}
		r := c.Report
		r.Epoch, r.Began, r.Ended = st.Epoch, st.Began, now
		st.Phase, st.Last = meta.GCIdle, &r
	default:
		return nil, fmt.Errorf("%w: unhandled gc command %T", meta.ErrInvalid, body)
	}
	return st, f.put(b, keyGC, st)
}

// checkGCEpoch refuses a commit checked in another GC epoch than the current one.
func (f *FSM) checkGCEpoch(b *pebble.Batch, checked uint64) error {
	st, err := f.readGC(b)
	if err != nil {
		return err
	}
	if st.Epoch != checked {
		return fmt.Errorf("%w: checked in epoch %d, now %d", meta.ErrGCEpoch, checked, st.Epoch)
	}
	return nil
}
