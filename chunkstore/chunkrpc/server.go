package chunkrpc

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/cofferhq/coffer/chunkstore"
	"github.com/cofferhq/coffer/chunkstore/chunk"
	"github.com/cofferhq/coffer/chunkstore/gcnode"
	"github.com/cofferhq/coffer/transport"
	"github.com/cofferhq/coffer/transport/wire"
)

// Server answers shard.* and chunk.* RPCs from a node's stores. It is a transport.Handler,
// safe for concurrent use, and holds no state of its own.
type Server struct {
	shards chunkstore.ShardStore
	chunks chunkstore.Store
	grants *grantGate   // nil: restore-operator peers are refused (see EnableGrants)
	gc     *gcnode.Node // nil: gc.* answers Unavailable (see EnableGC)
	// canDelete, when set, vets every shard.Delete (see GuardDeletes).
	canDelete func(ctx context.Context, keys []chunkstore.ShardKey) error
	// refused, when set, is told of every request refused for its peer's role (see
	// OnRefused).
	refused func(peer transport.Peer, method, reason string)
}

// OnRefused sets fn to be called (synchronously, keep it short) for each request refused
// because of its peer's role: a non-node touching shards, a restore operator writing or
// reading without a valid grant. The node records them in the audit log. Call before
// serving.
func (s *Server) OnRefused(fn func(peer transport.Peer, method, reason string)) { s.refused = fn }

// refuse reports err (a role refusal) to the hook and returns it.
func (s *Server) refuse(peer transport.Peer, method string, err error) error {
	if s.refused != nil {
		s.refused(peer, method, err.Error())
	}
	return err
}

var _ transport.Handler = (*Server)(nil)

// NewServer serves shards (this node's shard store) and chunks (the node's coordinator, a
// chunkstore.Store over the cluster). Either may be nil: its methods then answer
// Unavailable.
func NewServer(shards chunkstore.ShardStore, chunks chunkstore.Store) *Server {
	return &Server{shards: shards, chunks: chunks}
}

// GuardDeletes makes every shard.Delete pass fn first: fn returns an error (wrapping
// chunkstore.ErrInvalid or a PermissionDenied transport error) for a batch that holds a
// key this node must keep, and nothing of the batch is deleted. The node allows only
// repair's deletes: a shard this node does not own under the current map (a stray copy)
// or one whose stored bytes are corrupt. Garbage collection deletes through gc.Sweep
// orders instead. Call before serving.
func (s *Server) GuardDeletes(fn func(ctx context.Context, keys []chunkstore.ShardKey) error) {
	s.canDelete = fn
}

// Register mounts s on m under the prefixes "shard", "chunk" and "gc".
func (s *Server) Register(m *transport.Mux) {
	m.Handle("shard", s)
	m.Handle("chunk", s)
	m.Handle("gc", s)
}

