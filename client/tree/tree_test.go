package tree

import (
	"bytes"
	"errors"
	"reflect"
	"slices"
	"testing"

	"github.com/fxamacker/cbor/v2"

	"github.com/cofferhq/coffer/chunkstore/chunk"
)

func id(b byte) chunk.ID {
	var i chunk.ID
	i[0], i[31] = b, b
	return i
}

func sample() *Tree {
	sub := id(9)
	return &Tree{Nodes: []Node{
		{Name: "a b ü", Type: TypeFile, Mode: 0o600, UID: 1000, GID: 1000, ModTime: 1700000000123456789, Size: 10 + 4096,
			Inode: 42, Links: 2, DeviceID: 7,
			Content: []Extent{{ID: id(1), Len: 10}, {Len: 4096, Hole: true}}},
		{Name: "bundled", Type: TypeFile, Mode: 0o644, Size: 300, Offset: 70000,
			Content: []Extent{{ID: id(2), Len: 200}, {ID: id(4), Len: 100}}},
		{Name: "dir", Type: TypeDir, Mode: uint32(0o2755) | 1<<31, Subtree: &sub},
		{Name: "empty", Type: TypeFile, Mode: 0o644},
		{Name: "fifo", Type: TypeFIFO, Mode: 0o644},
		{Name: "link", Type: TypeSymlink, Mode: 0o777, LinkTarget: "../x y"},
		{Name: "null", Type: TypeCharDev, Mode: 0o666, Rdev: 259},
	}}
}

func TestRoundTripDeterministic(t *testing.T) {
	in := sample()
	in.Nodes[0].Content = append(in.Nodes[0].Content, Extent{ID: id(1), Len: 1})
	in.Nodes[0].Size++
	b1, err := Encode(in)
	if err != nil {
		t.Fatal(err)
	}
	out, err := Decode(b1)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(in, out) {
		t.Fatalf("round trip differs:\n in %+v\nout %+v", in, out)
	}
	b2, err := Encode(out)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(b1, b2) {
		t.Fatal("re-encoding gives different bytes")
	}
	// A chunk ID is a 32-byte CBOR byte string, not hex text: 0x58 0x20 prefix.
	want := id(1)
	if !bytes.Contains(b1, append([]byte{0x58, 0x20}, want[:]...)) {
		t.Fatal("no byte-string ID in encoding")
	}
}

func TestEmptyTree(t *testing.T) {
	b, err := Encode(&Tree{})
	if err != nil {
		t.Fatal(err)
	}
	out, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	if out.Nodes != nil {
		t.Fatalf("got %d nodes", len(out.Nodes))
	}
}

func TestEncodeRefusesInvalid(t *testing.T) {
	sub := id(3)
	file := func(name string) Node { return Node{Name: name, Type: TypeFile} }
	cases := map[string][]Node{
		"unsorted":        {file("b"), file("a")},
		"duplicate":       {file("a"), file("a")},
		"empty name":      {file("")},
		"dot":             {file(".")},
		"dotdot":          {file("..")},
		"slash":           {file("../etc")},
		"nul":             {file("a\x00b")},
		"unknown type":    {{Name: "x", Type: "weird"}},
		"dir no subtree":  {{Name: "x", Type: TypeDir}},
		"file subtree":    {{Name: "x", Type: TypeFile, Subtree: &sub}},
		"symlink no tgt":  {{Name: "x", Type: TypeSymlink}},
		"size mismatch":   {{Name: "x", Type: TypeFile, Size: 5, Content: []Extent{{ID: sub, Len: 4}}}},
		"zero id":         {{Name: "x", Type: TypeFile, Size: 4, Content: []Extent{{Len: 4}}}},
		"hole with id":    {{Name: "x", Type: TypeFile, Size: 4, Content: []Extent{{ID: sub, Len: 4, Hole: true}}}},
		"offset on dir":   {{Name: "x", Type: TypeDir, Subtree: &sub, Offset: 1}},
		"offset no data":  {{Name: "x", Type: TypeFile, Offset: 1}},
		"offset in hole":  {{Name: "x", Type: TypeFile, Size: 4, Offset: 1, Content: []Extent{{Len: 4, Hole: true}}}},
		"offset of block": {{Name: "x", Type: TypeFile, Size: 4, Offset: 1, BlockSize: 4096, Content: []Extent{{ID: sub, Len: 4}}}},
		"offset too far":  {{Name: "x", Type: TypeFile, Size: 4, Offset: 16<<20 - 3, Content: []Extent{{ID: sub, Len: 4}}}},
		"empty extent":    {{Name: "x", Type: TypeFile, Content: []Extent{{ID: sub}}}},
		"dir content":     {{Name: "x", Type: TypeDir, Subtree: &sub, Content: []Extent{{ID: sub, Len: 1}}}},
		"negative size":   {{Name: "x", Type: TypeFIFO, Size: -1}},
		"zero subtree id": {{Name: "x", Type: TypeDir, Subtree: &chunk.ID{}}},
	}
	for name, nodes := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := Encode(&Tree{Nodes: nodes})
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("Encode: got %v, want ErrInvalid", err)
			}
			// The same tree smuggled past Encode must be refused by Decode.
			raw, err := encMode.Marshal(wireTree{Version: Version, Nodes: nodes})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := Decode(raw); !errors.Is(err, ErrInvalid) {
				t.Fatalf("Decode: got %v, want ErrInvalid", err)
			}
		})
	}
}

func TestDecodeRefusesBadInput(t *testing.T) {
	good, err := Encode(sample())
	if err != nil {
		t.Fatal(err)
	}
	v3, _ := cbor.Marshal(wireTree{Version: 3, Nodes: []Node{}})
	// Version 1 predates offsets: a version 1 tree carrying one is refused.
	v1Offset, _ := encMode.Marshal(wireTree{Version: 1, Nodes: sample().Nodes})
	cases := map[string][]byte{
		"empty":     nil,
		"truncated": good[:len(good)/2],
		"garbage":   []byte("not cbor at all"),
		"version":   v3,
		"v1 offset": v1Offset,
		"trailing":  append(append([]byte{}, good...), 0),
		"too big":   make([]byte, MaxSize+1),
	}
	for name, b := range cases {
		if _, err := Decode(b); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: got %v, want ErrInvalid", name, err)
		}
	}
}

// TestDecodesVersion1: trees written before offsets existed still decode, unchanged.
func TestDecodesVersion1(t *testing.T) {
	in := sample()
	in.Nodes = slices.DeleteFunc(in.Nodes, func(n Node) bool { return n.Offset != 0 })
	raw, err := encMode.Marshal(wireTree{Version: 1, Nodes: in.Nodes})
	if err != nil {
		t.Fatal(err)
	}
	out, err := Decode(raw)
	if err != nil {
		t.Fatalf("version 1 tree: %v", err)
	}
	if !reflect.DeepEqual(in, out) {
		t.Fatalf("version 1 tree decoded to %+v, want %+v", out, in)
	}
}
