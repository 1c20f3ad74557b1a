package chunkrpc

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/cofferhq/coffer/chunkstore"
	"github.com/cofferhq/coffer/chunkstore/chunk"
	"github.com/cofferhq/coffer/chunkstore/gcnode"
	"github.com/cofferhq/coffer/meta"
	"github.com/cofferhq/coffer/transport"
)

// GC methods: the meta leader's orders to a chunk node (see chunkstore/gcnode).
const (
	MethodGCPrepare    = "gc.Prepare"
	MethodGCCandidates = "gc.Candidates"
	MethodGCSweep      = "gc.Sweep"
)

type gcPrepareReq struct {
	Epoch uint64 `cbor:"1,keyasint"`
	Grace int64  `cbor:"2,keyasint"` // nanoseconds
}

type gcCandidatesReq struct {
	Epoch uint64    `cbor:"1,keyasint"`
	After *chunk.ID `cbor:"2,keyasint,omitempty"`
	Limit int       `cbor:"3,keyasint"`
}

type wCandidate struct {
	ID    chunk.ID `cbor:"1,keyasint"`
	Bytes int64    `cbor:"2,keyasint"`
}

type gcCandidatesResp struct {
	Candidates []wCandidate `cbor:"1,keyasint"`
	Next       *chunk.ID    `cbor:"2,keyasint,omitempty"`
}

type gcSweepReq struct {
	Epoch uint64     `cbor:"1,keyasint"`
	IDs   []chunk.ID `cbor:"2,keyasint"`
}

type gcSweepResp struct {
	Chunks int64 `cbor:"1,keyasint"`
	Shards int64 `cbor:"2,keyasint"`
	Bytes  int64 `cbor:"3,keyasint"`
	Spared int64 `cbor:"4,keyasint"`
}

// EnableGC serves the gc.* methods from n. Without it they answer Unavailable. Call
// before serving.
func (s *Server) EnableGC(n *gcnode.Node) { s.gc = n }

// gcErr maps a gcnode error to a wire error: refusals are PermissionDenied.
func gcErr(method string, err error) error {
	switch {
	case errors.Is(err, meta.ErrDenied):
		return transport.Errorf(transport.PermissionDenied, "chunkrpc: %s: %v", method, err)
	case errors.Is(err, meta.ErrInvalid):
		return transport.Errorf(transport.Invalid, "chunkrpc: %s: %v", method, err)
	case errors.Is(err, meta.ErrUnavailable), errors.Is(err, meta.ErrNotLeader):
		return transport.Errorf(transport.Unavailable, "chunkrpc: %s: %v", method, err)
	}
	return err
}

func (s *Server) serveGC(ctx context.Context, peer transport.Peer, method string, body []byte) (any, error) {
	if peer.Role != transport.RoleMeta {
		return nil, s.refuse(peer, method, transport.Errorf(transport.PermissionDenied, "chunkrpc: %s: %s %q may not give GC orders (only a %q certificate, and then only the meta leader's orders count)", method, peer.Role, peer.Principal, transport.RoleMeta))
	}
	if s.gc == nil {
		return nil, transport.Errorf(transport.Unavailable, "chunkrpc: %s: this node does not take part in garbage collection", method)
	}
	switch method {
	case MethodGCPrepare:
		var req gcPrepareReq
		if err := decode(method, body, &req); err != nil {
			return nil, err
		}
		return empty{}, gcErr(method, s.gc.Prepare(ctx, peer.Principal, req.Epoch, time.Duration(req.Grace)))
	case MethodGCCandidates:
		var req gcCandidatesReq
		if err := decode(method, body, &req); err != nil {
			return nil, err
		}
		cands, next, err := s.gc.Candidates(ctx, peer.Principal, req.Epoch, req.After, req.Limit)
		if err != nil {
			return nil, gcErr(method, err)
		}
		resp := gcCandidatesResp{Candidates: make([]wCandidate, len(cands)), Next: next}
		for i, c := range cands {
			resp.Candidates[i] = wCandidate{ID: c.ID, Bytes: c.Bytes}
		}
		return resp, nil
	case MethodGCSweep:
		var req gcSweepReq
		if err := decode(method, body, &req); err != nil {
			return nil, err
		}
		r, err := s.gc.Sweep(ctx, peer.Principal, req.Epoch, req.IDs)
		if err != nil {
			return nil, gcErr(method, err)
		}
		return gcSweepResp{Chunks: r.Chunks, Shards: r.Shards, Bytes: r.Bytes, Spared: r.Spared}, nil
	}
	return nil, transport.Errorf(transport.UnknownMethod, "chunkrpc: unknown method %q", method)
}

// GCClient is meta.GCPeer for one remote chunk node. The caller's certificate must be
// the meta leader's node certificate, or the node refuses.
type GCClient struct {
	c    transport.Caller
	addr string
}

var _ meta.GCPeer = (*GCClient)(nil)

// NewGCClient returns a GC peer for the node at addr.
func NewGCClient(c transport.Caller, addr string) *GCClient { return &GCClient{c: c, addr: addr} }

// Prepare implements meta.GCPeer.
func (g *GCClient) Prepare(ctx context.Context, epoch uint64, grace time.Duration) error {
	return call(ctx, g.c, g.addr, MethodGCPrepare, gcPrepareReq{Epoch: epoch, Grace: int64(grace)}, nil)
}

// Candidates implements meta.GCPeer.
func (g *GCClient) Candidates(ctx context.Context, epoch uint64, after *chunk.ID, limit int) ([]meta.GCCandidate, *chunk.ID, error) {
	var resp gcCandidatesResp
	if err := call(ctx, g.c, g.addr, MethodGCCandidates, gcCandidatesReq{Epoch: epoch, After: after, Limit: limit}, &resp); err != nil {
		return nil, nil, err
	}
	if len(resp.Candidates) > limit {
		return nil, nil, fmt.Errorf("chunkrpc: %s on %s: %d candidates for a limit of %d: %w", MethodGCCandidates, g.addr, len(resp.Candidates), limit, chunkstore.ErrCorrupt)
	}
	out := make([]meta.GCCandidate, len(resp.Candidates))
	for i, c := range resp.Candidates {
		out[i] = meta.GCCandidate{ID: c.ID, Bytes: c.Bytes}
	}
	return out, resp.Next, nil
}

// Sweep implements meta.GCPeer.
func (g *GCClient) Sweep(ctx context.Context, epoch uint64, ids []chunk.ID) (chunkstore.SweepResult, error) {
	var resp gcSweepResp
	if err := call(ctx, g.c, g.addr, MethodGCSweep, gcSweepReq{Epoch: epoch, IDs: ids}, &resp); err != nil {
		return chunkstore.SweepResult{}, err
	}
	return chunkstore.SweepResult{Chunks: resp.Chunks, Shards: resp.Shards, Bytes: resp.Bytes, Spared: resp.Spared}, nil
}
