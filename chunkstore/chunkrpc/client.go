package chunkrpc

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"

	"golang.org/x/sync/errgroup"

	"github.com/cofferhq/coffer/chunkstore"
	"github.com/cofferhq/coffer/chunkstore/chunk"
	"github.com/cofferhq/coffer/transport"
)

// Client is a chunkstore.Store on a set of coordinator nodes, through a transport.Caller.
// Calls are spread round-robin over the addresses; a call that finds its node unreachable
// or unavailable is retried on the next address, each address at most once. It is safe
// for concurrent use.
type Client struct {
	c    transport.Caller
	next atomic.Uint64
	mu   struct {
		sync.RWMutex
		addrs []string
	}
}

var _ chunkstore.Store = (*Client)(nil)

// NewClient returns a Store on the coordinators at addrs (copied).
func NewClient(c transport.Caller, addrs []string) *Client {
	cl := &Client{c: c}
	cl.SetAddrs(addrs)
	return cl
}

// SetAddrs replaces the coordinator list (copied). Calls already running keep the list
// they started with.
func (cl *Client) SetAddrs(addrs []string) {
	cp := slices.Clone(addrs)
	cl.mu.Lock()
	cl.mu.addrs = cp
	cl.mu.Unlock()
}

func (cl *Client) addrs() []string {
	cl.mu.RLock()
	defer cl.mu.RUnlock()
	return cl.mu.addrs
}

// do runs one call, starting at the next address round-robin and moving on while the
// failure is retryable.
func (cl *Client) do(ctx context.Context, addrs []string, method string, req, resp any) error {
	if len(addrs) == 0 {
		return fmt.Errorf("chunkrpc: %s: no coordinator addresses: %w", method, chunkstore.ErrUnavailable)
	}
	start := int(cl.next.Add(1) % uint64(len(addrs)))
	var err error
	for i := range addrs {
		addr := addrs[(start+i)%len(addrs)]
		if err = call(ctx, cl.c, addr, method, req, resp); err == nil || !retryable(err) || ctx.Err() != nil {
			return err
		}
	}
	return err
}

// Put stores the chunks durably through the coordinators. The batch is checked first:
// chunks with a zero ID, empty data or data above chunkstore.MaxChunkSize fail it with
// ErrInvalid and nothing is sent. It is then sent in calls of at most MaxCallData bytes
// and MaxCallItems chunks, up to len(addrs) calls at a time. On error some calls may have
// stored their chunks; putting the batch again is safe (first write wins).
func (cl *Client) Put(ctx context.Context, chunks []chunkstore.Chunk) error {
	for i := range chunks {
		if err := checkChunk(&chunks[i]); err != nil {
			return err
		}
	}
	var batches [][]chunkstore.Chunk
	for rest := chunks; len(rest) > 0; {
		n, size := 0, 0
		for n < len(rest) && n < MaxCallItems && (n == 0 || size+len(rest[n].Data) <= MaxCallData) {
			size += len(rest[n].Data)
			n++
		}
		batches = append(batches, rest[:n])
		rest = rest[n:]
	}
	addrs := cl.addrs()
	put := func(ctx context.Context, b []chunkstore.Chunk) error {
		req := chunkPutReq{Chunks: make([]wChunk, len(b))}
		for i, c := range b {
			req.Chunks[i] = wChunk{ID: c.ID, Data: c.Data}
		}
		return cl.do(ctx, addrs, MethodChunkPut, req, nil)
	}
	if len(batches) <= 1 || len(addrs) <= 1 {
		for _, b := range batches {
			if err := put(ctx, b); err != nil {
				return err
			}
		}
		return nil
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(len(addrs))
	for _, b := range batches {
		g.Go(func() error { return put(gctx, b) })
	}
	return g.Wait()
}

// Get returns the chunk's bytes: ErrNotFound, ErrCorrupt, or ErrUnavailable when no
// coordinator could answer.
func (cl *Client) Get(ctx context.Context, id chunk.ID) ([]byte, error) {
	var resp chunkGetResp
	if err := cl.do(ctx, cl.addrs(), MethodChunkGet, chunkGetReq{ID: id}, &resp); err != nil {
		return nil, err
	}
	if len(resp.Data) == 0 {
		return nil, fmt.Errorf("chunkrpc: %s %s: empty reply: %w", MethodChunkGet, id.Str(), chunkstore.ErrCorrupt)
	}
	return resp.Data, nil
}

// Has reports for each id whether it is durably stored, asking in calls of at most
// MaxCallItems ids.
func (cl *Client) Has(ctx context.Context, ids []chunk.ID) ([]bool, error) {
	addrs := cl.addrs()
	out := make([]bool, 0, len(ids))
	for start := 0; start < len(ids); start += MaxCallItems {
		part := ids[start:min(start+MaxCallItems, len(ids))]
		var resp hasResp
		if err := cl.do(ctx, addrs, MethodChunkHas, chunkHasReq{IDs: part}, &resp); err != nil {
			return nil, err
		}
		if len(resp.Has) != len(part) {
			return nil, fmt.Errorf("chunkrpc: %s: %d answers for %d ids: %w", MethodChunkHas, len(resp.Has), len(part), chunkstore.ErrCorrupt)
		}
		out = append(out, resp.Has...)
	}
	return out, nil
}
