package meta

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cofferhq/coffer/chunkstore/chunk"
)

func snapAt(n byte, host string, t time.Time) Snapshot {
	return Snapshot{ID: chunk.ID{n}, Vault: "v", Host: host, Paths: []string{"/data"}, Time: t}
}

func kept(ds []Decision) map[byte][]string {
	out := map[byte][]string{}
	for _, d := range ds {
		if d.Keep {
			out[d.ID[0]] = d.Reasons
		}
	}
	return out
}

func TestApplyPolicyGFS(t *testing.T) {
	base := time.Date(2026, 3, 10, 12, 0, 0, 0, time.UTC) // a Tuesday
	var snaps []Snapshot
	// One snapshot every 6 hours for 20 days, oldest first: IDs 1..80.
	for i := range 80 {
		snaps = append(snaps, snapAt(byte(i+1), "h", base.Add(time.Duration(i)*6*time.Hour)))
	}
	now := snaps[79].Time
	ds := ApplyPolicy(snaps, Policy{Last: 2, Daily: 3, Weekly: 2}, now)
	if len(ds) != 80 {
		t.Fatalf("%d decisions for 80 snapshots", len(ds))
	}
	k := kept(ds)
	// Snapshot n is at base + (n-1)*6h: 80 is Monday 2026-03-30 06:00, 79 00:00 the same
	// day, 78 Sunday 18:00, 74 Saturday 18:00. Newest two (80, 79) by last; daily: the
	// newest of each of the last 3 days (80, 78, 74); weekly: the newest of the last 2 ISO
	// weeks (80, and 78 closing the week before).
	want := map[byte][]string{80: {"last", "daily", "weekly"}, 79: {"last"}, 78: {"daily"}, 74: {"daily"}}
	// The week before the newest snapshot's week: its last snapshot.
	wy, ww := now.ISOWeek()
	for i := 78; i >= 0; i-- {
		if y, w := snaps[i].Time.ISOWeek(); y != wy || w != ww {
			want[snaps[i].ID[0]] = append(want[snaps[i].ID[0]], "weekly")
			break
		}
	}
	if len(k) != len(want) {
		t.Fatalf("kept %v, want %v", k, want)
	}
	for id, rs := range want {
		if !slices.Equal(k[id], rs) {
			t.Errorf("snapshot %d kept by %v, want %v", id, k[id], rs)
		}
	}
}

func TestApplyPolicyWithinLocksAndGroups(t *testing.T) {
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	snaps := []Snapshot{
		snapAt(1, "a", base),
		snapAt(2, "a", base.Add(10*24*time.Hour)),
		snapAt(3, "a", base.Add(12*24*time.Hour)),
		snapAt(4, "b", base), // another host: its own group
		snapAt(5, "a", base.Add(time.Hour)),
		snapAt(6, "a", base.Add(2*time.Hour)),
	}
	snaps[4].Lock = &Lock{Mode: Compliance, Until: base.Add(100 * 24 * time.Hour)}
	snaps[5].LegalHold = true
	now := base.Add(12 * 24 * time.Hour)
	k := kept(ApplyPolicy(snaps, Policy{Within: 3 * 24 * time.Hour, Last: 1}, now))
	if len(k[2]) != 1 || k[2][0] != "within 72h0m0s" {
		t.Errorf("snapshot 2 (2 days before the newest): %v", k[2])
	}
	if !slices.Equal(k[3], []string{"last", "within 72h0m0s"}) {
		t.Errorf("snapshot 3: %v", k[3])
	}
	if !slices.Equal(k[4], []string{"last", "within 72h0m0s"}) {
		t.Errorf("host b's only snapshot: %v", k[4])
	}
	if len(k[5]) != 1 || !strings.HasPrefix(k[5][0], "compliance-locked until") {
		t.Errorf("locked snapshot: %v", k[5])
	}
	if !slices.Equal(k[6], []string{"legal hold"}) {
		t.Errorf("held snapshot: %v", k[6])
	}
	if _, ok := k[1]; ok {
		t.Errorf("snapshot 1 should go: %v", k[1])
	}
	// An expired lock keeps nothing.
	if k := kept(ApplyPolicy(snaps, Policy{Last: 1}, base.Add(200*24*time.Hour))); k[5] != nil {
		t.Errorf("expired lock still keeps: %v", k[5])
	}
}

func TestValidatePolicy(t *testing.T) {
	if err := ValidatePolicy(Policy{}); err == nil {
		t.Error("empty policy accepted")
	}
	if err := ValidatePolicy(Policy{Daily: -1}); err == nil {
		t.Error("negative rule accepted")
	}
	if err := ValidatePolicy(Policy{Yearly: 1}); err != nil {
		t.Error(err)
	}
}
