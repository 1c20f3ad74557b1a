package fsm

import (
	"bytes"
	"io"
	"testing"

	"github.com/cofferhq/coffer/meta"
	"github.com/cofferhq/coffer/meta/command"
)

// TestGCEpochs walks the GC state machine and checks that a commit checked in an older
// epoch is refused, that out-of-order GC commands change nothing, and that a new epoch
// abandons an unfinished one.
func TestGCEpochs(t *testing.T) {
	f := open(t, t.TempDir())
	var i uint64
	apply := func(b command.Body) any {
		i++
		return f.Apply(entry(t, i, int64(i)*1e9, b))
	}
	if res := result(t, apply(vault("v"))); res.Err != nil {
		t.Fatal(res.Err)
	}
	wantErr(t, apply(command.GCSweep{Epoch: 1}), meta.ErrInvalid)
	wantErr(t, apply(command.GCBegin{Epoch: 2, Leader: "m1"}), meta.ErrInvalid)
	wantErr(t, apply(command.GCBegin{Epoch: 1}), meta.ErrInvalid)
	if res := result(t, apply(command.GCBegin{Epoch: 1, Leader: "m1", Grace: 5})); res.Err != nil {
		t.Fatal(res.Err)
	}
	st, err := f.GCState()
	if err != nil || st.Epoch != 1 || st.Phase != meta.GCMark || st.Leader != "m1" || st.Began.IsZero() {
		t.Fatalf("after begin: %+v %v", st, err)
	}
	// A commit checked in epoch 0 is refused now; one checked in epoch 1 goes through.
	old := snap("v", 1)
	wantErr(t, apply(old), meta.ErrGCEpoch)
	cur := snap("v", 1)
	cur.GCEpoch = 1
	if res := result(t, apply(cur)); res.Err != nil {
		t.Fatal(res.Err)
	}
	wantErr(t, apply(command.GCEnd{Epoch: 2}), meta.ErrInvalid)
	if res := result(t, apply(command.GCSweep{Epoch: 1})); res.Err != nil {
		t.Fatal(res.Err)
	}
	wantErr(t, apply(command.GCSweep{Epoch: 1}), meta.ErrInvalid)
	// Epoch 2 begins before 1 ended (its leader died): 1 is recorded as abandoned.
	if res := result(t, apply(command.GCBegin{Epoch: 2, Leader: "m2"})); res.Err != nil {
		t.Fatal(res.Err)
	}
	st, _ = f.GCState()
	if st.Epoch != 2 || st.Leader != "m2" || st.Last == nil || st.Last.Epoch != 1 || st.Last.Error == "" {
		t.Fatalf("after an abandoning begin: %+v (last %+v)", st, st.Last)
	}
	if res := result(t, apply(command.GCEnd{Epoch: 2, Report: meta.GCReport{SweptChunks: 3}})); res.Err != nil {
		t.Fatal(res.Err)
	}
	st, _ = f.GCState()
	if st.Phase != meta.GCIdle || st.Last == nil || st.Last.Epoch != 2 || st.Last.SweptChunks != 3 || st.Last.Ended.IsZero() {
		t.Fatalf("after end: %+v (last %+v)", st, st.Last)
	}
	// The state survives a snapshot and restore.
	g := open(t, t.TempDir())
	if err := g.Restore(io.NopCloser(bytes.NewReader(persist(t, f)))); err != nil {
		t.Fatal(err)
	}
	if st2, err := g.GCState(); err != nil || st2.Epoch != 2 || st2.Last == nil || st2.Last.SweptChunks != 3 {
		t.Fatalf("restored: %+v %v", st2, err)
	}
}
