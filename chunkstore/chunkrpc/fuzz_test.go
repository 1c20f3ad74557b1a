package chunkrpc

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cofferhq/coffer/chunkstore/chunk"
	"github.com/cofferhq/coffer/chunkstore/gcnode"
	"github.com/cofferhq/coffer/chunkstore/memstore"
	"github.com/cofferhq/coffer/transport"
	"github.com/cofferhq/coffer/transport/authz"
	"github.com/cofferhq/coffer/transport/wire"
)

// FuzzGetManyRequest: any chunk.GetMany body decodes to at most MaxGetManyItems IDs or is
// refused Invalid, never a panic, and never holds room for more IDs than the limit; a
// decoded request re-encodes to one that decodes the same.
func FuzzGetManyRequest(f *testing.F) {
	for _, n := range []int{0, 1, 23, 24, 256, MaxGetManyItems, MaxGetManyItems + 1} {
		body, err := wire.Marshal(chunkGetManyReq{IDs: make([]chunk.ID, n), Grant: []byte("grant")})
		if err != nil {
			f.Fatal(err)
		}
		f.Add(body)
	}
	f.Add([]byte{0xa1, 0x01, 0x9b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, body []byte) {
		req, err := decodeGetMany(MethodChunkGetMany, body)
		if err != nil {
			if transport.CodeOf(err) != transport.Invalid {
				t.Fatalf("refusal is not Invalid: %v", err)
			}
			return
		}
		if cap(req.IDs) > MaxGetManyItems {
			t.Fatalf("%d-byte body decoded into %d ids (room for %d)", len(body), len(req.IDs), cap(req.IDs))
		}
		re, err := wire.Marshal(req)
		if err != nil {
			t.Fatal(err)
		}
		again, err := decodeGetMany(MethodChunkGetMany, re)
		if err != nil || !slices.Equal(again.IDs, req.IDs) || !slices.Equal(again.Grant, req.Grant) {
			t.Fatalf("re-encoded request decodes to %d ids, %v; want %d ids", len(again.IDs), err, len(req.IDs))
		}
	})
}

// TestCBORArrayLen: the array head parser reads every length encoding and nothing else.
func TestCBORArrayLen(t *testing.T) {
	for _, n := range []int{0, 23, 24, 255, 256, 65535, 65536, 1 << 20} {
		b, err := wire.Marshal(make([]uint8, n))
		if err != nil {
			t.Fatal(err)
		}
		// NB: []uint8 is a byte string; an array of bools is an array.
		if _, ok := cborArrayLen(b); ok {
			t.Fatalf("byte string of %d read as an array", n)
		}
		b, err = wire.Marshal(make([]bool, n))
		if err != nil {
			t.Fatal(err)
		}
		if got, ok := cborArrayLen(b); !ok || got != uint64(n) {
			t.Fatalf("array of %d read as %d, %v", n, got, ok)
		}
	}
	for _, b := range [][]byte{nil, {0x9f}, {0x99, 0x01}, {0x9b, 1, 2, 3}} {
		if n, ok := cborArrayLen(b); ok {
			t.Fatalf("%x read as an array of %d", b, n)
		}
	}
}

// fuzzPeer returns the first of an admin, a meta server and a chunk node that the
// authorization table lets call rule's method, so that the body reaches its decoder.
func fuzzPeer(rule authz.Rule) transport.Peer {
	for _, r := range []authz.Role{authz.Admin, authz.Meta, authz.Node} {
		if rule.Cell(r).Decision != authz.Refused {
			return transport.Peer{Principal: "fuzz-" + string(r), Role: transport.Role(r)}
		}
	}
	return transport.Peer{Principal: "fuzz-admin", Role: transport.RoleAdmin}
}

// FuzzServeRPC feeds arbitrary bodies to every method of AuthzRules on a Server over
// in-memory stores (GC orders accepted, grants enabled), as a peer the table admits: it
// never panics, and every failure is a *transport.Error with a known code other than
// Internal and no reply.
func FuzzServeRPC(f *testing.F) {
	rules := AuthzRules()
	id := chunk.ID{0xf0, 0x22}
	key := wKey{ID: id, Index: 1}
	seeds := map[string]any{
		MethodShardPut:       shardPutReq{Shards: []wShard{{Key: key, Meta: wMeta{K: 4, M: 2, ChunkLen: 4}, Data: []byte("fuzz")}}},
		MethodShardGet:       shardGetReq{Key: key},
		MethodShardGetMany:   shardKeysReq{Keys: []wKey{key}},
		MethodShardHas:       shardKeysReq{Keys: []wKey{key}},
		MethodShardTouch:     shardKeysReq{Keys: []wKey{key}},
		MethodShardDelete:    shardKeysReq{Keys: []wKey{key}},
		MethodShardEnumerate: enumerateReq{After: &key, Limit: 3},
		MethodShardVersions:  versionsReq{PGCount: 16},
		MethodShardStats:     empty{},
		MethodChunkPut:       chunkPutReq{Chunks: []wChunk{{ID: id, Data: []byte("fuzz")}}},
		MethodChunkGet:       chunkGetReq{ID: id},
		MethodChunkGetMany:   chunkGetManyReq{IDs: getManyIDs{id}},
		MethodChunkHas:       chunkHasReq{IDs: []chunk.ID{id}},
		MethodGCPrepare:      gcPrepareReq{Epoch: 1, Grace: int64(time.Hour)},
		MethodGCCandidates:   gcCandidatesReq{Epoch: 1, Limit: 10},
		MethodGCSweep:        gcSweepReq{Epoch: 1, IDs: []chunk.ID{id}},
	}
	for i, r := range rules {
		f.Add(uint8(i), []byte{0xa0})
		if v, ok := seeds[r.Method]; ok {
			body, err := wire.Marshal(v)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(uint8(i), body)
		}
	}
	now := time.Unix(1700000000, 0)
	f.Fuzz(func(t *testing.T, m uint8, body []byte) {
		rule := rules[int(m)%len(rules)]
		shards := memstore.NewShards()
		s := NewServer(shards, memstore.NewChunks())
		s.EnableGrants([]byte("fuzz grant key"), func() (time.Time, error) { return now, nil })
		gcn, err := gcnode.New(gcnode.Config{Store: shards, Now: func() time.Time { return now },
			Authorize: func(context.Context, string, string, uint64) error { return nil }})
		if err != nil {
			t.Fatal(err)
		}
		s.EnableGC(gcn)
		reply, err := s.ServeRPC(context.Background(), fuzzPeer(rule), rule.Method, body)
		if err == nil {
			return
		}
		var te *transport.Error
		if !errors.As(err, &te) {
			t.Fatalf("%s: error without a wire code: %v", rule.Method, err)
		}
		if te.Code == transport.Internal || strings.HasPrefix(te.Code.String(), "code(") || reply != nil {
			t.Fatalf("%s: %d-byte body: code %s (%v), reply %d bytes", rule.Method, len(body), te.Code, err, len(reply))
		}
	})
}
