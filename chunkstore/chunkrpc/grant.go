package chunkrpc

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/cofferhq/coffer/chunkstore"
	"github.com/cofferhq/coffer/chunkstore/chunk"
	"github.com/cofferhq/coffer/meta"
	"github.com/cofferhq/coffer/transport"
)

// grantCacheSize bounds how many snapshots' reference lists a node keeps for grants.
const grantCacheSize = 16

// grantGate checks restore grants: restore-operator peers may only chunk.Get, with a
// grant signed by the meta leader, for chunks in the granted snapshot's reference lists.
type grantGate struct {
	key []byte
	now ClusterClock

	mu    sync.Mutex
	lists map[meta.SnapshotID][][]chunk.ID // sorted reference lists per snapshot
}

// ClusterClock reports the cluster time as the meta leader vouches for it (not this
// node's wall clock), or an error when no recent reading is at hand.
type ClusterClock func() (time.Time, error)

// EnableGrants makes the server serve restore-operator peers through restore grants
// signed with key (meta.GrantKey of the cluster secret), expiry judged by the cluster
// clock now: a node whose own clock is set back cannot extend a grant. While now has no
// reading, grant reads are answered Unavailable. Without EnableGrants, restore-operator
// peers are refused everything. Call before serving.
func (s *Server) EnableGrants(key []byte, now ClusterClock) {
	s.grants = &grantGate{key: bytes.Clone(key), now: now, lists: map[meta.SnapshotID][][]chunk.ID{}}
}

// checkGrant authorizes one chunk.Get of id by a restore-operator peer.
func (s *Server) checkGrant(ctx context.Context, peer transport.Peer, token []byte, id chunk.ID) error {
	if s.grants == nil {
		return transport.Errorf(transport.PermissionDenied, "chunkrpc: %s %q: this node serves no restore grants", peer.Role, peer.Principal)
	}
	if len(token) == 0 {
		return transport.Errorf(transport.PermissionDenied, "chunkrpc: %s %q: reading chunks needs a restore grant", peer.Role, peer.Principal)
	}
	now, err := s.grants.now()
	if err != nil {
		return transport.Errorf(transport.Unavailable, "chunkrpc: cannot judge restore grants: %v", err)
	}
	g, err := meta.VerifyGrant(s.grants.key, token, now)
	if err != nil {
		return transport.Errorf(transport.PermissionDenied, "chunkrpc: %s %q: %v", peer.Role, peer.Principal, err)
	}
	lists, err := s.grants.refLists(ctx, s.chunks, g)
	if err != nil {
		return err
	}
	if slices.Contains(g.Refs, id) {
		return nil
	}
	for _, l := range lists {
		if _, ok := slices.BinarySearchFunc(l, id, cmpChunkID); ok {
			return nil
		}
	}
	return transport.Errorf(transport.PermissionDenied, "chunkrpc: grant for snapshot %s of vault %s does not cover chunk %s", g.Snapshot.Str(), g.Vault, id.Str())
}

// refLists returns the granted snapshot's decoded reference lists, loading and checking
// them (each must hash to its ID) on first use.
func (gg *grantGate) refLists(ctx context.Context, store chunkstore.Store, g meta.Grant) ([][]chunk.ID, error) {
	gg.mu.Lock()
	l, ok := gg.lists[g.Snapshot]
	gg.mu.Unlock()
	if ok {
		return l, nil
	}
	if store == nil {
		return nil, transport.Errorf(transport.Unavailable, "chunkrpc: this node does not coordinate chunks")
	}
	var lists [][]chunk.ID
	for _, ref := range g.Refs {
		data, err := store.Get(ctx, ref)
		if err != nil {
			if errors.Is(err, chunkstore.ErrNotFound) {
				return nil, transport.Errorf(transport.NotFound, "chunkrpc: reference list %s of snapshot %s: %v", ref.Str(), g.Snapshot.Str(), err)
			}
			return nil, fmt.Errorf("chunkrpc: reference list %s of snapshot %s: %w", ref.Str(), g.Snapshot.Str(), err)
		}
		ids, err := meta.OpenRefList(ref, data)
		if err != nil {
			return nil, fmt.Errorf("chunkrpc: %v: %w", err, chunkstore.ErrCorrupt)
		}
		lists = append(lists, ids)
	}
	gg.mu.Lock()
	if len(gg.lists) >= grantCacheSize {
		clear(gg.lists)
	}
	gg.lists[g.Snapshot] = lists
	gg.mu.Unlock()
	return lists, nil
}

func cmpChunkID(a, b chunk.ID) int { return bytes.Compare(a[:], b[:]) }

// SetGrant makes every later chunk.Get carry the restore grant token (a restore
// operator's client). A nil token stops sending one.
func (cl *Client) SetGrant(token []byte) {
	t := bytes.Clone(token)
	cl.grant.Store(&t)
}

func (cl *Client) grantToken() []byte {
	if p := cl.grant.Load(); p != nil {
		return *p
	}
	return nil
}
