package chunkrpc

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/cofferhq/coffer/chunkstore"
	"github.com/cofferhq/coffer/chunkstore/chunk"
	"github.com/cofferhq/coffer/chunkstore/gcnode"
	"github.com/cofferhq/coffer/chunkstore/gcorder"
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

// gcErr maps a gcnode error to its wire error (the codes gcorder's errors document):
// refusals are PermissionDenied.
func gcErr(method string, err error) error {
	switch {
	case errors.Is(err, gcorder.ErrDenied):
		return transport.Errorf(transport.PermissionDenied, "chunkrpc: %s: %v", method, err)
	case errors.Is(err, gcorder.ErrInvalid):
		return transport.Errorf(transport.Invalid, "chunkrpc: %s: %v", method, err)
	case errors.Is(err, gcorder.ErrUnavailable):
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

// GCClient is the meta leader's GC peer (meta.GCPeer, asserted in node) for one remote
// chunk node. The caller's certificate must be
// the meta leader's node certificate, or the node refuses.
type GCClient struct {
	c    transport.Caller
	addr string
}

// NewGCClient returns a GC peer for the node at addr.
func NewGCClient(c transport.Caller, addr string) *GCClient { return &GCClient{c: c, addr: addr} }

// Prepare sends the order to the node.
func (g *GCClient) Prepare(ctx context.Context, epoch uint64, grace time.Duration) error {
	return call(ctx, g.c, g.addr, MethodGCPrepare, gcPrepareReq{Epoch: epoch, Grace: int64(grace)}, nil)
}

// Candidates sends the order to the node.
func (g *GCClient) Candidates(ctx context.Context, epoch uint64, after *chunk.ID, limit int) ([]gcorder.Candidate, *chunk.ID, error) {
	var resp gcCandidatesResp
	if err := call(ctx, g.c, g.addr, MethodGCCandidates, gcCandidatesReq{Epoch: epoch, After: after, Limit: limit}, &resp); err != nil {
		return nil, nil, err
	}
	if len(resp.Candidates) > limit {
		return nil, nil, fmt.Errorf("chunkrpc: %s on %s: %d candidates for a limit of %d: %w", MethodGCCandidates, g.addr, len(resp.Candidates), limit, chunkstore.ErrCorrupt)
	}
	out := make([]gcorder.Candidate, len(resp.Candidates))
	for i, c := range resp.Candidates {
		out[i] = gcorder.Candidate{ID: c.ID, Bytes: c.Bytes}
	}
	return out, resp.Next, nil
}

// Sweep sends the order to the node.
func (g *GCClient) Sweep(ctx context.Context, epoch uint64, ids []chunk.ID) (gcorder.SweepResult, error) {
	var resp gcSweepResp
	if err := call(ctx, g.c, g.addr, MethodGCSweep, gcSweepReq{Epoch: epoch, IDs: ids}, &resp); err != nil {
		return gcorder.SweepResult{}, err
	}
	return gcorder.SweepResult{Chunks: resp.Chunks, Shards: resp.Shards, Bytes: resp.Bytes, Spared: resp.Spared}, nil
}
