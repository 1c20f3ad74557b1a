// Package replicate copies a vault from a source cluster into a replica vault on this
// (the target) cluster: cross-cluster replication (issue 19, part 2).
//
// A run reads the source as a replication principal (a certificate of the source's CA,
// role replication, scoped to the vault): the vault record with its key wraps, the
// snapshot list, and for each snapshot the target has not imported a grant under which
// it reads the snapshot's reference lists and the sealed chunks the target lacks. The
// chunks are stored as they are (the target never sees plaintext and needs no key), then
// the snapshot record is imported with its source commit time, lock and hold. For the
// snapshots the target already has only a stronger lock or a new hold is carried over.
// Nothing is deleted: a snapshot forgotten on the source stays on the target.
//
// A run is resumable: which chunks to send is derived from what the target stores (a
// Has query before every batch), and which snapshots from the target's records and the
// job's cursor in Raft (meta.ReplicationState), so an interrupted run's successor
// sends nothing that arrived.
package replicate

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/cofferhq/coffer/chunkstore"
	"github.com/cofferhq/coffer/chunkstore/chunk"
	"github.com/cofferhq/coffer/chunkstore/chunkrpc"
	"github.com/cofferhq/coffer/chunkstore/reflist"
	"github.com/cofferhq/coffer/meta"
	"github.com/cofferhq/coffer/meta/metarpc"
	"github.com/cofferhq/coffer/transport"
	"github.com/cofferhq/coffer/transport/pki"
	cquic "github.com/cofferhq/coffer/transport/quic"
)

// Batch bounds: existence queries on the target per call, and chunks and bytes per
// read from the source and write to the target.
const (
	hasBatch      = 256
	copyBatch     = 64
	copyBatchSize = 8 << 20
	// grantRenew is how old a snapshot's grant may get before the run asks for a new
	// one (grants live an hour: grant.MaxTTL), so a slow copy never reads with an
	// expired grant.
	grantRenew = 45 * time.Minute
)

// Target is the target cluster's meta leader (meta/server.Server).
type Target interface {
	ListSnapshots(ctx context.Context, vault meta.VaultID) ([]meta.Snapshot, error)
	ImportReplicaVault(ctx context.Context, name string, v meta.Vault) (meta.Vault, error)
	ImportReplicaSnapshot(ctx context.Context, name string, s meta.Snapshot) (meta.ReplicaImport, error)
}

// Source is what a run reads from the source cluster.
type Source interface {
	GetVault(ctx context.Context, id meta.VaultID) (meta.Vault, error)
	ListSnapshots(ctx context.Context, vault meta.VaultID) ([]meta.Snapshot, error)
	IssueGrant(ctx context.Context, vault meta.VaultID, id meta.SnapshotID, ttl time.Duration) ([]byte, error)
	// Reader returns the sealed-chunk reader of a grant token.
	Reader(token []byte) chunkstore.BatchGetter
}

// Stats are what a run did.
type Stats struct {
	Bytes        int64 // sealed chunk bytes copied
	Chunks       int64 // chunks copied
	Snapshots    int64 // snapshot records imported
	Strengthened int64 // snapshots whose lock or hold grew to the source's
	Skipped      int64 // source snapshots removed on the target (not brought back)
}

// Options tune a run.
type Options struct {
	// LimitRate bounds the chunk bytes copied per second (0: no bound).
	LimitRate int64
	// Batch is how many chunks are read and stored at a time (0: 64; at most 64).
	Batch int
	// Now is the clock the rate limit is measured by; Sleep waits (ctx-aware). Nil:
	// time.Now and a timer.
	Now   func() time.Time
	Sleep func(ctx context.Context, d time.Duration) error
	// OnProgress, when set, is called after each batch of chunks is stored and after
	// each snapshot is imported, with the totals so far.
	OnProgress func(Stats)
	Logger     *slog.Logger
}

// Run replicates job's vault from src into tgt (records) and dst (chunks). It returns
// what it did, also on error.
func Run(ctx context.Context, job meta.Replication, src Source, dst chunkstore.Store, tgt Target, o Options) (Stats, error) {
	r := &run{job: job, src: src, dst: dst, tgt: tgt, o: o}
	if r.o.Now == nil {
		r.o.Now = time.Now
	}
	if r.o.Sleep == nil {
		r.o.Sleep = sleep
	}
	if r.o.Logger == nil {
		r.o.Logger = slog.New(slog.DiscardHandler)
	}
	if r.o.Batch <= 0 || r.o.Batch > copyBatch {
		r.o.Batch = copyBatch
	}
	err := r.vault(ctx)
	return r.st, err
}

type run struct {
	// rd reads the current snapshot's chunks under a grant obtained at granted (Now).
	rd      chunkstore.BatchGetter
	granted time.Time
	job     meta.Replication
	src     Source
	dst     chunkstore.Store
	tgt     Target
	o       Options
	st      Stats
	start   time.Time // of the rate measurement
}

