package tree

import (
	"errors"
	"fmt"
	"io/fs"
	"strings"

	"github.com/fxamacker/cbor/v2"

	"github.com/cofferhq/coffer/chunkstore"
	"github.com/cofferhq/coffer/chunkstore/chunk"
)

// Version is the tree format version written by Encode. Decode accepts it and version 1
// (which has no Node.Offset).
const Version = 2

// MaxSize bounds an encoded tree (plaintext), leaving room for the crypt envelope below
// chunkstore.MaxChunkSize. Encode refuses larger trees and Decode refuses larger input.
const MaxSize = 15 << 20

// maxElements bounds any CBOR array or map while decoding: one tree's nodes or one file's
// extents. A MaxSize document cannot hold more extents than this anyway.
const maxElements = 1 << 20

// ErrInvalid marks a tree that breaks the format's rules (see FORMAT.md).
var ErrInvalid = errors.New("tree: invalid")

// Type is the kind of a Node.
type Type string

// Node types.
const (
	TypeFile    Type = "file"
	TypeDir     Type = "dir"
	TypeSymlink Type = "symlink"
	TypeDev     Type = "dev" // block device
	TypeCharDev Type = "chardev"
	TypeFIFO    Type = "fifo"
	TypeSocket  Type = "socket"
)

func (t Type) valid() bool {
	switch t {
	case TypeFile, TypeDir, TypeSymlink, TypeDev, TypeCharDev, TypeFIFO, TypeSocket:
		return true
	}
	return false
}

// Extent is one piece of a file's content, in order. A data extent names the chunk
// holding Len plaintext bytes; a hole extent (Hole true, ID zero) stands for Len zero
// bytes that are not stored (a sparse hole or an all-zero chunk).
type Extent struct {
	_    struct{} `cbor:",toarray"`
	ID   chunk.ID
	Len  uint32
	Hole bool
}

// Node is one directory entry with its metadata.
type Node struct {
	Name       string    `cbor:"1,keyasint"`
	Type       Type      `cbor:"2,keyasint"`
	Mode       uint32    `cbor:"3,keyasint"`            // fs.FileMode bits, incl. type, setuid, setgid, sticky
	UID        uint32    `cbor:"4,keyasint,omitempty"`  // owner
	GID        uint32    `cbor:"5,keyasint,omitempty"`  // group
	ModTime    int64     `cbor:"6,keyasint,omitempty"`  // unix nanoseconds
	ChangeTime int64     `cbor:"7,keyasint,omitempty"`  // unix nanoseconds (ctime, informative)
	Size       int64     `cbor:"8,keyasint,omitempty"`  // files: content length (sum of extents)
	Inode      uint64    `cbor:"9,keyasint,omitempty"`  // st_ino at backup time
	Links      uint64    `cbor:"10,keyasint,omitempty"` // st_nlink at backup time
	DeviceID   uint64    `cbor:"11,keyasint,omitempty"` // st_dev: groups hardlinks within one snapshot
	Rdev       uint64    `cbor:"12,keyasint,omitempty"` // device nodes: st_rdev
	LinkTarget string    `cbor:"13,keyasint,omitempty"` // symlinks
	Content    []Extent  `cbor:"14,keyasint,omitempty"` // files
	Subtree    *chunk.ID `cbor:"15,keyasint,omitempty"` // dirs: the subdirectory's tree chunk
	// BlockSize, for a file captured as a block image (coffer backup --block), is the
	// fixed block size of its content: every data extent covers one aligned block (the
	// last may be shorter), hole extents cover whole blocks. Zero for ordinary files.
	BlockSize uint32 `cbor:"16,keyasint,omitempty"`
	// Offset, for a file whose content begins inside its first chunk (a small file
	// bundled with its neighbours into one chunk stream), is where in that chunk's
	// plaintext the file's bytes begin; the first extent, which must then be a data
	// extent, takes Len bytes from there. Every later extent takes the first Len bytes
	// of its chunk. Zero for files that start at a chunk boundary. Version 2 only.
	Offset uint32 `cbor:"17,keyasint,omitempty"`
}

// FileMode returns Mode as an fs.FileMode.
func (n *Node) FileMode() fs.FileMode { return fs.FileMode(n.Mode) }

// Tree is the listing of one directory, Nodes sorted by Name (bytewise), names unique.
type Tree struct {
	Nodes []Node
}

// wireTree is the encoded form: a versioned map.
type wireTree struct {
	Version uint64 `cbor:"1,keyasint"`
	Nodes   []Node `cbor:"2,keyasint"`
}

// Modes are built once; cbor modes are immutable and safe for concurrent use.
var (
	encMode = mustEncMode()
	decMode = mustDecMode()
)

func mustEncMode() cbor.EncMode {
	m, err := cbor.CoreDetEncOptions().EncMode()
	if err != nil {
		panic(err) // static options: cannot fail
	}
	return m
}

func mustDecMode() cbor.DecMode {
	m, err := cbor.DecOptions{
		DupMapKey:        cbor.DupMapKeyEnforcedAPF,
		MaxArrayElements: maxElements,
		MaxMapPairs:      64,
		MaxNestedLevels:  16,
		IndefLength:      cbor.IndefLengthForbidden,
		TagsMd:           cbor.TagsForbidden,
	}.DecMode()
	if err != nil {
		panic(err) // static options: cannot fail
	}
	return m
}

