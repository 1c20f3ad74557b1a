package client

import (
	"context"
	"errors"
	"fmt"
	"math"
	"unsafe"

	"golang.org/x/sync/errgroup"

	"github.com/cofferhq/coffer/chunkstore/chunk"
	"github.com/cofferhq/coffer/client/tree"
)

// A snapshot's trees form a DAG: identical directories share one tree chunk, so a tree
// reached twice is expanded twice by List and Restore, which must produce every
// occurrence. Whoever can write to a vault chooses its trees, and 40 levels of a tree
// naming the next one twice expand to 2^40 entries from 41 chunks. Before List or
// Restore expands anything, measure loads each distinct tree of the part to be walked
// once (a seen-set, in parallel) and computes the expanded entry count exactly, with
// shared subtrees counted once per occurrence but computed once; above the agent's
// limit (Config.MaxEntries) the call fails with ErrTooManyEntries before anything is
// listed or written. The snapshot's recorded statistics are not used for the bound: the
// same writer that chooses the trees writes them.

// DefaultMaxEntries is the default Config.MaxEntries: the most entries (files,
// directories, symlinks, ...: every occurrence of a shared subtree counted) that List or
// Restore expands a snapshot, or the selected part of it, to.
const DefaultMaxEntries = 100_000_000

// maxTreeDepth bounds how deeply directories nest in a snapshot. A backup reads paths
// below PATH_MAX (4096 bytes), so no backup nests half as deep; deeper is refused with
// tree.ErrInvalid, which also bounds the walkers' recursion.
const maxTreeDepth = 4096

// keepTreeBytes bounds the memory of the decoded trees measure keeps for the walk that
// follows (treeMemBytes), which loads the others again as it reaches them. The walk holds
// the trees along its path and those it prefetches; with this bound a restore's memory
// does not grow with the snapshot's file count (see Restore).
const keepTreeBytes = 16 << 20

// measureGroup is how many trees one batched read of measure asks for. A level's trees
// are read in batches of par groups (par = Fetches/2 reads at once, as the restore walk
// prefetches), each group one chunkstore.BatchGetter call: a batch costs one round trip
// to the cluster, not one per tree, and the trees decoded at once stay at most
// par x measureGroup however wide a level is (each batch is counted and dropped, except
// the trees kept, before the next one is read).
const measureGroup = 16

// treeMemBytes estimates the heap a decoded tree takes: its nodes, their names, link
// targets, extents and subtree IDs.
func treeMemBytes(t *tree.Tree) int64 {
	b := int64(len(t.Nodes)) * int64(unsafe.Sizeof(tree.Node{}))
	for i := range t.Nodes {
		n := &t.Nodes[i]
		b += int64(len(n.Name)+len(n.LinkTarget)) + int64(len(n.Content))*int64(unsafe.Sizeof(tree.Extent{}))
		if n.Subtree != nil {
			b += int64(unsafe.Sizeof(chunk.ID{}))
		}
	}
	return b
}

// ErrTooManyEntries: a snapshot (or the part of it a List or Restore selects) expands
// to more entries than Config.MaxEntries allows.
var ErrTooManyEntries = errors.New("client: snapshot expands to too many entries")

// expansion is the distinct trees below the roots measure was given, each loaded once.
// It is not modified after measure returns and is safe for concurrent reads.
type expansion struct {
	index map[chunk.ID]int32 // position in trees
	trees []expTree
	// Entries is the expanded count: every node a walk of the selection produces.
	entries int64
}

type expTree struct {
	t       *tree.Tree // nil when not kept (beyond keepTreeBytes): the walk loads it again
	nodes   int64      // len(t.Nodes)
	subs    []int32    // subdirectories' trees, as positions in expansion.trees
	entries int64      // expanded count of everything below, -1 until counted
}

// tree returns the decoded tree id when measure kept it, else nil.
func (x *expansion) tree(id chunk.ID) *tree.Tree {
	if x == nil {
		return nil
	}
	if i, ok := x.index[id]; ok {
		return x.trees[i].t
	}
	return nil
}

// measurer builds an expansion.
type measurer struct {
	a    *Agent
	x    *expansion
	kept int64
}

// measure loads the distinct trees that a walk of root (a directory's tree, at snapshot
// path dir: "" for the snapshot's root) visits, and counts the entries the walk
// produces. sel, when not nil, selects as restorer.selected does: entries wanted are
// expanded whole, directories along the way to a wanted path only for their selected
// entries. The count is checked against Config.MaxEntries, and directory depth against
// maxTreeDepth, before anything is expanded.
func (a *Agent) measure(ctx context.Context, root chunk.ID, dir string, sel func(string) (wanted, along bool)) (*expansion, error) {
	m := &measurer{a: a, x: &expansion{index: map[chunk.ID]int32{}}}
	var count int64
	var wholes []chunk.ID // subtrees expanded whole, once per occurrence
	if sel == nil {
		wholes = append(wholes, root)
	} else if err := m.along(ctx, root, dir, sel, 0, &count, &wholes); err != nil {
		return nil, err
	}
	if err := m.load(ctx, wholes); err != nil {
		return nil, err
	}
	for _, id := range wholes {
		n, err := m.count(m.x.index[id])
		if err != nil {
			return nil, err
		}
		count = satAdd(count, n)
	}
	m.x.entries = count
	if limit := a.cfg.MaxEntries; count > limit {
		what := "more than 9223372036854775806"
		if count < math.MaxInt64 {
			what = fmt.Sprint(count)
		}
		p := dir
		if p == "" {
			p = "/"
		}
		return nil, fmt.Errorf("%w: %s expands to %s entries from %d distinct trees, above the limit of %d (raise it with --max-entries)",
			ErrTooManyEntries, p, what, len(m.x.trees), limit)
	}
	return m.x, nil
}

