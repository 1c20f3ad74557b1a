package client

import (
	"context"
	"fmt"
	"io"
	"path"
	"slices"
	"strings"

	"github.com/cofferhq/coffer/chunkstore"
	"github.com/cofferhq/coffer/chunkstore/chunk"
	"github.com/cofferhq/coffer/client/tree"
	"github.com/cofferhq/coffer/meta"
)

// Entry is one node of a snapshot with its path ("/src/fmt/print.go").
type Entry struct {
	Path string
	Node tree.Node
}

// cleanPath turns a user-given snapshot path into "/a/b" form; "" and "/" give "/".
func cleanPath(p string) string {
	return path.Clean("/" + p)
}

// lookup finds the node at snapshot path p ("/" has no node: it returns nil).
func (a *Agent) lookup(ctx context.Context, snap meta.Snapshot, p string) (*tree.Node, error) {
	p = cleanPath(p)
	if p == "/" {
		return nil, nil
	}
	id := snap.Tree
	var node *tree.Node
	parts := strings.Split(p[1:], "/")
	for i, name := range parts {
		t, err := a.trees.Load(ctx, id)
		if err != nil {
			return nil, err
		}
		j, ok := slices.BinarySearchFunc(t.Nodes, name, func(n tree.Node, s string) int { return strings.Compare(n.Name, s) })
		if !ok {
			return nil, fmt.Errorf("%w: %s (snapshot %s)", ErrNotFound, p, snap.ID.Str())
		}
		node = &t.Nodes[j]
		if i < len(parts)-1 {
			if node.Type != tree.TypeDir {
				return nil, fmt.Errorf("%w: %s: %s is a %s, not a directory", ErrNotFound, p, "/"+strings.Join(parts[:i+1], "/"), node.Type)
			}
			id = *node.Subtree
		}
	}
	return node, nil
}

// List calls fn for the node at path (unless path is "" or "/") and, recursively, every
// node below it, in depth-first name order. fn runs in the caller's goroutine; an error
// from it stops the listing and is returned. A missing path gives ErrNotFound. Trees are
// read as Restore reads them (the local tree pack first).
func (a *Agent) List(ctx context.Context, snap meta.Snapshot, p string, fn func(Entry) error) error {
	if err := a.check(); err != nil {
		return err
	}
	a, release := a.withTreeCache(snap)
	defer release()
	p = cleanPath(p)
	if p == "/" {
		x, err := a.measure(ctx, snap.Tree, "", nil)
		if err != nil {
			return err
		}
		return a.listTree(ctx, x, snap.Tree, "", fn)
	}
	n, err := a.lookup(ctx, snap, p)
	if err != nil {
		return err
	}
	var x *expansion
	if n.Type == tree.TypeDir {
		if x, err = a.measure(ctx, *n.Subtree, p, nil); err != nil {
			return err
		}
	}
	if err := fn(Entry{Path: p, Node: *n}); err != nil {
		return err
	}
	if n.Type == tree.TypeDir {
		return a.listTree(ctx, x, *n.Subtree, p, fn)
	}
	return nil
}

// listTree lists tree id, at snapshot path prefix, and everything below it; x, which
// measured it, holds the trees it kept.
func (a *Agent) listTree(ctx context.Context, x *expansion, id chunk.ID, prefix string, fn func(Entry) error) error {
	t := x.tree(id)
	if t == nil {
		var err error
		if t, err = a.trees.Load(ctx, id); err != nil {
			return err
		}
	}
	for i := range t.Nodes {
		n := &t.Nodes[i]
		p := prefix + "/" + n.Name
		if err := fn(Entry{Path: p, Node: *n}); err != nil {
			return err
		}
		if n.Type == tree.TypeDir {
			if err := a.listTree(ctx, x, *n.Subtree, p, fn); err != nil {
				return err
			}
		}
	}
	return nil
}

