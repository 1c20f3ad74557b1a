package meta

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/cofferhq/coffer/chunkstore/chunk"
	"github.com/cofferhq/coffer/chunkstore/reflist"
)

// CommitChunks is what the commit check reads: which chunks are stored, and the
// reference lists.
type CommitChunks interface {
	// Has reports, for each ID, whether the chunk is stored.
	Has(ctx context.Context, ids []chunk.ID) ([]bool, error)
	// Get returns a stored chunk's data.
	Get(ctx context.Context, id chunk.ID) ([]byte, error)
}

// CommitCheck is the check a leader makes before recording a snapshot (Service's
// CommitSnapshot): every reference list is stored and hashes to its ID, every chunk it
// lists is stored, and the tree is listed. meta/server and meta/memmeta both run it.
type CommitCheck struct {
	// Chunks is the store the check reads.
	Chunks CommitChunks
	// NotStored reports whether an error of Chunks.Get means the reference list is not
	// stored (ErrMissingChunks) rather than unreadable (ErrUnavailable). Nil: a list is
	// missing when Get fails and Has did not find it.
	NotStored func(error) bool
	// HasBatch is how many IDs one Has call asks about (0: DefaultHasBatch).
	HasBatch int
}

// DefaultHasBatch is CommitCheck.HasBatch when zero.
const DefaultHasBatch = 4096

// Run checks snap's chunks. Chunks in known (nil: none), which a committed parent
// references, are not asked about. The reference lists are asked about with Has first:
// a store that touches what it finds keeps them out of a collection's sweep until the
// commit. Errors: ErrMissingChunks naming the first missing chunks, ErrInvalid for a
// reference list that does not open or an unlisted tree, ErrUnavailable when the store
// does not answer.
func (c CommitCheck) Run(ctx context.Context, snap Snapshot, known map[chunk.ID]struct{}) error {
	batch := c.HasBatch
	if batch <= 0 {
		batch = DefaultHasBatch
	}
	var missing []chunk.ID
	nMissing := 0
	miss := func(id chunk.ID) {
		nMissing++
		if len(missing) < 5 {
			missing = append(missing, id)
		}
	}
	stored, err := c.Chunks.Has(ctx, snap.Refs)
	if err != nil {
		return fmt.Errorf("%w: check reference lists: %v", ErrUnavailable, err)
	}
	treeListed := false
	for i, ref := range snap.Refs {
		data, err := c.Chunks.Get(ctx, ref)
		if err != nil {
			notStored := i < len(stored) && !stored[i]
			if c.NotStored != nil {
				notStored = c.NotStored(err)
			}
			if !notStored {
				return fmt.Errorf("%w: read reference list %d (%s): %v", ErrUnavailable, i, ref.Str(), err)
			}
			miss(ref)
			continue
		}
		ids, err := reflist.Open(ref, data)
		if err != nil {
			return fmt.Errorf("%w: reference list %d: %w", ErrInvalid, i, err)
		}
		if _, ok := slices.BinarySearchFunc(ids, snap.Tree, func(a, b chunk.ID) int { return bytes.Compare(a[:], b[:]) }); ok {
			treeListed = true
		}
		if known != nil {
			ids = slices.DeleteFunc(ids, func(id chunk.ID) bool { _, ok := known[id]; return ok })
		}
		for len(ids) > 0 {
			n := min(len(ids), batch)
			has, err := c.Chunks.Has(ctx, ids[:n])
			if err != nil {
				return fmt.Errorf("%w: check chunks of reference list %d: %v", ErrUnavailable, i, err)
			}
			if len(has) != n {
				return fmt.Errorf("%w: chunk store answered %d of %d existence checks", ErrUnavailable, len(has), n)
			}
			for j, ok := range has {
				if !ok {
					miss(ids[j])
				}
			}
			ids = ids[n:]
		}
	}
	if nMissing > 0 {
		strs := make([]string, len(missing))
		for i, id := range missing {
			strs[i] = id.Str()
		}
		return fmt.Errorf("%w: %d chunks missing (first: %s)", ErrMissingChunks, nMissing, strings.Join(strs, ", "))
	}
	if !treeListed {
		return fmt.Errorf("%w: tree %s is not in the reference list", ErrInvalid, snap.Tree.Str())
	}
	return nil
}
