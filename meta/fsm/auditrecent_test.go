package fsm

import (
	"fmt"
	"testing"

	"github.com/cofferhq/coffer/meta"
	"github.com/cofferhq/coffer/meta/command"
)

// TestRecentAudit: the newest entries come back newest first, bounded by the limit.
func TestRecentAudit(t *testing.T) {
	f := open(t, t.TempDir())
	if es, err := f.RecentAudit(5); err != nil || len(es) != 0 {
		t.Fatalf("empty log: %v, %v", es, err)
	}
	for i := uint64(1); i <= 7; i++ {
		r := result(t, f.Apply(entry(t, i*3, int64(1000+i), command.RecordAudit{Entry: meta.AuditEntry{Principal: fmt.Sprint("p", i), Action: "forget", Outcome: meta.AuditRefused}})))
		if r.Err != nil {
			t.Fatal(r.Err)
		}
	}
	es, err := f.RecentAudit(3)
	if err != nil {
		t.Fatal(err)
	}
	if len(es) != 3 || es[0].Principal != "p7" || es[1].Principal != "p6" || es[2].Principal != "p5" || es[0].Seq != 21 {
		t.Fatalf("recent 3 = %+v, want p7 (seq 21), p6, p5", es)
	}
	if es, _ := f.RecentAudit(0); len(es) != 1 {
		t.Errorf("limit 0 gave %d entries, want 1", len(es))
	}
}