// along counts the selected entries of tree id (at snapshot path dir) that are not
// expanded whole, and collects the subtrees that are.
func (m *measurer) along(ctx context.Context, id chunk.ID, dir string, sel func(string) (bool, bool), depth int, count *int64, wholes *[]chunk.ID) error {
	if depth >= maxTreeDepth {
		return fmt.Errorf("%w: %s: directories nested deeper than %d", tree.ErrInvalid, dir, maxTreeDepth)
	}
	// NB: only this tree, not what is below it (the walk loads it again: the trees
	// along the way to the wanted paths are few).
	t, err := m.a.trees.Load(ctx, id)
	if err != nil {
		return err
	}
	for i := range t.Nodes {
		n := &t.Nodes[i]
		sp := dir + "/" + n.Name
		wanted, along := sel(sp)
		switch {
		case wanted:
			*count = satAdd(*count, 1)
			if n.Type == tree.TypeDir {
				*wholes = append(*wholes, *n.Subtree)
			}
		case along && n.Type == tree.TypeDir:
			*count = satAdd(*count, 1)
			if err := m.along(ctx, *n.Subtree, sp, sel, depth+1, count, wholes); err != nil {
				return err
			}
		}
	}
	return nil
}

// load adds ids and every tree below them that is not in the expansion yet, a level at
// a time, each level's trees read in batches of batched reads (see measureGroup), so
// that the trees decoded at once stay few however wide a level is.
func (m *measurer) load(ctx context.Context, ids []chunk.ID) error {
	x := m.x
	var level []chunk.ID
	for _, id := range ids {
		if _, ok := x.index[id]; !ok {
			x.index[id] = int32(len(x.trees))
			x.trees = append(x.trees, expTree{entries: -1})
			level = append(level, id)
		}
	}
	for depth := 0; len(level) > 0; depth++ {
		if depth >= maxTreeDepth {
			return fmt.Errorf("%w: directories nested deeper than %d", tree.ErrInvalid, maxTreeDepth)
		}
		par := max(1, m.a.cfg.Fetches/2)
		var next []chunk.ID
		for len(level) > 0 {
			batch := level[:min(len(level), par*measureGroup)]
			level = level[len(batch):]
			var err error
			if next, err = m.loadBatch(ctx, batch, par, next); err != nil {
				return err
			}
		}
		level = next
	}
	return nil
}

// loadBatch reads the trees ids (in groups of measureGroup, par groups at once), records their sizes and subdirectories,
// keeps them while keepTreeBytes allows, and returns next with the subdirectories' trees
// that are new to the expansion appended.
func (m *measurer) loadBatch(ctx context.Context, ids []chunk.ID, par int, next []chunk.ID) ([]chunk.ID, error) {
	x := m.x
	got := make([]*tree.Tree, len(ids))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(par)
	for start := 0; start < len(ids); start += measureGroup {
		end := min(start+measureGroup, len(ids))
		g.Go(func() error {
			ts, _, err := m.a.trees.LoadMany(gctx, ids[start:end])
			copy(got[start:end], ts)
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	for i, id := range ids {
		t := got[i]
		e := &x.trees[x.index[id]]
		e.nodes = int64(len(t.Nodes))
		for j := range t.Nodes {
			n := &t.Nodes[j]
			if n.Type != tree.TypeDir {
				continue
			}
			k, ok := x.index[*n.Subtree]
			if !ok {
				k = int32(len(x.trees))
				x.index[*n.Subtree] = k
				x.trees = append(x.trees, expTree{entries: -1})
				next = append(next, *n.Subtree)
				e = &x.trees[x.index[id]] // the append may have moved it
			}
			e.subs = append(e.subs, k)
		}
		if size := treeMemBytes(t); m.kept+size <= keepTreeBytes {
			m.kept += size
			e.t = t
		}
	}
	return next, nil
}

// count returns the expanded entry count below tree i (every node of it, and of its
// subdirectories' trees, once per occurrence), computing each distinct tree's count
// once, depth first without recursion. Counts saturate at math.MaxInt64.
func (m *measurer) count(i int32) (int64, error) {
	trees := m.x.trees
	if trees[i].entries >= 0 {
		return trees[i].entries, nil
	}
	type frame struct {
		i    int32
		next int   // next sub to visit
		sum  int64 // nodes plus the subs visited so far
	}
	stack := []frame{{i: i, sum: trees[i].nodes}}
	for len(stack) > 0 {
		f := &stack[len(stack)-1]
		e := &trees[f.i]
		if f.next < len(e.subs) {
			c := e.subs[f.next]
			f.next++
			if n := trees[c].entries; n >= 0 {
				f.sum = satAdd(f.sum, n)
				continue
			}
			// Tree IDs are keyed hashes of their content, so no tree contains itself;
			// the depth bound ends any walk that would not end.
			if len(stack) >= maxTreeDepth {
				return 0, fmt.Errorf("%w: directories nested deeper than %d", tree.ErrInvalid, maxTreeDepth)
			}
			stack = append(stack, frame{i: c, sum: trees[c].nodes})
			continue
		}
		e.entries = f.sum
		stack = stack[:len(stack)-1]
		if len(stack) > 0 {
			p := &stack[len(stack)-1]
			p.sum = satAdd(p.sum, e.entries)
		}
	}
	return trees[i].entries, nil
}

// satAdd returns a+b for non-negative a and b, or math.MaxInt64 when that overflows.
func satAdd(a, b int64) int64 {
	if a > math.MaxInt64-b {
		return math.MaxInt64
	}
	return a + b
}
