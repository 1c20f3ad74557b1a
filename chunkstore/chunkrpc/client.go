package chunkrpc

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fxamacker/cbor/v2"
	"golang.org/x/sync/errgroup"

	"github.com/cofferhq/coffer/chunkstore"
	"github.com/cofferhq/coffer/chunkstore/chunk"
	"github.com/cofferhq/coffer/chunkstore/hedge"
	"github.com/cofferhq/coffer/transport"
	"github.com/cofferhq/coffer/transport/wire"
)

// SuspectHold is how long a coordinator that failed to answer (unreachable or
// unavailable) is left alone before a background probe checks it again.
const SuspectHold = 3 * time.Second

// probeTimeout bounds one background probe of a suspect coordinator.
const probeTimeout = 15 * time.Second

// Client is a chunkstore.Store on a set of coordinator nodes, through a transport.Caller.
// Calls are spread round-robin over the addresses; a call that finds its node unreachable
// (dead, or stalled: see transport.Liveness) or unavailable is retried on the next
// address. When every address failed so, the call tries them again in rounds for up to
// RetryWindow, and then fails with an AllFailedError naming a live coordinator's answer
// first.
//
// A coordinator that failed becomes suspect: calls try it only after every healthy
// address has failed, and a background probe (an empty chunk.Has, at most one at a time
// per address, every SuspectHold) clears it once it answers. So a dead node costs one
// handshake timeout, not one per call. It is safe for concurrent use.
type Client struct {
	c     transport.Caller
	now   func() time.Time
	next  atomic.Uint64
	hedge *hedge.Delay
	mu    struct {
		sync.RWMutex
		addrs   []string
		suspect map[string]*suspect
		window  time.Duration // SetRetryWindow
	}
}

// suspect is the health record of a coordinator that failed.
type suspect struct {
	retry   time.Time // when the next probe may start
	probing bool
}

var _ chunkstore.Store = (*Client)(nil)

// NewClient returns a Store on the coordinators at addrs (copied).
func NewClient(c transport.Caller, addrs []string) *Client {
	cl := &Client{c: c, now: time.Now, hedge: hedge.New(HedgeDelay)}
	cl.mu.suspect = map[string]*suspect{}
	cl.mu.window = RetryWindow
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

// order returns addrs rotated to start at the next round-robin position, with the
// suspects moved to the end (in the same rotation). Suspects due for a probe get one.
func (cl *Client) order(addrs []string) []string {
	start := int(cl.next.Add(1) % uint64(len(addrs)))
	out := make([]string, 0, len(addrs))
	var late, due []string
	cl.mu.RLock()
	for i := range addrs {
		a := addrs[(start+i)%len(addrs)]
		if sp := cl.mu.suspect[a]; sp != nil {
			late = append(late, a)
			if !sp.probing {
				due = append(due, a)
			}
		} else {
			out = append(out, a)
		}
	}
	cl.mu.RUnlock()
	for _, a := range due {
		cl.maybeProbe(a)
	}
	return append(out, late...)
}

// maybeProbe starts a background probe of suspect addr when one is due.
func (cl *Client) maybeProbe(addr string) {
	cl.mu.Lock()
	sp := cl.mu.suspect[addr]
	if sp == nil || sp.probing || cl.now().Before(sp.retry) {
		cl.mu.Unlock()
		return
	}
	sp.probing = true
	cl.mu.Unlock()
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), probeTimeout)
		defer cancel()
		var resp hasResp
		err := call(ctx, cl.c, addr, MethodChunkHas, chunkHasReq{}, &resp)
		cl.mark(addr, err != nil && retryable(err))
	}()
}

// mark records the outcome of a call to addr: a retryable failure makes it suspect (or
// keeps it so, with the next probe SuspectHold away); any answer clears that.
func (cl *Client) mark(addr string, failed bool) {
	if !failed {
		cl.mu.RLock()
		_, ok := cl.mu.suspect[addr]
		cl.mu.RUnlock()
		if !ok {
			return
		}
	}
	cl.mu.Lock()
	defer cl.mu.Unlock()
	if failed {
		cl.mu.suspect[addr] = &suspect{retry: cl.now().Add(SuspectHold)}
	} else {
		delete(cl.mu.suspect, addr)
	}
}

// roundOrder is order for round round of a call: from the second round on, suspects are
// left out unless there is no one else.
func (cl *Client) roundOrder(addrs []string, round int) []string {
	all := cl.order(addrs)
	if round == 1 {
		return all
	}
	cl.mu.RLock()
	defer cl.mu.RUnlock()
	var out []string
	for _, a := range all {
		if cl.mu.suspect[a] == nil {
			out = append(out, a)
		}
	}
	if len(out) == 0 {
		return all
	}
	return out
}

