package client

import (
	"context"
	"fmt"
	"io"
	"path"
	"slices"
	"strings"

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
// from it stops the listing and is returned. A missing path gives ErrNotFound.
func (a *Agent) List(ctx context.Context, snap meta.Snapshot, p string, fn func(Entry) error) error {
	if err := a.check(); err != nil {
		return err
	}
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
// its first chunk (tree.Node.Offset), with up to Workers requests in flight and calls fn
// for every extent in order with the extent's bytes (nil for holes), in the caller's
// goroutine.
func (a *Agent) fetchOrdered(ctx context.Context, ext []tree.Extent, offset uint32, fn func(tree.Extent, []byte) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type result struct {
		data []byte
		err  error
	}
	window := max(2, a.cfg.Workers)
	results := make([]chan result, len(ext))
	jobs := make(chan int)
	// NB: the feeder goroutine closes jobs; the fetchers exit when it is closed. Each
	// result channel has room for its one value, so fetchers never block on it.
	sem := make(chan struct{}, window)
	go func() {
		defer close(jobs)
		for i := range ext {
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
	for i := range results {
		results[i] = make(chan result, 1)
	}
	fetchers := make(chan struct{}, window)
	for range window {
		go func() {
			defer func() { fetchers <- struct{}{} }()
			for i := range jobs {
				e := ext[i]
				if e.Hole {
					results[i] <- result{}
					continue
				}
				d, err := a.fetchChunk(ctx, e)
				if err == nil {
					skip := uint32(0)
					if i == 0 {
						skip = offset
					}
					d, err = extentData(e, skip, d)
				}
				results[i] <- result{d, err}
			}
		}()
	}
	defer func() {
		cancel()
		for range window {
			<-fetchers
		}
	}()
	for i, e := range ext {
		var r result
		select {
		case r = <-results[i]:
		case <-ctx.Done():
			return ctx.Err()
		}
		<-sem
		if r.err != nil {
			return r.err
		}
		if err := fn(e, r.data); err != nil {
			return err
		}
	}
	return nil
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
