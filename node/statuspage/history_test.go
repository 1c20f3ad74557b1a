package statuspage

import (
	"math"
	"testing"
	"time"
)

var t0 = time.Date(2026, 12, 6, 4, 0, 0, 0, time.UTC)

func TestHistoryKeepsTheNewestInOrder(t *testing.T) {
	h := NewHistory(3)
	for i := range 5 {
		if !h.Add(Sample{Time: t0.Add(time.Duration(i) * time.Minute), Used: int64(i)}) {
			t.Fatalf("sample %d refused", i)
		}
	}
	got := h.Samples()
	if len(got) != 3 || h.Len() != 3 || h.Cap() != 3 {
		t.Fatalf("kept %d samples (Len %d, Cap %d), want 3", len(got), h.Len(), h.Cap())
	}
	for i, s := range got {
		if s.Used != int64(i+2) {
			t.Errorf("sample %d: Used %d, want %d", i, s.Used, i+2)
		}
	}
	// The copy is the caller's.
	got[0].Used = 99
	if h.Samples()[0].Used != 2 {
		t.Error("Samples returned the ring's own memory")
	}
}

func TestHistoryRefusesTimeGoingBack(t *testing.T) {
	h := NewHistory(4)
	h.Add(Sample{Time: t0.Add(time.Minute)})
	if h.Add(Sample{Time: t0.Add(time.Minute)}) {
		t.Error("a sample at the same time was kept")
	}
	if h.Add(Sample{Time: t0}) {
		t.Error("an older sample was kept")
	}
	if h.Len() != 1 {
		t.Errorf("Len %d, want 1", h.Len())
	}
	if NewHistory(0).Cap() != 2 {
		t.Error("a ring smaller than 2 cannot give a rate")
	}
}

func TestRates(t *testing.T) {
	ss := []Sample{
		{Time: t0, Used: 1000, RepairBytes: 0, NodesUp: 3},
		{Time: t0.Add(10 * time.Second), Used: 3000, RepairBytes: 500, NodesUp: 3},
		{Time: t0.Add(20 * time.Second), Used: 2000, RepairBytes: 100, NodesUp: 3}, // GC freed; a repair counter restarted
		{Time: t0.Add(30 * time.Second), Used: 9000, RepairBytes: 300, NodesUp: 2, NodesDown: 1},
	}
	rs := Rates(ss)
	if len(rs) != 3 {
		t.Fatalf("%d rates, want 3", len(rs))
	}
	if rs[0].Stored != 200 || rs[0].Repair != 50 || !rs[0].Time.Equal(ss[1].Time) {
		t.Errorf("rate 0 = %+v, want stored 200/s, repair 50/s at the second sample", rs[0])
	}
	if rs[1].Stored != -100 || rs[1].Repair != 0 {
		t.Errorf("rate 1 = %+v, want stored -100/s and no repair rate across a counter restart", rs[1])
	}
	if !math.IsNaN(rs[2].Stored) || rs[2].Repair != 20 {
		t.Errorf("rate 2 = %+v, want stored NaN (a node went down) and repair 20/s", rs[2])
	}
	if len(Rates(ss[:1])) != 0 {
		t.Error("one sample gave a rate")
	}
}
