package replicate

import (
	"context"
	"testing"
	"time"

	"github.com/cofferhq/coffer/chunkstore"
	"github.com/cofferhq/coffer/chunkstore/chunk"
	"github.com/cofferhq/coffer/chunkstore/memstore"
	"github.com/cofferhq/coffer/chunkstore/reflist"
	"github.com/cofferhq/coffer/meta"
)

// fakeSource serves one vault's record, snapshots and chunks from memory.
type fakeSource struct {
	vault  meta.Vault
	snaps  []meta.Snapshot
	chunks *memstore.Chunks
	grants int // grants issued
}

func (s *fakeSource) GetVault(context.Context, meta.VaultID) (meta.Vault, error) { return s.vault, nil }
func (s *fakeSource) ListSnapshots(context.Context, meta.VaultID) ([]meta.Snapshot, error) {
	return s.snaps, nil
}
func (s *fakeSource) IssueGrant(context.Context, meta.VaultID, meta.SnapshotID, time.Duration) ([]byte, error) {
	s.grants++
	return []byte("grant"), nil
}
func (s *fakeSource) Reader([]byte) chunkstore.BatchGetter { return getter{s.chunks} }

type getter struct{ c *memstore.Chunks }

func (g getter) GetMany(ctx context.Context, ids []chunk.ID) []chunkstore.GetResult {
	out := make([]chunkstore.GetResult, len(ids))
	for i, id := range ids {
		out[i].Data, out[i].Err = g.c.Get(ctx, id)
	}
	return out
}

// fakeTarget records imports in memory.
type fakeTarget struct {
	snaps []meta.Snapshot
}

func (t *fakeTarget) ListSnapshots(context.Context, meta.VaultID) ([]meta.Snapshot, error) {
	return t.snaps, nil
}
func (t *fakeTarget) ImportReplicaVault(_ context.Context, _ string, v meta.Vault) (meta.Vault, error) {
	return v, nil
}
func (t *fakeTarget) ImportReplicaSnapshot(_ context.Context, _ string, s meta.Snapshot) (meta.ReplicaImport, error) {
	t.snaps = append(t.snaps, s)
	return meta.ReplicaImport{Snapshot: s, Imported: true}, nil
}

// TestRateLimit copies 40 chunks of 1000 bytes in batches of 4 at 2000 bytes/s on a
// fake clock: the run waits 20 s of that clock in all (the bytes over the rate), each
// wait follows a stored batch, and every chunk arrives once; a run slow enough to
// outlive a grant renews it.
func TestRateLimit(t *testing.T) {
	ctx := context.Background()
	src := &fakeSource{vault: meta.Vault{ID: "v", KeyWraps: [][]byte{{1}}}, chunks: memstore.NewChunks()}
	var ids []chunk.ID
	for i := range 40 {
		id := chunk.ID{byte(i + 1)}
		data := make([]byte, 1000)
		data[0] = byte(i)
		if err := src.chunks.Put(ctx, []chunkstore.Chunk{{ID: id, Data: data}}); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	var refs []chunk.ID
	var refBytes int64
	for _, c := range reflist.Encode(ids) {
		if err := src.chunks.Put(ctx, []chunkstore.Chunk{{ID: c.ID, Data: c.Data}}); err != nil {
			t.Fatal(err)
		}
		refs = append(refs, c.ID)
		refBytes += int64(len(c.Data))
	}
	src.snaps = []meta.Snapshot{{ID: chunk.ID{0xaa}, Vault: "v", Time: time.Unix(100, 0), Tree: ids[0], Refs: refs}}
	dst, tgt := memstore.NewChunks(), &fakeTarget{}
	now := time.Unix(1000, 0)
	var slept time.Duration
	st, err := Run(ctx, meta.Replication{Name: "r", Vault: "v"}, src, dst, tgt, Options{LimitRate: 2000, Batch: 4,
		Now:   func() time.Time { return now },
		Sleep: func(_ context.Context, d time.Duration) error { slept += d; now = now.Add(d); return nil }})
	if err != nil {
		t.Fatal(err)
	}
	total := 40*1000 + refBytes
	if st.Bytes != total || st.Chunks != 40+int64(len(refs)) || st.Snapshots != 1 || len(tgt.snaps) != 1 {
		t.Fatalf("stats %+v, want %d bytes in %d chunks and one snapshot", st, total, 40+len(refs))
	}
	// The first batch starts the clock: everything after it is paced at 2000 B/s.
	want := time.Duration(float64(total) / 2000 * float64(time.Second))
	if slept > want || slept < want-2*time.Second {
		t.Fatalf("slept %v of the fake clock, want about %v", slept, want)
	}
	again, err := Run(ctx, meta.Replication{Name: "r", Vault: "v", State: meta.ReplicationState{CursorTime: time.Unix(100, 0), CursorID: chunk.ID{0xaa}}},
		src, dst, tgt, Options{})
	if err != nil || again != (Stats{}) {
		t.Fatalf("second run: %+v %v, want nothing done", again, err)
	}

	// At 10 bytes/s the copy takes over an hour of the fake clock: the run renews its
	// grant (a grant lives an hour) instead of reading with an expired one.
	src.grants = 0
	_, err = Run(ctx, meta.Replication{Name: "r", Vault: "v"}, src, memstore.NewChunks(), &fakeTarget{}, Options{LimitRate: 10, Batch: 4,
		Now:   func() time.Time { return now },
		Sleep: func(_ context.Context, d time.Duration) error { now = now.Add(d); return nil }})
	if err != nil || src.grants < 2 {
		t.Fatalf("slow run: %v, %d grants, want the grant renewed", err, src.grants)
	}
}