// ServeRPC implements transport.Handler. Errors carry the code of the chunkstore sentinel
// they match (see Sentinels); a malformed body is Invalid, an unknown method
// UnknownMethod, a non-node peer on shard.* PermissionDenied.
func (s *Server) ServeRPC(ctx context.Context, peer transport.Peer, method string, body []byte) ([]byte, error) {
	if peer.Principal == "" || peer.Role == "" {
		return nil, transport.Errorf(transport.Unauthenticated, "chunkrpc: %s: unauthenticated peer", method)
	}
	var (
		out any
		err error
	)
	switch method {
	case MethodGCPrepare, MethodGCCandidates, MethodGCSweep:
		out, err = s.serveGC(ctx, peer, method, body)
	case MethodShardPut, MethodShardGet, MethodShardGetMany, MethodShardHas, MethodShardTouch, MethodShardDelete, MethodShardEnumerate, MethodShardVersions, MethodShardStats:
		if !peer.Role.IsNode() {
			return nil, s.refuse(peer, method, transport.Errorf(transport.PermissionDenied, "chunkrpc: %s: %s %q may not access shards (node role required)", method, peer.Role, peer.Principal))
		}
		if s.shards == nil {
			return nil, transport.Errorf(transport.Unavailable, "chunkrpc: %s: this node stores no shards", method)
		}
		out, err = s.serveShard(ctx, peer, method, body)
	case MethodChunkPut, MethodChunkGet, MethodChunkGetMany, MethodChunkHas:
		if peer.Role == transport.RoleRestore || peer.Role == transport.RoleReplication {
			if err := s.checkRestoreRead(ctx, peer, method, body); err != nil {
				return nil, err
			}
		}
		if s.chunks == nil {
			return nil, transport.Errorf(transport.Unavailable, "chunkrpc: %s: this node does not coordinate chunks", method)
		}
		out, err = s.serveChunk(ctx, method, body)
	default:
		return nil, transport.Errorf(transport.UnknownMethod, "chunkrpc: unknown method %q", method)
	}
	if err != nil {
		var te *transport.Error
		if errors.As(err, &te) {
			return nil, err
		}
		return nil, &transport.Error{Code: Sentinels.Code(err), Msg: err.Error()}
	}
	return wire.Marshal(out)
}

// checkRestoreRead lets a restore operator's call through only when it is a chunk read
// whose every chunk its restore grant covers, the grant verified once for the call.
// Restore operators read through grants only: no writes, no existence probes. Refusals
// of permission are audited.
func (s *Server) checkRestoreRead(ctx context.Context, peer transport.Peer, method string, body []byte) error {
	var ids []chunk.ID
	var grant []byte
	switch method {
	case MethodChunkGet:
		var req chunkGetReq
		if err := decode(method, body, &req); err != nil {
			return err
		}
		ids, grant = []chunk.ID{req.ID}, req.Grant
	case MethodChunkGetMany:
		req, err := decodeGetMany(method, body)
		if err != nil {
			return err
		}
		ids, grant = req.IDs, req.Grant
	default:
		return s.refuse(peer, method, transport.Errorf(transport.PermissionDenied, "chunkrpc: %s: %s %q is read-only", method, peer.Role, peer.Principal))
	}
	if s.grants == nil {
		return s.refuse(peer, method, transport.Errorf(transport.PermissionDenied, "chunkrpc: %s %q: this node serves no restore grants", peer.Role, peer.Principal))
	}
	err := s.grants.authorize(ctx, s.chunks, peer, grant, ids)
	if err == nil {
		return nil
	}
	var te *transport.Error
	if !errors.As(err, &te) {
		return &transport.Error{Code: Sentinels.Code(err), Msg: err.Error()}
	}
	if te.Code == transport.PermissionDenied {
		return s.refuse(peer, method, err)
	}
	return err
}

// decode unmarshals a request body, answering Invalid with what is wrong.
func decode(method string, body []byte, v any) error {
	if err := wire.Unmarshal(body, v); err != nil {
		return transport.Errorf(transport.Invalid, "chunkrpc: %s: malformed request body: %v", method, err)
	}
	return nil
}

// decodeGetMany decodes a chunk.GetMany request, refusing one of more than
// MaxGetManyItems IDs as Invalid, naming the limit, before decoding (allocating) its IDs.
func decodeGetMany(method string, body []byte) (chunkGetManyReq, error) {
	var req chunkGetManyReq
	err := wire.Unmarshal(body, &req)
	if over := (*tooManyIDsError)(nil); errors.As(err, &over) || len(req.IDs) > MaxGetManyItems {
		n := uint64(len(req.IDs))
		if over != nil {
			n = over.n
		}
		return chunkGetManyReq{}, transport.Errorf(transport.Invalid, "chunkrpc: %s: %d ids exceed the limit of %d per call", method, n, MaxGetManyItems)
	}
	if err != nil {
		return chunkGetManyReq{}, transport.Errorf(transport.Invalid, "chunkrpc: %s: malformed request body: %v", method, err)
	}
	return req, nil
}

