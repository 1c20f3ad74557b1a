package chaos

import (
	"reflect"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
)

const s = time.Second

// TestSnapshotSetModel: a history where listings follow the commits is linearizable; a
// listing that misses a commit acknowledged before it began, or that shows a snapshot
// and is followed by one that does not, is not; an indeterminate commit may appear late.
func TestSnapshotSetModel(t *testing.T) {
	cases := []struct {
		name string
		ops  []Op
		want porcupine.CheckResult
	}{
		{"sequential", []Op{
			{Client: 0, Kind: OpCommit, ID: "aa", Start: 0, End: 2 * s},
			{Client: 2, Kind: OpList, Listed: []string{"aa"}, Start: 3 * s, End: 4 * s},
			{Client: 1, Kind: OpCommit, ID: "bb", Start: 3 * s, End: 6 * s},
			{Client: 2, Kind: OpList, Listed: []string{"bb", "aa"}, Start: 7 * s, End: 8 * s},
		}, porcupine.Ok},
		{"concurrent list may miss a commit in flight", []Op{
			{Client: 0, Kind: OpCommit, ID: "aa", Start: 0, End: 5 * s},
			{Client: 2, Kind: OpList, Listed: nil, Start: 1 * s, End: 2 * s},
			{Client: 2, Kind: OpList, Listed: []string{"aa"}, Start: 6 * s, End: 7 * s},
		}, porcupine.Ok},
		{"stale listing after an acknowledged commit", []Op{
			{Client: 0, Kind: OpCommit, ID: "aa", Start: 0, End: 2 * s},
			{Client: 2, Kind: OpList, Listed: nil, Start: 3 * s, End: 4 * s},
		}, porcupine.Illegal},
		{"a snapshot seen, then not seen", []Op{
			{Client: 0, Kind: OpCommit, ID: "aa", Start: 0, End: 10 * s},
			{Client: 2, Kind: OpList, Listed: []string{"aa"}, Start: 1 * s, End: 2 * s},
			{Client: 3, Kind: OpList, Listed: nil, Start: 3 * s, End: 4 * s},
		}, porcupine.Illegal},
		{"indeterminate commit shows up after its backup failed", []Op{
			{Client: 0, Kind: OpCommit, ID: "aa", Indeterminate: true, Start: 0, End: 2 * s},
			{Client: 2, Kind: OpList, Listed: nil, Start: 3 * s, End: 4 * s},
			{Client: 2, Kind: OpList, Listed: []string{"aa"}, Start: 5 * s, End: 6 * s},
		}, porcupine.Ok},
		{"a listing shows a snapshot nobody committed", []Op{
			{Client: 2, Kind: OpList, Listed: []string{"zz"}, Start: 0, End: s},
		}, porcupine.Illegal},
	}
	for _, c := range cases {
		got, _ := CheckLinearizable(c.ops, 10*time.Second)
		if got != c.want {
			t.Errorf("%s: got %v, want %v", c.name, got, c.want)
		}
	}
}

// TestEnvelope: an operation's exposure is the most nodes faulted at one instant, not
// the sum over its whole run.
func TestEnvelope(t *testing.T) {
	w := []Window{
		{ID: 1, Kind: TwoChunksDown, Chunks: []string{"chunk-1", "chunk-2"}, Start: 10 * s, Recovered: 20 * s},
		{ID: 2, Kind: KillMetaLeader, Meta: []string{"meta-1"}, Start: 12 * s, Recovered: 18 * s},
		{ID: 3, Kind: KillChunk, Chunks: []string{"chunk-3"}, Start: 25 * s, Recovered: 30 * s},
		{ID: 4, Kind: PartitionChunks, Chunks: []string{"chunk-4", "chunk-5", "chunk-6"}, Start: 40 * s, Recovered: 50 * s},
	}
	e := Envelope{MaxChunks: 2, MaxMeta: 1}
	cases := []struct {
		start, end time.Duration
		want       Exposure
	}{
		{0, 5 * s, Exposure{Inside: true}},
		{5 * s, 28 * s, Exposure{MaxChunks: 2, MaxMeta: 1, Faults: []int{1, 2, 3}, Inside: true}},
		{19 * s, 26 * s, Exposure{MaxChunks: 2, Faults: []int{1, 3}, Inside: true}},
		{45 * s, 60 * s, Exposure{MaxChunks: 3, Faults: []int{4}, Inside: false}},
	}
	for _, c := range cases {
		if got := e.Expose(w, c.start, c.end); !reflect.DeepEqual(got, c.want) {
			t.Errorf("[%v, %v]: got %+v, want %+v", c.start, c.end, got, c.want)
		}
	}
	// With the default 5 s to settle, chunk-1 and chunk-2 still count when chunk-3 goes.
	if got := DefaultEnvelope().Expose(w, 19*s, 26*s); got.Inside || got.MaxChunks != 3 {
		t.Errorf("settle: got %+v, want 3 chunk nodes, outside", got)
	}
}

// TestPlan: a seed gives the same plan every time, every kind appears, chunk-lane
// faults touch at most two chunk nodes, and the full plan has at least 30 faults.
func TestPlan(t *testing.T) {
	excl := []Kind{PartitionChunks, FullRestart}
	p := NewPlan(42, 15, excl)
	if !reflect.DeepEqual(p, NewPlan(42, 15, excl)) {
		t.Fatal("the same seed gave two plans")
	}
	if reflect.DeepEqual(p, NewPlan(43, 15, excl)) {
		t.Fatal("two seeds gave the same plan")
	}
	if p.Count() < 30 {
		t.Fatalf("%d faults, want ≥ 30", p.Count())
	}
	seen := map[Kind]bool{}
	for i, r := range p.Rounds {
		chunks := map[string]bool{}
		for _, f := range r.Faults {
			seen[f.Kind] = true
			for _, c := range f.Chunks {
				chunks[c] = true
			}
			if f.Hold < 5*s || f.Hold > 30*s {
				t.Errorf("round %d: %s holds %v", i, f.Kind, f.Hold)
			}
		}
		if len(r.Faults) > 1 && len(chunks) > 2 {
			t.Errorf("round %d takes %d chunk nodes", i, len(chunks))
		}
		if i == 0 && len(r.Faults) == 1 && (r.Faults[0].Kind == FullRestart || r.Faults[0].Kind == PartitionChunks) {
			t.Errorf("the plan starts with an exclusive fault")
		}
	}
	for _, k := range []Kind{KillChunk, PauseChunk, TwoChunksDown, DiskFull, KillMetaLeader, PauseMeta, PartitionLeader, PartitionChunks, FullRestart} {
		if !seen[k] {
			t.Errorf("no %s in the plan", k)
		}
	}
}
