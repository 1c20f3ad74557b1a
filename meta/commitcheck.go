package meta

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"strings"

	"golang.org/x/sync/errgroup"

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

// Run checks snap's chunks. parentRefs are the reference-list chunks of snap's parent
// when the caller vouches that it is committed (nil: no such parent): every ID they
// list is stored while the parent is (meta/server.checkChunks says why), so
//   - a chunk of snap's list that is also one of parentRefs is neither read nor asked
//     about (reference lists are split by content, so a snapshot shares all but the
//     chunks its changes fell in with its parent: the check costs what changed);
//   - the IDs of the parent's other chunks, which are read, are not asked about.
//
// An ID of a parent chunk that snap shares cannot be in one of snap's other chunks (a
// list's IDs are distinct), so reading the parent's unshared chunks is enough; a list
// that repeats an ID only makes the check ask about more. The reference lists are asked
// about with Has first: a store that touches what it finds keeps them out of a
// collection's sweep until the commit. Errors: ErrMissingChunks naming the first missing
// chunks, ErrInvalid for a reference list that does not open or an unlisted tree,
// ErrUnavailable when the store does not answer.
func (c CommitCheck) Run(ctx context.Context, snap Snapshot, parentRefs []chunk.ID) error {
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
	inParent := make(map[chunk.ID]bool, len(parentRefs))
	for _, r := range parentRefs {
		inParent[r] = true
	}
	inSnap := make(map[chunk.ID]bool, len(snap.Refs))
	for _, r := range snap.Refs {
		inSnap[r] = true
	}
	known := c.parentIDs(ctx, parentRefs, inSnap)
	treeListed := false
	var shared []int // indexes in snap.Refs of the chunks shared with the parent
	var own []int    // the others: read and asked about, listConcurrency at a time
	for i, ref := range snap.Refs {
		if inParent[ref] {
			shared = append(shared, i)
		} else {
			own = append(own, i)
		}
	}
	results := make([]listCheck, len(own))
	var g errgroup.Group
	g.SetLimit(listConcurrency)
	for k, i := range own {
		g.Go(func() error {
			results[k] = c.checkList(ctx, i, snap, i < len(stored) && !stored[i], known, batch)
			return nil
		})
	}
	_ = g.Wait() // the functions report through results
	// NB: the results are taken in list order, so the error and the missing chunks named
	// are those the lists' order gives, whatever order the reads finished in.
	for k, r := range results {
		if r.err != nil {
			return r.err
		}
		if r.notStored {
			miss(snap.Refs[own[k]])
		}
		for _, id := range r.missing {
			miss(id)
		}
		nMissing += r.nMissing - len(r.missing)
		treeListed = treeListed || r.listsTree
	}
	if !treeListed && nMissing == 0 {
		if treeListed, err = c.sharedListsTree(ctx, snap, shared); err != nil {
			return err
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

// listConcurrency bounds the reference-list chunks the commit check reads and asks
// about at once. A list chunk costs the leader two round trips (the read, then Has over
// its IDs); with chunk nodes across a network, one list after another added them all up
// (BenchmarkCommitCheck).
const listConcurrency = 8

// listCheck is the outcome of checking one reference-list chunk of a snapshot.
type listCheck struct {
	err       error      // the list could not be read, opened or asked about
	notStored bool       // the list itself is not stored
	missing   []chunk.ID // the first (at most 5) listed IDs that are not stored
	nMissing  int        // how many listed IDs are not stored
	listsTree bool       // the list holds the snapshot's tree
}

// checkList reads snap.Refs[i], checks that it opens, and asks about its IDs that known
// does not hold, batch at a time. hasSaidMissing is the first Has's answer for the list.
func (c CommitCheck) checkList(ctx context.Context, i int, snap Snapshot, hasSaidMissing bool, known map[chunk.ID]bool, batch int) listCheck {
	ref := snap.Refs[i]
	data, err := c.Chunks.Get(ctx, ref)
	if err != nil {
		notStored := hasSaidMissing
		if c.NotStored != nil {
			notStored = c.NotStored(err)
		}
		if !notStored {
			return listCheck{err: fmt.Errorf("%w: read reference list %d (%s): %v", ErrUnavailable, i, ref.Str(), err)}
		}
		return listCheck{notStored: true}
	}
	ids, err := reflist.Open(ref, data)
	if err != nil {
		return listCheck{err: fmt.Errorf("%w: reference list %d: %w", ErrInvalid, i, err)}
	}
	var r listCheck
	r.listsTree = listed(ids, snap.Tree)
	if known != nil {
		ids = slices.DeleteFunc(ids, func(id chunk.ID) bool { return known[id] })
	}
	for len(ids) > 0 {
		n := min(len(ids), batch)
		has, err := c.Chunks.Has(ctx, ids[:n])
		if err != nil {
			return listCheck{err: fmt.Errorf("%w: check chunks of reference list %d: %v", ErrUnavailable, i, err)}
		}
		if len(has) != n {
			return listCheck{err: fmt.Errorf("%w: chunk store answered %d of %d existence checks", ErrUnavailable, len(has), n)}
		}
		for j, ok := range has {
			if !ok {
				r.nMissing++
				if len(r.missing) < 5 {
					r.missing = append(r.missing, ids[j])
				}
			}
		}
		ids = ids[n:]
	}
	return r
}

// listed reports whether id is in ids (sorted, as reflist.Open returns them).
func listed(ids []chunk.ID, id chunk.ID) bool {
	_, ok := slices.BinarySearchFunc(ids, id, func(a, b chunk.ID) int { return bytes.Compare(a[:], b[:]) })
	return ok
}

// parentIDs returns the IDs listed by the parent chunks snap does not share (skip), or
// nil when one of them cannot be read (the check then asks about every ID of snap's
// unshared chunks) or there are none.
func (c CommitCheck) parentIDs(ctx context.Context, parentRefs []chunk.ID, skip map[chunk.ID]bool) map[chunk.ID]bool {
	var refs []chunk.ID
	for _, ref := range parentRefs {
		if !skip[ref] {
			refs = append(refs, ref)
		}
	}
	lists := make([][]chunk.ID, len(refs))
	var g errgroup.Group
	g.SetLimit(listConcurrency)
	for k, ref := range refs {
		g.Go(func() error {
			data, err := c.Chunks.Get(ctx, ref)
			if err != nil {
				return err
			}
			lists[k], err = reflist.Open(ref, data)
			return err
		})
	}
	if g.Wait() != nil || len(refs) == 0 {
		return nil
	}
	n := 0
	for _, ids := range lists {
		n += len(ids)
	}
	known := make(map[chunk.ID]bool, n)
	for _, ids := range lists {
		for _, id := range ids {
			known[id] = true
		}
	}
	return known
}

// sharedListsTree reports whether snap's tree is listed by one of the chunks of snap's
// list it shares with its parent (indexes in snap.Refs). They hold increasing runs in
// order, so a binary search over them reads O(log n) of them; a list whose chunks are
// out of order is searched chunk by chunk.
func (c CommitCheck) sharedListsTree(ctx context.Context, snap Snapshot, shared []int) (bool, error) {
	got := map[int][]chunk.ID{} // chunks read by the search, not read again by the scan
	read := func(k int) ([]chunk.ID, error) {
		if ids, ok := got[k]; ok {
			return ids, nil
		}
		i := shared[k]
		data, err := c.Chunks.Get(ctx, snap.Refs[i])
		if err != nil {
			return nil, fmt.Errorf("%w: read reference list %d (%s): %v", ErrUnavailable, i, snap.Refs[i].Str(), err)
		}
		ids, err := reflist.Open(snap.Refs[i], data)
		if err != nil {
			return nil, fmt.Errorf("%w: reference list %d: %w", ErrInvalid, i, err)
		}
		got[k] = ids
		return ids, nil
	}
	tree := snap.Tree
	lo, hi := 0, len(shared)
	for lo < hi {
		mid := (lo + hi) / 2
		ids, err := read(mid)
		if err != nil {
			return false, err
		}
		switch {
		case len(ids) == 0:
			lo = hi // not in order: scan
		case tree.Less(ids[0]):
			hi = mid
		case ids[len(ids)-1].Less(tree):
			lo = mid + 1
		default:
			if listed(ids, tree) {
				return true, nil
			}
			lo = hi
		}
	}
	for k := range shared {
		ids, err := read(k)
		if err != nil {
			return false, err
		}
		if listed(ids, tree) {
			return true, nil
		}
	}
	return false, nil
}