func tooMany(method string, n int) error {
	return transport.Errorf(transport.Invalid, "chunkrpc: %s: %d items exceed the limit of %d per call", method, n, MaxCallItems)
}

// decodeKeys decodes a request of shard keys ({1: [Key…]}) of at most MaxCallItems keys.
func decodeKeys(method string, body []byte) ([]chunkstore.ShardKey, error) {
	var req shardKeysReq
	if err := decode(method, body, &req); err != nil {
		return nil, err
	}
	if len(req.Keys) > MaxCallItems {
		return nil, tooMany(method, len(req.Keys))
	}
	keys := make([]chunkstore.ShardKey, len(req.Keys))
	for i, k := range req.Keys {
		keys[i] = fromWKey(k)
	}
	return keys, nil
}

func (s *Server) serveShard(ctx context.Context, peer transport.Peer, method string, body []byte) (any, error) {
	switch method {
	case MethodShardPut:
		var req shardPutReq
		if err := decode(method, body, &req); err != nil {
			return nil, err
		}
		if len(req.Shards) > MaxCallItems {
			return nil, tooMany(method, len(req.Shards))
		}
		shards := make([]chunkstore.Shard, len(req.Shards))
		for i, w := range req.Shards {
			shards[i] = fromWShard(w)
		}
		return empty{}, s.shards.PutShards(ctx, shards)
	case MethodShardGet:
		var req shardGetReq
		if err := decode(method, body, &req); err != nil {
			return nil, err
		}
		sh, err := s.shards.GetShard(ctx, fromWKey(req.Key))
		if err != nil {
			return nil, err
		}
		return toWShard(sh), nil
	case MethodShardGetMany:
		keys, err := decodeKeys(method, body)
		if err != nil {
			return nil, err
		}
		return s.getShards(ctx, keys), nil
	case MethodShardHas, MethodShardTouch, MethodShardDelete:
		keys, err := decodeKeys(method, body)
		if err != nil {
			return nil, err
		}
		if method == MethodShardDelete {
			if s.canDelete != nil {
				if err := s.canDelete(ctx, keys); err != nil {
					var te *transport.Error
					if !errors.As(err, &te) {
						err = transport.Errorf(transport.PermissionDenied, "chunkrpc: %s: %v", method, err)
					}
					return nil, s.refuse(peer, method, err)
				}
			}
			return empty{}, s.shards.DeleteShards(ctx, keys)
		}
		var has []bool
		if t, ok := s.shards.(chunkstore.GCStore); ok && method == MethodShardTouch {
			has, err = t.TouchShards(ctx, keys)
		} else {
			has, err = s.shards.HasShards(ctx, keys)
		}
		if err != nil {
			return nil, err
		}
		if len(has) != len(keys) {
			return nil, fmt.Errorf("chunkrpc: %s: store answered %d of %d keys", method, len(has), len(keys))
		}
		return hasResp{Has: has}, nil
	case MethodShardEnumerate:
		var req enumerateReq
		if err := decode(method, body, &req); err != nil {
			return nil, err
		}
		return s.enumerate(ctx, req)
	case MethodShardVersions:
		var req versionsReq
		if err := decode(method, body, &req); err != nil {
			return nil, err
		}
		pl, ok := s.shards.(chunkstore.PGLister)
		if !ok {
			return nil, transport.Errorf(transport.UnknownMethod, "chunkrpc: %s: this node's store keeps no PG change marks", method)
		}
		if !chunkstore.ValidPGCount(req.PGCount, 0) {
			return nil, transport.Errorf(transport.Invalid, "chunkrpc: %s: pg count %d is not a power of two", method, req.PGCount)
		}
		v, err := pl.PGVersions(ctx, req.PGCount)
		if err != nil {
			return nil, err
		}
		return versionsResp{Incarnation: v.Incarnation, Seqs: v.Seqs}, nil
	case MethodShardStats:
		if err := decode(method, body, &empty{}); err != nil {
			return nil, err
		}
		st, err := s.shards.Stats(ctx)
		if err != nil {
			return nil, err
		}
		return statsResp{Shards: st.Shards, Bytes: st.Bytes, Segments: st.Segments, Capacity: st.Capacity, Corrupt: st.Corrupt}, nil
	}
	return nil, transport.Errorf(transport.UnknownMethod, "chunkrpc: unknown method %q", method)
}

