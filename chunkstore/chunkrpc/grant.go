package chunkrpc

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cofferhq/coffer/chunkstore"
	"github.com/cofferhq/coffer/chunkstore/chunk"
	"github.com/cofferhq/coffer/chunkstore/grant"
	"github.com/cofferhq/coffer/chunkstore/reflist"
	"github.com/cofferhq/coffer/transport"
)

// grantCacheSize bounds how many granted snapshots' reference lists a node keeps, and
// grantCacheIDs how many reference IDs they hold in all (32 bytes each: 128 MiB). A
// snapshot whose lists alone exceed grantCacheIDs is served but not kept.
const (
	grantCacheSize = 16
	grantCacheIDs  = 4 << 20
)

// grantGate checks restore grants: restore-operator peers may only chunk.Get and
// chunk.GetMany, with a grant signed by the meta leader for their own principal and a
// vault in their certificate's scope, for chunks in the granted snapshot's reference
// lists.
type grantGate struct {
	key []byte
	now ClusterClock
	// verified counts grant verifications, one per request (tests read it).
	verified atomic.Uint64

	mu    sync.Mutex
	lists map[grantListKey][][]chunk.ID // sorted reference lists per granted snapshot
	ids   int                           // reference IDs held in lists
	// maxIDs bounds ids (grantCacheIDs; tests lower it).
	maxIDs int
}

// grantListKey names one granted snapshot's reference lists. Agents choose snapshot IDs
// and vault names, and a snapshot ID is unique only within its vault, so the key holds
// the vault, the snapshot and the hash of the signed reference-list IDs: a grant finds
// only the lists its own signed references name.
type grantListKey struct {
	vault string
	snap  chunk.ID
	refs  [sha256.Size]byte
}

func grantListKeyOf(g grant.Grant) grantListKey {
	h := sha256.New()
	for _, r := range g.Refs {
		h.Write(r[:])
	}
	k := grantListKey{vault: g.Vault, snap: g.Snapshot}
	h.Sum(k.refs[:0])
	return k
}

// ClusterClock reports the cluster time as the meta leader vouches for it (not this
// node's wall clock), or an error when no recent reading is at hand.
type ClusterClock func() (time.Time, error)

// EnableGrants makes the server serve restore-operator peers through restore grants
// signed with key (grant.Key of the cluster secret), expiry judged by the cluster
// clock now: a node whose own clock is set back cannot extend a grant. While now has no
// reading, grant reads are answered Unavailable. Without EnableGrants, restore-operator
// peers are refused everything. Call before serving.
func (s *Server) EnableGrants(key []byte, now ClusterClock) {
	s.grants = &grantGate{key: bytes.Clone(key), now: now, lists: map[grantListKey][][]chunk.ID{}, maxIDs: grantCacheIDs}
}

// authorize checks a restore operator's read of ids under token: the grant is verified
// once (tag, expiry), must be the peer's (its principal) and name a vault in the peer's
// certificate scope, and must cover every id. Refusals are PermissionDenied naming the
// binding that failed.
func (gg *grantGate) authorize(ctx context.Context, store chunkstore.Store, peer transport.Peer, token []byte, ids []chunk.ID) error {
	if len(token) == 0 {
		return transport.Errorf(transport.PermissionDenied, "chunkrpc: %s %q: reading chunks needs a restore grant", peer.Role, peer.Principal)
	}
	now, err := gg.now()
	if err != nil {
		return transport.Errorf(transport.Unavailable, "chunkrpc: cannot judge restore grants: %v", err)
	}
	if peer.Role == transport.RoleReplication && len(peer.Vaults) == 0 {
		return transport.Errorf(transport.PermissionDenied, "chunkrpc: %s %q: a replication certificate that names no vault reads nothing", peer.Role, peer.Principal)
	}
	gg.verified.Add(1)
	g, err := grant.Verify(gg.key, token, now)
	if err != nil {
		return transport.Errorf(transport.PermissionDenied, "chunkrpc: %s %q: %v", peer.Role, peer.Principal, err)
	}
	if err := g.CheckHolder(peer.Principal, peer.Vaults); err != nil {
		return transport.Errorf(transport.PermissionDenied, "chunkrpc: %s %q: %v", peer.Role, peer.Principal, err)
	}
	lists, err := gg.refLists(ctx, store, g)
	if err != nil {
		return err
	}
	if err := g.CheckCovers(lists, ids); err != nil {
		return transport.Errorf(transport.PermissionDenied, "chunkrpc: %v", err)
	}
	return nil
}

// refLists returns the granted snapshot's decoded reference lists, loading and checking
// them (each must hash to its ID) on first use.
func (gg *grantGate) refLists(ctx context.Context, store chunkstore.Store, g grant.Grant) ([][]chunk.ID, error) {
	key := grantListKeyOf(g)
	gg.mu.Lock()
	l, ok := gg.lists[key]
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
		ids, err := reflist.Open(ref, data)
		if err != nil {
			return nil, fmt.Errorf("chunkrpc: %v: %w", err, chunkstore.ErrCorrupt)
		}
		lists = append(lists, ids)
	}
	n := 0
	for _, l := range lists {
		n += len(l)
	}
	gg.mu.Lock()
	if _, ok := gg.lists[key]; !ok && n <= gg.maxIDs {
		if len(gg.lists) >= grantCacheSize || gg.ids+n > gg.maxIDs {
			clear(gg.lists)
			gg.ids = 0
		}
		gg.lists[key] = lists
		gg.ids += n
	}
	gg.mu.Unlock()
	return lists, nil
}

// Granted reads chunks through a restore grant: every chunk.Get and chunk.GetMany it
// sends carries the token, as a restore operator's reads must. It shares its Client's
// connections and coordinator health; the Client itself sends no grant, so one
// connection serves several grants without shared mutable state. Put and Has go out as
// the Client's (chunk nodes refuse both to restore operators). It is safe for concurrent
// use.
type Granted struct {
	cl    *Client
	token []byte
}

var (
	_ chunkstore.Store       = (*Granted)(nil)
	_ chunkstore.BatchGetter = (*Granted)(nil)
)

// WithGrant returns a reader on cl whose chunk reads carry the restore grant token
// (copied; grant.Sign makes it). cl is unchanged.
func (cl *Client) WithGrant(token []byte) *Granted {
	return &Granted{cl: cl, token: bytes.Clone(token)}
}

// Get is Client.Get with the grant.
func (g *Granted) Get(ctx context.Context, id chunk.ID) ([]byte, error) {
	return g.cl.get(ctx, id, g.token)
}

// GetMany is Client.GetMany with the grant.
func (g *Granted) GetMany(ctx context.Context, ids []chunk.ID) []chunkstore.GetResult {
	return g.cl.getMany(ctx, g, ids, g.token)
}

// Put is Client.Put.
func (g *Granted) Put(ctx context.Context, chunks []chunkstore.Chunk) error {
	return g.cl.Put(ctx, chunks)
}

// Has is Client.Has.
func (g *Granted) Has(ctx context.Context, ids []chunk.ID) ([]bool, error) {
	return g.cl.Has(ctx, ids)
}