// Encode validates t and returns its deterministic encoding: equal trees give equal
// bytes. It does not retain t. Errors wrap ErrInvalid and name the offending entry.
func Encode(t *Tree) ([]byte, error) {
	if t == nil {
		return nil, fmt.Errorf("%w: nil tree", ErrInvalid)
	}
	if err := Validate(t); err != nil {
		return nil, err
	}
	nodes := t.Nodes
	if nodes == nil {
		nodes = []Node{}
	}
	b, err := encMode.Marshal(wireTree{Version: Version, Nodes: nodes})
	if err != nil {
		return nil, fmt.Errorf("tree: encode: %w", err)
	}
	if len(b) > MaxSize {
		return nil, fmt.Errorf("%w: encoded tree of %d entries is %d bytes, above the %d byte limit", ErrInvalid, len(t.Nodes), len(b), MaxSize)
	}
	return b, nil
}

// Decode parses and validates an encoded tree. The result does not alias b. Errors wrap
// ErrInvalid.
func Decode(b []byte) (*Tree, error) {
	if len(b) > MaxSize {
		return nil, fmt.Errorf("%w: %d bytes, above the %d byte limit", ErrInvalid, len(b), MaxSize)
	}
	var w wireTree
	if err := decMode.Unmarshal(b, &w); err != nil {
		return nil, fmt.Errorf("%w: decode: %v", ErrInvalid, err)
	}
	if w.Version != Version && w.Version != 1 {
		return nil, fmt.Errorf("%w: unsupported version %d (want 1 or %d)", ErrInvalid, w.Version, Version)
	}
	t := &Tree{Nodes: w.Nodes}
	if len(t.Nodes) == 0 {
		t.Nodes = nil
	}
	if w.Version == 1 {
		for i := range t.Nodes {
			if t.Nodes[i].Offset != 0 {
				return nil, fmt.Errorf("%w: %q: version 1 tree with a content offset", ErrInvalid, t.Nodes[i].Name)
			}
		}
	}
	if err := Validate(t); err != nil {
		return nil, err
	}
	return t, nil
}

// ValidName reports whether name can be a tree entry: non-empty, not "." or "..", no
// "/" and no NUL byte. Such a name always stays inside the directory it is restored to.
func ValidName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("%w: empty name", ErrInvalid)
	case name == "." || name == "..":
		return fmt.Errorf("%w: name %q is not allowed", ErrInvalid, name)
	case strings.ContainsAny(name, "/\x00"):
		return fmt.Errorf("%w: name %q contains a slash or NUL byte", ErrInvalid, name)
	}
	return nil
}

// Validate checks the rules Encode and Decode enforce: names valid, strictly sorted (so
// unique), every node consistent with its type.
func Validate(t *Tree) error {
	for i := range t.Nodes {
		n := &t.Nodes[i]
		if err := ValidName(n.Name); err != nil {
			return fmt.Errorf("entry %d: %w", i, err)
		}
		if i > 0 && t.Nodes[i-1].Name >= n.Name {
			if t.Nodes[i-1].Name == n.Name {
				return fmt.Errorf("%w: duplicate name %q", ErrInvalid, n.Name)
			}
			return fmt.Errorf("%w: names not sorted: %q before %q", ErrInvalid, t.Nodes[i-1].Name, n.Name)
		}
		if err := validateNode(n); err != nil {
			return fmt.Errorf("%w: %q: %v", ErrInvalid, n.Name, err)
		}
	}
	return nil
}

func validateNode(n *Node) error {
	if !n.Type.valid() {
		return fmt.Errorf("unknown type %q", n.Type)
	}
	if n.Type != TypeFile && len(n.Content) > 0 {
		return fmt.Errorf("%s has content", n.Type)
	}
	if n.Type != TypeFile && n.BlockSize != 0 {
		return fmt.Errorf("%s has a block size", n.Type)
	}
	if n.Offset != 0 {
		switch {
		case n.Type != TypeFile:
			return fmt.Errorf("%s has a content offset", n.Type)
		case n.BlockSize != 0:
			return errors.New("block image with a content offset")
		case len(n.Content) == 0 || n.Content[0].Hole:
			return errors.New("content offset without a first data extent")
		case uint64(n.Offset)+uint64(n.Content[0].Len) > chunkstore.MaxChunkSize:
			return fmt.Errorf("content offset %d and first extent of %d bytes end beyond the largest chunk", n.Offset, n.Content[0].Len)
		}
	}
	if (n.Type == TypeDir) != (n.Subtree != nil) {
		return errors.New("only directories, and all of them, have a subtree")
	}
	if n.Subtree != nil && n.Subtree.IsZero() {
		return errors.New("zero subtree id")
	}
	if (n.Type == TypeSymlink) != (n.LinkTarget != "") {
		return errors.New("only symlinks, and all of them, have a link target")
	}
	if strings.IndexByte(n.LinkTarget, 0) >= 0 {
		return errors.New("link target contains a NUL byte")
	}
	if n.Size < 0 {
		return fmt.Errorf("negative size %d", n.Size)
	}
	if n.Type == TypeFile {
		var sum int64
		for j, e := range n.Content {
			switch {
			case e.Len == 0:
				return fmt.Errorf("extent %d is empty", j)
			case e.Hole && !e.ID.IsZero():
				return fmt.Errorf("hole extent %d has an id", j)
			case !e.Hole && e.ID.IsZero():
				return fmt.Errorf("data extent %d has a zero id", j)
			}
			sum += int64(e.Len)
		}
		if sum != n.Size {
			return fmt.Errorf("size %d but extents hold %d bytes", n.Size, sum)
		}
	}
	return nil
}