// errPageFull stops a page's enumeration once it has one entry beyond the limit.
var errPageFull = errors.New("chunkrpc: page full")

func (s *Server) enumerate(ctx context.Context, req enumerateReq) (enumerateResp, error) {
	limit := req.Limit
	switch {
	case limit < 0 || limit > MaxEnumerateLimit:
		return enumerateResp{}, transport.Errorf(transport.Invalid, "chunkrpc: %s: limit %d not in 0..%d", MethodShardEnumerate, limit, MaxEnumerateLimit)
	case limit == 0:
		limit = DefaultEnumerateLimit
	}
	var after *chunkstore.ShardKey
	if req.After != nil {
		k := fromWKey(*req.After)
		after = &k
	}
	resp := enumerateResp{Infos: make([]wInfo, 0, min(limit, 256))}
	page := func(info chunkstore.ShardInfo) error {
		if len(resp.Infos) == limit {
			resp.More = true
			return errPageFull
		}
		resp.Infos = append(resp.Infos, wInfo{Key: toWKey(info.Key), Meta: toWMeta(info.Meta), Len: info.Len})
		return nil
	}
	var err error
	if req.PGCount == 0 {
		err = s.shards.EnumerateShards(ctx, after, page)
	} else {
		pl, ok := s.shards.(chunkstore.PGLister)
		switch {
		case !ok:
			return enumerateResp{}, transport.Errorf(transport.UnknownMethod, "chunkrpc: %s: this node's store does not list by PG", MethodShardEnumerate)
		case !chunkstore.ValidPGCount(req.PGCount, req.PG):
			return enumerateResp{}, transport.Errorf(transport.Invalid, "chunkrpc: %s: pg %d of %d", MethodShardEnumerate, req.PG, req.PGCount)
		}
		err = pl.EnumeratePG(ctx, req.PGCount, req.PG, after, page)
	}
	if err != nil && !errors.Is(err, errPageFull) {
		return enumerateResp{}, err
	}
	return resp, nil
}

func (s *Server) serveChunk(ctx context.Context, method string, body []byte) (any, error) {
	switch method {
	case MethodChunkPut:
		var req chunkPutReq
		if err := decode(method, body, &req); err != nil {
			return nil, err
		}
		if len(req.Chunks) > MaxCallItems {
			return nil, tooMany(method, len(req.Chunks))
		}
		chunks := make([]chunkstore.Chunk, len(req.Chunks))
		for i, c := range req.Chunks {
			chunks[i] = chunkstore.Chunk{ID: c.ID, Data: c.Data}
		}
		return empty{}, s.chunks.Put(ctx, chunks)
	case MethodChunkGet:
		var req chunkGetReq
		if err := decode(method, body, &req); err != nil {
			return nil, err
		}
		data, err := s.chunks.Get(ctx, req.ID)
		if err != nil {
			return nil, err
		}
		return chunkGetResp{Data: data}, nil
	case MethodChunkGetMany:
		req, err := decodeGetMany(method, body)
		if err != nil {
			return nil, err
		}
		return s.getChunks(ctx, req.IDs), nil
	case MethodChunkHas:
		var req chunkHasReq
		if err := decode(method, body, &req); err != nil {
			return nil, err
		}
		if len(req.IDs) > MaxCallItems {
			return nil, tooMany(method, len(req.IDs))
		}
		has, err := s.chunks.Has(ctx, req.IDs)
		if err != nil {
			return nil, err
		}
		if len(has) != len(req.IDs) {
			return nil, fmt.Errorf("chunkrpc: %s: store answered %d of %d ids", method, len(has), len(req.IDs))
		}
		return hasResp{Has: has}, nil
	}
	return nil, transport.Errorf(transport.UnknownMethod, "chunkrpc: unknown method %q", method)
}