// Dump writes the content of the regular file at path to w, fetching chunks in
// parallel but writing in order; holes are written as zeros. Every chunk is verified
// against its ID; a bad chunk stops the dump with an error wrapping crypt.ErrCorrupt.
func (a *Agent) Dump(ctx context.Context, snap meta.Snapshot, p string, w io.Writer) error {
	if err := a.check(); err != nil {
		return err
	}
	n, err := a.lookup(ctx, snap, p)
	if err != nil {
		return err
	}
	if n == nil || n.Type != tree.TypeFile {
		typ := tree.TypeDir
		if n != nil {
			typ = n.Type
		}
		return fmt.Errorf("%w: dump %s: a %s, not a regular file", ErrInvalid, cleanPath(p), typ)
	}
	return a.fetchOrdered(ctx, n.Content, n.Offset, func(e tree.Extent, data []byte) error {
		if e.Hole {
			for left := int(e.Len); left > 0; {
				k := min(left, len(zeroPage))
				if _, err := w.Write(zeroPage[:k]); err != nil {
					return err
				}
				left -= k
			}
			return nil
		}
		_, err := w.Write(data)
		return err
	})
}

// fetchOrdered fetches the data extents of ext, a file's content beginning at offset in
// its first chunk (tree.Node.Offset), and calls fn for every extent in order with the
// extent's bytes (nil for holes), in the caller's goroutine. The extents are read in
// batches of consecutive extents (up to fetchBatchChunks chunks or fetchBatchBytes of
// plaintext, one chunkstore.GetMany call each, a chunk listed twice in a batch read once)
// with restoreFetchers(Config.Fetches) batches in flight, as a restore reads: a dump of
// a large file or a block image's restore is one ordered stream whose reads overlap. A
// chunk whose batched read fails is read once more alone before its error counts. At
// most the batches in flight and the one fn is consuming are held in memory.
func (a *Agent) fetchOrdered(ctx context.Context, ext []tree.Extent, offset uint32, fn func(tree.Extent, []byte) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	batches := orderedBatches(ext)
	type result struct {
		data [][]byte // per extent of the batch; nil for holes
		err  error
	}
	window := restoreFetchers(a.cfg.Fetches)
	results := make([]chan result, len(batches))
	for i := range results {
		results[i] = make(chan result, 1) // room for its one value: a fetcher never blocks on it
	}
	// NB: sem holds one token per batch between its dispatch and the end of its
	// consumption, so at most window batches' bytes are alive at once.
	sem := make(chan struct{}, window)
	jobs := make(chan int)
	go func() {
		defer close(jobs)
		for i := range batches {
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				return
			}
			select {
			case jobs <- i:
			case <-ctx.Done():
				return
			}
		}
	}()
	fetchers := make(chan struct{}, window)
	for range window {
		go func() {
			defer func() { fetchers <- struct{}{} }()
			for i := range jobs {
				b := batches[i]
				skip := uint32(0) // where the batch's first extent starts in its chunk
				if b.lo == 0 {
					skip = offset
				}
				data, err := a.fetchExtents(ctx, ext[b.lo:b.hi], skip)
				results[i] <- result{data, err}
			}
		}()
	}
	defer func() {
		cancel()
		for range window {
			<-fetchers
		}
	}()
	for i, b := range batches {
		if err := ctx.Err(); err != nil {
			return err // a cancelled read stops between batches even when the next has arrived
		}
		var r result
		select {
		case r = <-results[i]:
		case <-ctx.Done():
			return ctx.Err()
		}
		if r.err != nil {
			return r.err
		}
		for k, e := range ext[b.lo:b.hi] {
			if err := fn(e, r.data[k]); err != nil {
				return err
			}
		}
		<-sem
	}
	return nil
}

// extentBatch is ext[lo:hi] of fetchOrdered: consecutive extents read in one call.
type extentBatch struct{ lo, hi int }

