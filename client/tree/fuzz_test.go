package tree

import (
	"bytes"
	"errors"
	"reflect"
	"testing"

	"github.com/fxamacker/cbor/v2"
)

// FuzzDecode: Decode never panics and refuses bad input with ErrInvalid only; a tree
// it accepts re-encodes (Encode validates by the same rules), decodes to the same tree,
// and re-encodes to the same bytes.
func FuzzDecode(f *testing.F) {
	for _, tr := range []*Tree{sample(), {}, {Nodes: sample().Nodes[2:3]}} {
		b, err := Encode(tr)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	v1, err := cbor.Marshal(map[int]any{1: 1, 2: []map[int]any{{1: "x", 2: "file", 3: 0o644}}})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(v1)
	f.Add([]byte{0xa1, 0x01, 0x01})
	// Announces a 2^20-element array in five bytes.
	f.Add([]byte{0xa2, 0x01, 0x02, 0x02, 0x9a, 0x00, 0x10, 0x00, 0x00})
	f.Fuzz(func(t *testing.T, b []byte) {
		tr, err := Decode(b)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error is not ErrInvalid: %v", err)
			}
			return
		}
		enc, err := Encode(tr)
		if err != nil {
			t.Fatalf("decoded tree does not encode: %v", err)
		}
		again, err := Decode(enc)
		if err != nil {
			t.Fatalf("re-encoded tree does not decode: %v", err)
		}
		if !reflect.DeepEqual(tr, again) {
			t.Fatalf("round trip differs:\n%+v\n%+v", tr, again)
		}
		enc2, err := Encode(again)
		if err != nil || !bytes.Equal(enc, enc2) {
			t.Fatalf("re-encoding is not deterministic (%v)", err)
		}
	})
}