// getShardsParallel is how many shards one shard.GetMany reads at once: a batch's
// shards sit in different segments (and, with a cold page cache, at different places
// on the disk), so reading a window of them together hides the device's latency that
// reading them one after another would add up.
const getShardsParallel = 8

// getShards answers shard.GetMany: the keys in order, each checked like shard.Get, until
// the reply holds MaxCallData bytes of shard data; the keys after that are left out and
// the client asks for them again. Keys are read getShardsParallel at a time; a window
// read past the limit is dropped, not sent.
func (s *Server) getShards(ctx context.Context, keys []chunkstore.ShardKey) shardGetManyResp {
	resp := shardGetManyResp{Results: make([]wShardResult, 0, len(keys))}
	size := 0
	var win [getShardsParallel]struct {
		sh  chunkstore.Shard
		err error
	}
	for start := 0; start < len(keys) && size < MaxCallData; start += getShardsParallel {
		part := keys[start:min(start+getShardsParallel, len(keys))]
		var wg sync.WaitGroup
		for i, k := range part[1:] {
			wg.Go(func() { win[i+1].sh, win[i+1].err = s.shards.GetShard(ctx, k) })
		}
		win[0].sh, win[0].err = s.shards.GetShard(ctx, part[0])
		wg.Wait()
		for i := range part {
			if size >= MaxCallData {
				break
			}
			sh, err := win[i].sh, win[i].err
			win[i].sh, win[i].err = chunkstore.Shard{}, nil
			if err != nil {
				resp.Results = append(resp.Results, wShardResult{Code: Sentinels.Code(err), Msg: err.Error()})
				continue
			}
			w := toWShard(sh)
			resp.Results = append(resp.Results, wShardResult{Shard: &w})
			size += len(sh.Data)
		}
	}
	return resp
}

// Steps of getChunks: the first reads getManyFirstStep chunks; each later one as many as
// the reply's remaining room holds at the average size so far, at most getManyMaxStep.
// So a reply stays near MaxCallData without reading (and holding) far more than it
// sends, whatever the chunks' sizes.
const (
	getManyFirstStep = 8
	getManyMaxStep   = 64
)

// getChunks answers chunk.GetMany: the ids in order, read in steps (each one batched
// read when the coordinator's store has one), until the reply holds MaxCallData bytes;
// the ids after that are left out and the client asks for them again.
func (s *Server) getChunks(ctx context.Context, ids []chunk.ID) chunkGetManyResp {
	resp := chunkGetManyResp{Results: make([]wChunkResult, 0, len(ids))}
	size, read := 0, 0
	for start := 0; start < len(ids) && size < MaxCallData; {
		step := getManyFirstStep
		if read > 0 {
			avg := max(1, size/read)
			step = min(getManyMaxStep, max(1, (MaxCallData-size)/avg))
		}
		part := ids[start:min(start+step, len(ids))]
		start += len(part)
		for _, r := range chunkstore.GetMany(ctx, s.chunks, part) {
			if size >= MaxCallData {
				break // the client asks again for the rest
			}
			if r.Err != nil {
				resp.Results = append(resp.Results, wChunkResult{Code: Sentinels.Code(r.Err), Msg: r.Err.Error()})
				continue
			}
			resp.Results = append(resp.Results, wChunkResult{Data: r.Data})
			size += len(r.Data)
			read++
		}
	}
	return resp
}
