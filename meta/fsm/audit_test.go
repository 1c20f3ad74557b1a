package fsm

import (
	"bytes"
	"errors"
	"io"
	"testing"

	"github.com/cofferhq/coffer/meta"
	"github.com/cofferhq/coffer/meta/command"
)

func TestAuditLog(t *testing.T) {
	f := open(t, t.TempDir())
	for i, a := range []string{"node.drain", "node.undrain", "node.decommission"} {
		res := f.Apply(entry(t, uint64(i+1), int64(1000*(i+1)), command.Audit{Entry: meta.AuditEntry{
			Principal: "admin", Action: a, Target: "chunk-1", Outcome: "ok"}})).(Result)
		if res.Err != nil {
			t.Fatal(res.Err)
		}
	}
	bad := f.Apply(entry(t, 4, 5000, command.Audit{Entry: meta.AuditEntry{Action: "x"}})).(Result)
	if !errors.Is(bad.Err, meta.ErrInvalid) {
		t.Fatalf("entry without principal: %v", bad.Err)
	}
	all, err := f.AuditLog(0)
	if err != nil || len(all) != 3 {
		t.Fatalf("audit log: %v %v", all, err)
	}
	if all[0].Seq != 1 || all[2].Action != "node.decommission" || all[2].Time.UnixNano() != 3000 {
		t.Fatalf("entries: %+v", all)
	}
	last, _ := f.AuditLog(2)
	if len(last) != 2 || last[0].Action != "node.undrain" {
		t.Fatalf("last 2: %+v", last)
	}
	// The audit list travels with raft snapshots.
	g := open(t, t.TempDir())
	if err := g.Restore(io.NopCloser(bytes.NewReader(persist(t, f)))); err != nil {
		t.Fatal(err)
	}
	if got, _ := g.AuditLog(0); len(got) != 3 {
		t.Fatalf("after restore: %+v", got)
	}
}