// orderedBatches cuts ext into consecutive batches of at most fetchBatchChunks data
// extents and, unless one extent alone is larger, fetchBatchBytes of extent bytes. Holes
// join the batch they fall in; a content of holes alone is one batch.
func orderedBatches(ext []tree.Extent) []extentBatch {
	var out []extentBatch
	lo, chunks, bytes := 0, 0, int64(0)
	for i, e := range ext {
		if e.Hole {
			continue
		}
		if chunks > 0 && (chunks == fetchBatchChunks || bytes+int64(e.Len) > fetchBatchBytes) {
			out = append(out, extentBatch{lo, i})
			lo, chunks, bytes = i, 0, 0
		}
		chunks++
		bytes += int64(e.Len)
	}
	if lo < len(ext) {
		out = append(out, extentBatch{lo, len(ext)})
	}
	return out
}

// fetchExtents reads the data extents of ext in one chunkstore.GetMany call (each chunk
// once) and returns each extent's bytes, nil for holes; the first extent starts skip
// bytes into its chunk. A chunk the batched read does not return is read once more alone
// (fetchChunk) before its error is returned.
func (a *Agent) fetchExtents(ctx context.Context, ext []tree.Extent, skip uint32) ([][]byte, error) {
	at := make(map[chunk.ID]int, len(ext)) // chunk ID -> index in ids
	var ids []chunk.ID
	var firstExt []int // ids[k]'s first extent in ext
	for i, e := range ext {
		if e.Hole {
			continue
		}
		if _, ok := at[e.ID]; !ok {
			at[e.ID] = len(ids)
			ids = append(ids, e.ID)
			firstExt = append(firstExt, i)
		}
	}
	plain := make([][]byte, len(ids))
	if len(ids) > 0 {
		res := chunkstore.GetMany(ctx, a.cfg.Chunks, ids)
		for k, r := range res {
			e := ext[firstExt[k]]
			var err error
			if r.Err == nil {
				plain[k], err = a.openChunk(e, r.Data)
			}
			if r.Err != nil || err != nil {
				if ctx.Err() != nil {
					return nil, ctx.Err()
				}
				if plain[k], err = a.fetchChunk(ctx, e); err != nil {
					return nil, err
				}
			}
		}
	}
	out := make([][]byte, len(ext))
	for i, e := range ext {
		if e.Hole {
			continue
		}
		from := uint32(0)
		if i == 0 {
			from = skip
		}
		d, err := extentData(e, from, plain[at[e.ID]])
		if err != nil {
			return nil, err
		}
		out[i] = d
	}
	return out, nil
}

// fetchChunk gets and opens the chunk of data extent e: its whole plaintext, verified
// against its ID.
func (a *Agent) fetchChunk(ctx context.Context, e tree.Extent) ([]byte, error) {
	sealed, err := a.cfg.Chunks.Get(ctx, e.ID)
	if err != nil {
		return nil, fmt.Errorf("client: chunk %s: %w", e.ID.Str(), err)
	}
	return a.openChunk(e, sealed)
}

// openChunk opens the sealed chunk of data extent e: its whole plaintext, which may hold
// more than the extent (see extentData).
func (a *Agent) openChunk(e tree.Extent, sealed []byte) ([]byte, error) {
	plain, err := a.keys.Open(make([]byte, 0, e.Len), e.ID, sealed)
	if err != nil {
		return nil, fmt.Errorf("client: chunk %s: %w", e.ID.Str(), err)
	}
	return plain, nil
}

// extentData returns the bytes of data extent e within plain, its chunk's plaintext:
// e.Len bytes from skip (the node's Offset for a file's first extent, else 0). A chunk
// too short for them means the tree and the chunk disagree.
func extentData(e tree.Extent, skip uint32, plain []byte) ([]byte, error) {
	if end := uint64(skip) + uint64(e.Len); uint64(len(plain)) < end {
		return nil, fmt.Errorf("client: chunk %s: %d bytes, the tree needs %d from offset %d", e.ID.Str(), len(plain), e.Len, skip)
	}
	return plain[skip : skip+e.Len], nil
}
