package fsm

import (
	"bytes"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/cofferhq/coffer/chunkstore/chunk"
	"github.com/cofferhq/coffer/meta"
	"github.com/cofferhq/coffer/meta/command"
	"github.com/cofferhq/coffer/placement"
	"github.com/hashicorp/raft"
)

func open(t *testing.T, dir string) *FSM {
	t.Helper()
	f, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func entry(t *testing.T, index uint64, stamp int64, b command.Body) *raft.Log {
	t.Helper()
	data, err := command.Encode(command.Command{Time: stamp, Body: b})
	if err != nil {
		t.Fatal(err)
	}
	return &raft.Log{Index: index, Term: 1, Type: raft.LogCommand, Data: data}
}

func vault(id string) command.CreateVault {
	return command.CreateVault{Vault: meta.Vault{ID: meta.VaultID(id), Profile: placement.DefaultProfile, KeyWraps: [][]byte{{1}}}}
}

func snap(v string, id byte) command.CommitSnapshot {
	return command.CommitSnapshot{Snapshot: meta.Snapshot{ID: chunk.ID{id}, Vault: meta.VaultID(v), Host: "h", Tree: chunk.ID{0xee, id}, Refs: []chunk.ID{{0xaa, id}}}}
}

func cmap(epoch uint64) command.SetClusterMap {
	return command.SetClusterMap{Map: placement.Map{Epoch: epoch, PGCount: 16, Profile: placement.DefaultProfile,
		Nodes: []placement.Node{{ID: "n1", Addr: "127.0.0.1:1", State: placement.StateActive}}}}
}

func result(t *testing.T, r any) Result {
	t.Helper()
	res, ok := r.(Result)
	if !ok {
		t.Fatalf("result %T %v, want fsm.Result", r, r)
	}
	return res
}

func wantErr(t *testing.T, r any, target error) {
	t.Helper()
	if res := result(t, r); !errors.Is(res.Err, target) {
		t.Fatalf("err = %v, want %v", res.Err, target)
	}
}

func TestApplySequence(t *testing.T) {
	f := open(t, t.TempDir())
	const base = int64(1_700_000_000_000_000_000)
	r := result(t, f.Apply(entry(t, 1, base, vault("a"))))
	if r.Err != nil || !r.Value.(meta.Vault).Created.Equal(time.Unix(0, base)) {
		t.Fatalf("create vault: %+v", r)
	}
	wantErr(t, f.Apply(entry(t, 2, base+1, vault("a"))), meta.ErrExists)
	// A tick lets the clock follow the leader's stamps up to 2 s ahead.
	f.Apply(entry(t, 3, base+2, command.Tick{Elapsed: int64(time.Second)}))
	// Snapshots committed out of ID order get sorted by commit time.
	for i, id := range []byte{9, 3, 5} {
		if r := result(t, f.Apply(entry(t, uint64(4+i), base+int64(10*(i+1)), snap("a", id)))); r.Err != nil {
			t.Fatal(r.Err)
		}
	}
	wantErr(t, f.Apply(entry(t, 7, base+40, snap("a", 3))), meta.ErrExists)
	wantErr(t, f.Apply(entry(t, 8, base+41, snap("nope", 4))), meta.ErrNotFound)
	wantErr(t, f.Apply(entry(t, 9, base+42, cmap(2))), meta.ErrInvalid)
	if r := result(t, f.Apply(entry(t, 10, base+43, cmap(1)))); r.Err != nil {
		t.Fatal(r.Err)
	}
	wantErr(t, f.Apply(entry(t, 11, base+44, cmap(1))), meta.ErrInvalid)
	if r := result(t, f.Apply(entry(t, 12, base+45, cmap(2)))); r.Err != nil {
		t.Fatal(r.Err)
	}

	ss, err := f.Snapshots("a")
	if err != nil {
		t.Fatal(err)
	}
	if len(ss) != 3 || ss[0].ID[0] != 9 || ss[1].ID[0] != 3 || ss[2].ID[0] != 5 {
		t.Fatalf("snapshots not in commit order: %v", ss)
	}
	if !ss[1].Time.Equal(time.Unix(0, base+20)) {
		t.Fatalf("snapshot time %v, want the leader stamp", ss[1].Time)
	}
	got, err := f.GetSnapshot("a", chunk.ID{5})
	if err != nil || got.Tree != (chunk.ID{0xee, 5}) {
		t.Fatalf("GetSnapshot: %v %v", got, err)
	}
	if _, err := f.GetSnapshot("a", chunk.ID{4}); !errors.Is(err, meta.ErrNotFound) {
		t.Fatalf("missing snapshot: %v", err)
	}
	if _, err := f.Vault("b"); !errors.Is(err, meta.ErrNotFound) {
		t.Fatalf("missing vault: %v", err)
	}
	m, ok, err := f.ClusterMap()
	if err != nil || !ok || m.Epoch != 2 {
		t.Fatalf("map: %v %v %v", m.Epoch, ok, err)
	}
	if f.AppliedIndex() != 12 {
		t.Fatalf("applied %d, want 12", f.AppliedIndex())
	}
}

func TestClockNeverGoesBack(t *testing.T) {
	f := open(t, t.TempDir())
	f.Apply(entry(t, 1, 1000, vault("a")))
	f.Apply(entry(t, 2, 5000, command.Tick{Elapsed: 4000}))
	r := result(t, f.Apply(entry(t, 3, 2000, snap("a", 1)))) // leader with a lagging clock
	if r.Err != nil {
		t.Fatal(r.Err)
	}
	if got := r.Value.(meta.Snapshot).Time; !got.Equal(time.Unix(0, 5001)) {
		t.Fatalf("snapshot time %v, want the clock 5000ns + 1 ns, not the older stamp", got.UnixNano())
	}
	if f.Now().UnixNano() != 5001 {
		t.Fatalf("clock %d went back", f.Now().UnixNano())
	}
	f.Apply(entry(t, 4, 7000, command.Tick{Elapsed: 2000}))
	if f.Now().UnixNano() != 7000 {
		t.Fatalf("tick did not advance the clock: %d", f.Now().UnixNano())
	}
}

type state struct {
	vaults []meta.Vault
	snaps  []meta.Snapshot
	m      placement.Map
	now    time.Time
}

func capture(t *testing.T, f *FSM) state {
	t.Helper()
	vs, err := f.Vaults()
	if err != nil {
		t.Fatal(err)
	}
	ss, err := f.Snapshots("a")
	if err != nil {
		t.Fatal(err)
	}
	m, _, err := f.ClusterMap()
	if err != nil {
		t.Fatal(err)
	}
	return state{vs, ss, m, f.Now()}
}

func TestBadCommandsChangeNothing(t *testing.T) {
	f := open(t, t.TempDir())
	f.Apply(entry(t, 1, 100, vault("a")))
	f.Apply(entry(t, 2, 200, snap("a", 1)))
	f.Apply(entry(t, 3, 300, cmap(1)))
	before := capture(t, f)
	bad := []*raft.Log{
		{Index: 4, Type: raft.LogCommand, Data: []byte{0xff, 1, 2}},
		entry(t, 5, 50, vault("a")),
		entry(t, 6, 50, command.CreateVault{Vault: meta.Vault{ID: "bad/id", Profile: placement.DefaultProfile, KeyWraps: [][]byte{{1}}}}),
		entry(t, 7, 50, command.CreateVault{Vault: meta.Vault{ID: "b", Profile: placement.DefaultProfile}}),
		entry(t, 8, 50, snap("a", 1)),
		entry(t, 9, 50, command.CommitSnapshot{Snapshot: meta.Snapshot{ID: chunk.ID{7}, Vault: "a", Tree: chunk.ID{1}}}),
		entry(t, 10, 50, cmap(5)),
	}
	for _, l := range bad {
		if r := result(t, f.Apply(l)); r.Err == nil {
			t.Fatalf("log %d accepted", l.Index)
		}
	}
	after := capture(t, f)
	if len(after.vaults) != len(before.vaults) || len(after.snaps) != len(before.snaps) || after.m.Epoch != before.m.Epoch || !after.now.Equal(before.now) {
		t.Fatalf("state changed:\n before %+v\n after %+v", before, after)
	}
	if f.AppliedIndex() != 10 {
		t.Fatalf("applied index %d, want 10 (refusals still consume their entries)", f.AppliedIndex())
	}
}

// testLog is a log with successes, refusals and ticks.
func testLog(t *testing.T) []*raft.Log {
	var logs []*raft.Log
	i := uint64(0)
	add := func(stamp int64, b command.Body) {
		i++
		logs = append(logs, entry(t, i, stamp, b))
	}
	add(10, vault("a"))
	add(20, vault("b"))
	add(15, vault("a"))
	add(30, cmap(1))
	for k := range 20 {
		add(int64(40+k*3), snap("a", byte(k%13)))
		if k%4 == 0 {
			add(int64(41+k*3), command.Tick{Elapsed: 12})
		}
	}
	add(200, snap("b", 1))
	logs = append(logs, &raft.Log{Index: i + 1, Type: raft.LogNoop})
	return logs
}

func dump(t *testing.T, f *FSM) []byte {
	t.Helper()
	var buf bytes.Buffer
	if _, err := f.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestDeterminism(t *testing.T) {
	logs := testLog(t)
	a := open(t, t.TempDir())
	b := open(t, t.TempDir())
	for _, l := range logs {
		a.Apply(l)
	}
	// b gets the same log in uneven batches.
	for i := 0; i < len(logs); {
		n := min(1+i%5, len(logs)-i)
		b.ApplyBatch(logs[i : i+n])
		i += n
	}
	da, db := dump(t, a), dump(t, b)
	if !bytes.Equal(da, db) {
		t.Fatalf("two FSMs fed the same log differ (%d vs %d bytes)", len(da), len(db))
	}
	if a.AppliedIndex() != uint64(len(logs)) {
		t.Fatalf("applied %d, want %d", a.AppliedIndex(), len(logs))
	}
}

type sink struct {
	bytes.Buffer
	closed, cancelled bool
}

func (s *sink) ID() string    { return "test" }
func (s *sink) Cancel() error { s.cancelled = true; return nil }
func (s *sink) Close() error  { s.closed = true; return nil }

func persist(t *testing.T, f *FSM) []byte {
	t.Helper()
	snapshot, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	defer snapshot.Release()
	var s sink
	if err := snapshot.Persist(&s); err != nil {
		t.Fatal(err)
	}
	if !s.closed {
		t.Fatal("sink not closed")
	}
	return s.Bytes()
}

func TestSnapshotRestoreRoundTrip(t *testing.T) {
	src := open(t, t.TempDir())
	logs := testLog(t)
	for _, l := range logs[:len(logs)-5] {
		src.Apply(l)
	}
	snapshot, err := src.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	// Entries applied after Snapshot() must not leak into what Persist writes.
	for _, l := range logs[len(logs)-5:] {
		src.Apply(l)
	}
	var s sink
	if err := snapshot.Persist(&s); err != nil {
		t.Fatal(err)
	}
	snapshot.Release()

	dir := t.TempDir()
	dst := open(t, dir)
	dst.Apply(entry(t, 1, 5, vault("zzz"))) // state the restore must replace
	if err := dst.Restore(io.NopCloser(bytes.NewReader(s.Bytes()))); err != nil {
		t.Fatal(err)
	}
	if _, err := dst.Vault("zzz"); !errors.Is(err, meta.ErrNotFound) {
		t.Fatalf("old state survived the restore: %v", err)
	}
	if got := dump(t, dst); !bytes.Equal(got, s.Bytes()) {
		t.Fatal("restored state differs from the snapshot")
	}
	if dst.AppliedIndex() != uint64(len(logs)-5) {
		t.Fatalf("restored applied index %d, want %d", dst.AppliedIndex(), len(logs)-5)
	}
	// Replaying the rest brings it level with the source.
	for _, l := range logs {
		dst.Apply(l)
	}
	if !bytes.Equal(dump(t, dst), dump(t, src)) {
		t.Fatal("restored FSM plus the remaining log differs from the source")
	}
	// The restored state survives a reopen.
	want := dump(t, dst)
	dst.Close()
	again := open(t, dir)
	if !bytes.Equal(dump(t, again), want) {
		t.Fatal("reopened state differs after restore")
	}
}

func TestRestoreRejectsBadStream(t *testing.T) {
	src := open(t, t.TempDir())
	for _, l := range testLog(t) {
		src.Apply(l)
	}
	good := persist(t, src)
	dst := open(t, t.TempDir())
	dst.Apply(entry(t, 1, 5, vault("keep")))
	before := dump(t, dst)
	flip := func(i int) []byte { b := bytes.Clone(good); b[i] ^= 1; return b }
	cases := map[string][]byte{
		"empty":     nil,
		"magic":     flip(0),
		"version":   flip(4),
		"body":      flip(len(good) / 2),
		"checksum":  flip(len(good) - 1),
		"truncated": good[:len(good)-10],
		"trailing":  append(bytes.Clone(good), 0),
	}
	for name, b := range cases {
		err := dst.Restore(io.NopCloser(bytes.NewReader(b)))
		if err == nil {
			t.Errorf("%s: restore accepted a bad stream", name)
			continue
		}
		if !bytes.Equal(dump(t, dst), before) {
			t.Fatalf("%s: failed restore changed the state", name)
		}
	}
}

func TestReopenKeepsState(t *testing.T) {
	dir := t.TempDir()
	f := open(t, dir)
	logs := testLog(t)
	for _, l := range logs {
		f.Apply(l)
	}
	want := dump(t, f)
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	g := open(t, dir)
	if g.AppliedIndex() != uint64(len(logs)) {
		t.Fatalf("applied index %d after reopen, want %d", g.AppliedIndex(), len(logs))
	}
	if !bytes.Equal(dump(t, g), want) {
		t.Fatal("state differs after reopen")
	}
	// Raft replays entries after its last snapshot; already-applied ones are skipped
	// rather than refused as duplicates.
	if r := g.Apply(logs[0]); r != nil {
		t.Fatalf("replayed entry gave %v, want nil (skipped)", r)
	}
	if !bytes.Equal(dump(t, g), want) {
		t.Fatal("replay changed the state")
	}
}

// TestClockRunsAtMostOnePercentFast: a leader whose wall clock is 10 years ahead moves
// the cluster clock by at most 1% more than the real time its ticks report.
func TestClockRunsAtMostOnePercentFast(t *testing.T) {
	f := open(t, t.TempDir())
	const start = int64(1_000_000_000_000)
	f.Apply(entry(t, 1, start, vault("a")))
	ahead := start + int64(10*365*24*time.Hour)
	idx := uint64(2)
	for range 100 {
		f.Apply(entry(t, idx, ahead, command.Tick{Elapsed: int64(time.Second)}))
		idx++
		r := result(t, f.Apply(entry(t, idx, ahead, snap("a", byte(idx)))))
		idx++
		if r.Err != nil {
			t.Fatal(r.Err)
		}
	}
	// 100 ticks of 1 s each: at most 101 s beyond the start (plus 1 ns per command), and
	// at least the 99 s the first 99 ticks reported.
	if got, most := f.Now().UnixNano()-start, int64(101*time.Second+200); got > most || got < int64(99*time.Second) {
		t.Fatalf("clock advanced %v over 100 s of real time, want (0, %v]", time.Duration(got), time.Duration(most))
	}
	// A bogus huge Elapsed is capped.
	before := f.Now().UnixNano()
	f.Apply(entry(t, idx, ahead, command.Tick{Elapsed: int64(1000 * time.Hour)}))
	if got, most := f.Now().UnixNano()-before, int64(MaxTickElapsed)*(ClockLeadDivisor+1)/ClockLeadDivisor+1; got > most {
		t.Fatalf("one tick advanced the clock %v, want at most %v", time.Duration(got), time.Duration(most))
	}
	// Survives a reopen: the ceiling is durable.
	dir := f.dir
	now, lim := f.Now(), f.limit.Load()
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	g := open(t, dir)
	if !g.Now().Equal(now) || g.limit.Load() != lim {
		t.Fatalf("after reopen clock %v limit %d, want %v %d", g.Now(), g.limit.Load(), now, lim)
	}
}

// TestTickV1KeepsItsRule: a Tick logged before issue 11 (tag 4) is applied with the rule
// it was first applied with (up to twice its Elapsed), so a replica replaying an old log
// reaches the clock the others reached; the current Tick allows 1% more than Elapsed.
func TestTickV1KeepsItsRule(t *testing.T) {
	f := open(t, t.TempDir())
	const start = int64(1_000_000_000_000)
	f.Apply(entry(t, 1, start, vault("a")))
	ahead := start + int64(time.Hour)
	f.Apply(entry(t, 2, ahead, command.TickV1{Elapsed: int64(time.Second)}))
	if got := f.Now().UnixNano() - start; got != int64(2*time.Second) {
		t.Fatalf("old tick advanced the clock %v, want 2s", time.Duration(got))
	}
	f.Apply(entry(t, 3, ahead, command.Tick{Elapsed: int64(time.Second)}))
	if got := f.Now().UnixNano() - start; got != int64(3*time.Second+10*time.Millisecond) {
		t.Fatalf("clock at %v after a 1 s tick, want 3.01s", time.Duration(got))
	}
}
