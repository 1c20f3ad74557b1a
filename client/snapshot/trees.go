package snapshot

import (
	"context"
	"fmt"

	"github.com/cofferhq/coffer/chunkstore"
	"github.com/cofferhq/coffer/chunkstore/chunk"
	"github.com/cofferhq/coffer/client/tree"
)

// Getter reads one sealed chunk; chunkstore.Store implements it.
type Getter interface {
	Get(ctx context.Context, id chunk.ID) ([]byte, error)
}

// Keys names, seals and opens the vault's chunks; *crypt.Keys implements it. Its
// methods must be safe for concurrent use.
type Keys interface {
	ChunkID(data []byte) chunk.ID
	Seal(dst []byte, id chunk.ID, plain []byte) ([]byte, error)
	Open(dst []byte, id chunk.ID, sealed []byte) ([]byte, error)
}

// Trees loads a vault's trees from the cluster, and with a Cache from the local cache
// first. It is safe for concurrent use.
type Trees struct {
	store Getter
	keys  Keys
	cache *Cache // nil: none
}

// New returns the trees of the vault whose chunks keys opens, read from store.
func New(store Getter, keys Keys) *Trees {
	return &Trees{store: store, keys: keys}
}

// WithCache returns a Trees that reads from c before the cluster and files in c every
// tree it loads or encodes. A nil c gives a Trees without a cache.
func (s *Trees) WithCache(c *Cache) *Trees {
	return &Trees{store: s.store, keys: s.keys, cache: c}
}

// Load returns tree id: fetched, opened (verified against its ID) and decoded. An error
// names the tree and wraps the store's error, crypt.ErrCorrupt (the chunk does not open
// under id) or tree.ErrInvalid (it does not decode).
func (s *Trees) Load(ctx context.Context, id chunk.ID) (*tree.Tree, error) {
	t, _, err := s.LoadSized(ctx, id)
	return t, err
}

// LoadSized is Load that also returns the size of the sealed chunk.
func (s *Trees) LoadSized(ctx context.Context, id chunk.ID) (*tree.Tree, int, error) {
	if t, n := s.cache.get(id); t != nil {
		return t, n, nil
	}
	sealed, err := s.store.Get(ctx, id)
	if err != nil {
		return nil, 0, fmt.Errorf("snapshot: tree %s: %w", id.Str(), err)
	}
	t, err := openTree(s.keys, id, sealed)
	if err != nil {
		return nil, 0, err
	}
	s.cache.fetched(id, sealed)
	return t, len(sealed), nil
}

// LoadMany returns the trees ids (in order, each with the size of its sealed chunk):
// those in the cache from there, the others fetched in one batched read when the store
// has one (chunkstore.BatchGetter: one call per node instead of a round trip per tree),
// each opened and decoded as Load does. The first failure is returned, naming its tree.
func (s *Trees) LoadMany(ctx context.Context, ids []chunk.ID) ([]*tree.Tree, []int, error) {
	out := make([]*tree.Tree, len(ids))
	sizes := make([]int, len(ids))
	var miss []int
	for i, id := range ids {
		if t, n := s.cache.get(id); t != nil {
			out[i], sizes[i] = t, n
			continue
		}
		miss = append(miss, i)
	}
	if len(miss) == 0 {
		return out, sizes, nil
	}
	bg, ok := s.store.(chunkstore.BatchGetter)
	if !ok || len(miss) == 1 {
		for _, i := range miss {
			t, n, err := s.LoadSized(ctx, ids[i])
			if err != nil {
				return nil, nil, err
			}
			out[i], sizes[i] = t, n
		}
		return out, sizes, nil
	}
	want := make([]chunk.ID, len(miss))
	for j, i := range miss {
		want[j] = ids[i]
	}
	res := bg.GetMany(ctx, want)
	if len(res) != len(want) {
		return nil, nil, fmt.Errorf("snapshot: trees: store answered %d of %d reads", len(res), len(want))
	}
	for j, i := range miss {
		if err := res[j].Err; err != nil {
			return nil, nil, fmt.Errorf("snapshot: tree %s: %w", ids[i].Str(), err)
		}
		t, err := openTree(s.keys, ids[i], res[j].Data)
		if err != nil {
			return nil, nil, err
		}
		s.cache.fetched(ids[i], res[j].Data)
		out[i], sizes[i] = t, len(res[j].Data)
	}
	return out, sizes, nil
}

// Open opens and decodes sealed, the sealed chunk of tree id read by the caller (in a
// batch, say): as Load does with what it fetches, without the cache.
func (s *Trees) Open(id chunk.ID, sealed []byte) (*tree.Tree, error) {
	return openTree(s.keys, id, sealed)
}

// Encode encodes t and returns its chunk ID and encoding, which the caller uploads (and
// must not modify); with a cache the tree is also filed in it. Encoding errors are
// tree.Encode's, unwrapped.
func (s *Trees) Encode(t *tree.Tree) (chunk.ID, []byte, error) {
	enc, err := tree.Encode(t)
	if err != nil {
		return chunk.ID{}, nil, err
	}
	id := s.keys.ChunkID(enc)
	s.cache.putPlain(id, enc)
	return id, enc, nil
}

// openTree opens the sealed tree chunk id and decodes it: the one place a tree's bytes
// become a tree, for the cluster's copy and the cache's alike.
func openTree(keys Keys, id chunk.ID, sealed []byte) (*tree.Tree, error) {
	plain, err := keys.Open(nil, id, sealed)
	if err != nil {
		return nil, fmt.Errorf("snapshot: tree %s: %w", id.Str(), err)
	}
	t, err := tree.Decode(plain)
	if err != nil {
		return nil, fmt.Errorf("snapshot: tree %s: %w", id.Str(), err)
	}
	return t, nil
}