func (r *run) vault(ctx context.Context) error {
	v, err := r.src.GetVault(ctx, r.job.Vault)
	if err != nil {
		return fmt.Errorf("replicate: source vault %s: %w", r.job.Vault, err)
	}
	if v.Keys == nil && len(v.KeyWraps) == 0 {
		return fmt.Errorf("replicate: source vault %s came without key wraps (a replication certificate of the source reads them)", v.ID)
	}
	if _, err := r.tgt.ImportReplicaVault(ctx, r.job.Name, v); err != nil {
		return fmt.Errorf("replicate: replica vault %s: %w", v.ID, err)
	}
	snaps, err := r.src.ListSnapshots(ctx, r.job.Vault)
	if err != nil {
		return fmt.Errorf("replicate: source snapshots of %s: %w", r.job.Vault, err)
	}
	have, err := r.tgt.ListSnapshots(ctx, r.job.Vault)
	if err != nil {
		return fmt.Errorf("replicate: replica snapshots of %s: %w", r.job.Vault, err)
	}
	byID := make(map[meta.SnapshotID]meta.Snapshot, len(have))
	for _, s := range have {
		byID[s.ID] = s
	}
	cursor := r.job.State
	for _, s := range snaps {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("replicate: %w", err)
		}
		if h, ok := byID[s.ID]; ok {
			if !stronger(h, s) {
				continue
			}
			imp, err := r.tgt.ImportReplicaSnapshot(ctx, r.job.Name, s)
			if err != nil {
				return fmt.Errorf("replicate: protection of snapshot %s: %w", s.ID.Str(), err)
			}
			if imp.Strengthened {
				r.st.Strengthened++
			}
			continue
		}
		if !cursor.After(s) {
			r.st.Skipped++ // removed here; not brought back
			continue
		}
		if err := r.snapshot(ctx, s); err != nil {
			return err
		}
	}
	return nil
}

// stronger reports whether the source's copy s carries a stronger lock or a hold the
// replica's copy h lacks.
func stronger(h, s meta.Snapshot) bool {
	if s.LegalHold && !h.LegalHold {
		return true
	}
	l := meta.StrongerLock(h.Lock, s.Lock)
	return l != nil && (h.Lock == nil || *l != *h.Lock)
}

// grant obtains a grant for s and the reader that uses it.
func (r *run) grant(ctx context.Context, s meta.Snapshot) error {
	tok, err := r.src.IssueGrant(ctx, s.Vault, s.ID, 0)
	if err != nil {
		return fmt.Errorf("replicate: grant for snapshot %s: %w", s.ID.Str(), err)
	}
	r.rd, r.granted = r.src.Reader(tok), r.o.Now()
	return nil
}

// snapshot copies the chunks of s the target lacks and imports its record.
func (r *run) snapshot(ctx context.Context, s meta.Snapshot) error {
	if err := r.grant(ctx, s); err != nil {
		return err
	}
	ids, err := r.references(ctx, r.rd, s)
	if err != nil {
		return err
	}
	for i := 0; i < len(ids); i += hasBatch {
		part := ids[i:min(i+hasBatch, len(ids))]
		stored, err := r.dst.Has(ctx, part)
		if err != nil {
			return fmt.Errorf("replicate: which chunks are stored here: %w", err)
		}
		var missing []chunk.ID
		for k, ok := range stored {
			if !ok {
				missing = append(missing, part[k])
			}
		}
		if err := r.copy(ctx, s, missing); err != nil {
			return fmt.Errorf("replicate: snapshot %s: %w", s.ID.Str(), err)
		}
	}
	imp, err := r.tgt.ImportReplicaSnapshot(ctx, r.job.Name, s)
	if err != nil {
		return fmt.Errorf("replicate: import snapshot %s: %w", s.ID.Str(), err)
	}
	if imp.Imported {
		r.st.Snapshots++
	}
	r.progress()
	return nil
}

// references returns every chunk s needs, sorted and unique: its reference-list chunks
// and the chunks they list (the tree among them), each list checked against its ID.
func (r *run) references(ctx context.Context, rd chunkstore.BatchGetter, s meta.Snapshot) ([]chunk.ID, error) {
	ids := slices.Clone(s.Refs)
	for k, res := range rd.GetMany(ctx, s.Refs) {
		if res.Err != nil {
			return nil, fmt.Errorf("replicate: reference list %s of snapshot %s: %w", s.Refs[k].Str(), s.ID.Str(), res.Err)
		}
		l, err := reflist.Open(s.Refs[k], res.Data)
		if err != nil {
			return nil, fmt.Errorf("replicate: snapshot %s: %w", s.ID.Str(), err)
		}
		ids = append(ids, l...)
	}
	ids = append(ids, s.Tree)
	slices.SortFunc(ids, func(a, b chunk.ID) int { return bytes.Compare(a[:], b[:]) })
	return slices.Compact(ids), nil
}