// pause waits d before the next round; false when ctx ended first.
func pause(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// do runs one call, starting at the next address round-robin (suspects last) and moving
// on while the failure is retryable; when every address failed, again in rounds for up
// to the retry window.
func (cl *Client) do(ctx context.Context, addrs []string, method string, req, resp any) error {
	if len(addrs) == 0 {
		return fmt.Errorf("chunkrpc: %s: no coordinator addresses: %w", method, chunkstore.ErrUnavailable)
	}
	window, start, backoff := cl.retryWindow(), time.Now(), retryBackoff
	for round := 1; ; round++ {
		var atts []attempt
		for _, addr := range cl.roundOrder(addrs, round) {
			err := call(ctx, cl.c, addr, method, req, resp)
			if ctx.Err() != nil {
				return err
			}
			failed := err != nil && retryable(err)
			cl.mark(addr, failed)
			if !failed {
				return err
			}
			atts = append(atts, attempt{addr, err})
		}
		if time.Since(start) >= window || !pause(ctx, backoff) {
			return allFailed(method, round, atts)
		}
		backoff = min(2*backoff, maxRetryBackoff)
	}
}

// HedgeDelay is the least a read (Get, Has) waits for one coordinator before asking the
// next one too (hedge.Factor times the average read latency when that is longer); the
// first answer wins and the other call is cancelled. It bounds what a coordinator that
// is dead but not yet known to be (no answer, no error: a handshake or idle timeout
// still running) costs a read. Puts are not hedged: they carry data.
const HedgeDelay = time.Second

// hedged runs a read call like do, but when an attempt has not answered within
// HedgeDelay the next address is tried alongside it. Each attempt decodes into its own R.
func hedged[R any](ctx context.Context, cl *Client, addrs []string, method string, req any) (R, error) {
	var zero R
	if len(addrs) == 0 {
		return zero, fmt.Errorf("chunkrpc: %s: no coordinator addresses: %w", method, chunkstore.ErrUnavailable)
	}
	// NB: encoded once, here: attempts may still be running after hedged returns, and
	// must not read req, which the caller owns again by then.
	enc, err := wire.Marshal(req)
	if err != nil {
		return zero, fmt.Errorf("chunkrpc: %s: encode request: %v: %w", method, err, chunkstore.ErrInvalid)
	}
	body := cbor.RawMessage(enc)
	window, start, backoff := cl.retryWindow(), time.Now(), retryBackoff
	for round := 1; ; round++ {
		resp, atts, err := hedgedRound[R](ctx, cl, cl.roundOrder(addrs, round), method, body)
		if atts == nil {
			return resp, err
		}
		if time.Since(start) >= window || !pause(ctx, backoff) {
			return zero, allFailed(method, round, atts)
		}
		backoff = min(2*backoff, maxRetryBackoff)
	}
}

// hedgedRound is one round of hedged over order. It returns the failures, in the order
// they came, when every address failed retryably; otherwise nil failures and the outcome.
func hedgedRound[R any](ctx context.Context, cl *Client, order []string, method string, body cbor.RawMessage) (R, []attempt, error) {
	var zero R
	// NB: hedged attempts are not watched for liveness: the hedge already asks another
	// coordinator when one is silent, and a probe timing out on a starved machine would
	// turn a slow answer into a failure.
	cctx, cancel := context.WithCancel(transport.WithoutLivenessWatch(ctx))
	defer cancel()
	type result struct {
		addr string
		resp R
		err  error
	}
	results := make(chan result, len(order)) // buffered: late attempts never block
	next, running := 0, 0
	pending := map[string]bool{} // addresses of attempts not answered yet
	launch := func() {
		addr := order[next]
		next++
		running++
		pending[addr] = true
		go func() {
			start := time.Now()
			var resp R
			err := call(cctx, cl.c, addr, method, body, &resp)
			if err == nil {
				cl.hedge.Observe(time.Since(start))
			}
			results <- result{addr, resp, err}
		}()
	}
	launch()
	delay := cl.hedge.Get()
	hedge := time.NewTimer(delay)
	defer hedge.Stop()
	var atts []attempt
	for running > 0 {
		select {
		case r := <-results:
			running--
			delete(pending, r.addr)
			if ctx.Err() != nil {
				// The caller's context ended: an answer that still arrived is good, a
				// failure is reported as it is (no other address is tried).
				return r.resp, nil, r.err
			}
			failed := r.err != nil && retryable(r.err)
			cl.mark(r.addr, failed)
			if !failed {
				return r.resp, nil, r.err
			}
			atts = append(atts, attempt{r.addr, r.err})
			if next < len(order) {
				launch()
				hedge.Reset(delay)
			}
		case <-hedge.C:
			// Silent for HedgeDelay: suspect until a background probe clears it, so the
			// next reads do not wait on it again.
			for addr := range pending {
				cl.mark(addr, true)
			}
			if next < len(order) {
				launch()
				hedge.Reset(delay)
			}
		}
	}
	return zero, atts, nil
}

// Put stores the chunks durably through the coordinators. The batch is checked first:
// chunks with a zero ID, empty data or data above chunkstore.MaxChunkSize fail it with
// ErrInvalid and nothing is sent. It is then sent in calls of at most MaxCallData bytes
// and MaxCallItems chunks, up to len(addrs) calls at a time. On error some calls may have
// stored their chunks; putting the batch again is safe (first write wins).
func (cl *Client) Put(ctx context.Context, chunks []chunkstore.Chunk) error {
	for i := range chunks {
		if err := chunks[i].Validate(); err != nil {
			return fmt.Errorf("chunkrpc: put: %w", err)
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
	// itemOverhead bounds the CBOR bytes of a wChunk besides its data: map head, two
	// keys, the ID's byte string and the data's head.
	const itemOverhead = 48
	put := func(ctx context.Context, b []chunkstore.Chunk) error {
		req := chunkPutReq{Chunks: make([]wChunk, len(b))}
		size := 16 // the request's map head, key and array head
		for i, c := range b {
			req.Chunks[i] = wChunk{ID: c.ID, Data: c.Data}
			size += itemOverhead + len(c.Data)
		}
		// NB: encoded once into a buffer of the right size, not grown by doubling, and
		// not again for each coordinator tried.
		body, err := wire.MarshalSized(req, size)
		if err != nil {
			return fmt.Errorf("chunkrpc: %s: encode request: %v: %w", MethodChunkPut, err, chunkstore.ErrInvalid)
		}
		return cl.do(ctx, addrs, MethodChunkPut, body, nil)
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
	return cl.get(ctx, id, nil)
}

// get is Get sending the restore grant token (none when nil).
func (cl *Client) get(ctx context.Context, id chunk.ID, token []byte) ([]byte, error) {
	resp, err := hedged[chunkGetResp](ctx, cl, cl.addrs(), MethodChunkGet, chunkGetReq{ID: id, Grant: token})
	if err != nil {
		return nil, err
	}
	if len(resp.Data) == 0 {
		return nil, fmt.Errorf("chunkrpc: %s %s: empty reply: %w", MethodChunkGet, id.Str(), chunkstore.ErrCorrupt)
	}
	return resp.Data, nil
}

var _ chunkstore.BatchGetter = (*Client)(nil)

// GetMany reads many chunks in chunk.GetMany calls of at most MaxGetManyItems ids, hedged
// like Get. The coordinator answers as many ids per call
// as fit in MaxCallData bytes and the rest are asked again. A coordinator without
// chunk.GetMany is asked with Get, a few ids at a time. A failed call is the error of
// every id not answered yet. Per-id errors mean what Get's do.
func (cl *Client) GetMany(ctx context.Context, ids []chunk.ID) []chunkstore.GetResult {
	return cl.getMany(ctx, cl, ids, nil)
}

// getMany is GetMany sending the restore grant token (none when nil); a coordinator
// without chunk.GetMany is asked through one, whose Get sends the same token.
func (cl *Client) getMany(ctx context.Context, one chunkstore.Store, ids []chunk.ID, token []byte) []chunkstore.GetResult {
	out := make([]chunkstore.GetResult, len(ids))
	addrs := cl.addrs()
	for done := 0; done < len(ids); {
		part := ids[done:min(done+MaxGetManyItems, len(ids))]
		resp, err := hedged[chunkGetManyResp](ctx, cl, addrs, MethodChunkGetMany, chunkGetManyReq{IDs: part, Grant: token})
		if transport.CodeOf(err) == transport.UnknownMethod {
			copy(out[done:], chunkstore.GetEach(ctx, one, ids[done:]))
			return out
		}
		if err == nil && (len(resp.Results) == 0 || len(resp.Results) > len(part)) {
			err = fmt.Errorf("chunkrpc: %s: %d answers for %d ids: %w", MethodChunkGetMany, len(resp.Results), len(part), chunkstore.ErrCorrupt)
		}
		if err != nil {
			for i := done; i < len(ids); i++ {
				out[i].Err = err
			}
			return out
		}
		for i, r := range resp.Results {
			switch {
			case r.Code != transport.OK:
				out[done+i].Err = fmt.Errorf("chunkrpc: %s %s: %w", MethodChunkGetMany, part[i].Str(), Sentinels.Wrap(&transport.Error{Code: r.Code, Msg: r.Msg}))
			case len(r.Data) == 0:
				out[done+i].Err = fmt.Errorf("chunkrpc: %s %s: empty reply: %w", MethodChunkGetMany, part[i].Str(), chunkstore.ErrCorrupt)
			default:
				out[done+i].Data = r.Data
			}
		}
		done += len(resp.Results)
	}
	return out
}

// Has reports for each id whether it is durably stored, asking in calls of at most
// MaxCallItems ids.
func (cl *Client) Has(ctx context.Context, ids []chunk.ID) ([]bool, error) {
	addrs := cl.addrs()
	out := make([]bool, 0, len(ids))
	for start := 0; start < len(ids); start += MaxCallItems {
		part := ids[start:min(start+MaxCallItems, len(ids))]
		resp, err := hedged[hasResp](ctx, cl, addrs, MethodChunkHas, chunkHasReq{IDs: part})
		if err != nil {
			return nil, err
		}
		if len(resp.Has) != len(part) {
			return nil, fmt.Errorf("chunkrpc: %s: %d answers for %d ids: %w", MethodChunkHas, len(resp.Has), len(part), chunkstore.ErrCorrupt)
		}
		out = append(out, resp.Has...)
	}
	return out, nil
}