// copy reads ids of snapshot s from the source and stores them here, in batches, at the
// rate limit, renewing the grant when it gets old.
func (r *run) copy(ctx context.Context, s meta.Snapshot, ids []chunk.ID) error {
	for i := 0; i < len(ids); i += r.o.Batch {
		part := ids[i:min(i+r.o.Batch, len(ids))]
		if r.o.Now().Sub(r.granted) >= grantRenew {
			if err := r.grant(ctx, s); err != nil {
				return err
			}
		}
		res := r.rd.GetMany(ctx, part)
		batch := make([]chunkstore.Chunk, 0, len(part))
		size := 0
		flush := func() error {
			if len(batch) == 0 {
				return nil
			}
			if err := r.dst.Put(ctx, batch); err != nil {
				return fmt.Errorf("store %d chunks: %w", len(batch), err)
			}
			r.st.Chunks += int64(len(batch))
			r.st.Bytes += int64(size)
			r.progress()
			if err := r.throttle(ctx); err != nil {
				return err
			}
			batch, size = batch[:0], 0
			return nil
		}
		for k, g := range res {
			if g.Err != nil {
				return fmt.Errorf("read chunk %s from the source: %w", part[k].Str(), g.Err)
			}
			if size+len(g.Data) > copyBatchSize {
				if err := flush(); err != nil {
					return err
				}
			}
			batch = append(batch, chunkstore.Chunk{ID: part[k], Data: g.Data})
			size += len(g.Data)
		}
		if err := flush(); err != nil {
			return err
		}
	}
	return nil
}

// throttle waits until the bytes copied so far fit the rate limit.
func (r *run) throttle(ctx context.Context) error {
	if r.o.LimitRate <= 0 {
		return nil
	}
	now := r.o.Now()
	if r.start.IsZero() {
		r.start = now
	}
	due := r.start.Add(time.Duration(float64(r.st.Bytes) / float64(r.o.LimitRate) * float64(time.Second)))
	// Wait in steps of at most a second, reporting progress after each, so that a
	// slow rate never looks like a silent run.
	for d := due.Sub(now); d > 0; d -= time.Second {
		if err := r.o.Sleep(ctx, min(d, time.Second)); err != nil {
			return fmt.Errorf("replicate: %w", err)
		}
		r.progress()
	}
	return nil
}

func (r *run) progress() {
	if r.o.OnProgress != nil {
		r.o.OnProgress(r.st)
	}
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Remote is a connection to the source cluster as the job's replication principal.
type Remote struct {
	ep     *cquic.Endpoint
	meta   *metarpc.Client
	chunks *chunkrpc.Client
}

var _ Source = (*Remote)(nil)

// Dial connects to job's source: its meta servers, trusting only the source CA, with
// the job's certificate and key; the chunk entry points come from the source's map.
func Dial(ctx context.Context, job meta.Replication, logger *slog.Logger) (*Remote, error) {
	id, err := pki.NewIdentity(job.SourceCA, job.Cert, job.Key)
	if err != nil {
		return nil, fmt.Errorf("replicate: job %s: credentials: %w", job.Name, err)
	}
	if id.Role() != transport.RoleReplication {
		return nil, fmt.Errorf("replicate: job %s: the certificate has role %q, not %q", job.Name, id.Role(), transport.RoleReplication)
	}
	ep, err := cquic.New(cquic.Config{Identity: id, Logger: logger})
	if err != nil {
		return nil, fmt.Errorf("replicate: job %s: %w", job.Name, err)
	}
	mc := metarpc.NewClient(ep, job.Source)
	m, err := mc.ClusterMap(ctx)
	if err != nil {
		_ = ep.Close()
		return nil, fmt.Errorf("replicate: job %s: source cluster map: %w", job.Name, err)
	}
	var addrs []string
	for _, n := range m.Nodes {
		addrs = append(addrs, n.Addr)
	}
	if len(addrs) == 0 {
		_ = ep.Close()
		return nil, fmt.Errorf("replicate: job %s: the source names no chunk node", job.Name)
	}
	return &Remote{ep: ep, meta: mc, chunks: chunkrpc.NewClient(ep, addrs)}, nil
}

// Close closes the connection.
func (s *Remote) Close() error { return s.ep.Close() }

// GetVault implements Source.
func (s *Remote) GetVault(ctx context.Context, id meta.VaultID) (meta.Vault, error) {
	return s.meta.GetVault(ctx, id)
}

// ListSnapshots implements Source.
func (s *Remote) ListSnapshots(ctx context.Context, vault meta.VaultID) ([]meta.Snapshot, error) {
	return s.meta.ListSnapshots(ctx, vault)
}

// IssueGrant implements Source.
func (s *Remote) IssueGrant(ctx context.Context, vault meta.VaultID, id meta.SnapshotID, ttl time.Duration) ([]byte, error) {
	tok, _, err := s.meta.IssueGrant(ctx, vault, id, ttl)
	return tok, err
}

// Reader implements Source.
func (s *Remote) Reader(token []byte) chunkstore.BatchGetter { return s.chunks.WithGrant(token) }
