package wire_test

import (
	"bytes"
	"testing"
	"unsafe"

	"github.com/cofferhq/coffer/transport/wire"
)

type plainMsg struct {
	A    string `cbor:"1,keyasint"`
	Data []byte `cbor:"2,keyasint,omitempty"`
}

type aliasMsg struct {
	A    string     `cbor:"1,keyasint"`
	Data wire.Bytes `cbor:"2,keyasint,omitempty"`
}

// TestBytesAliasesInput checks that a Bytes field encodes exactly as []byte does and
// decodes as a slice of the input with its capacity clipped, for lengths that take
// every size of byte-string head.
func TestBytesAliasesInput(t *testing.T) {
	for _, n := range []int{0, 1, 23, 24, 255, 256, 65535, 65536, 70000} {
		data := make([]byte, n)
		for i := range data {
			data[i] = byte(i*13 + 1)
		}
		plain, err := wire.Marshal(plainMsg{A: "x", Data: data})
		if err != nil {
			t.Fatal(err)
		}
		alias, err := wire.Marshal(aliasMsg{A: "x", Data: data})
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(plain, alias) {
			t.Fatalf("n=%d: Bytes encodes as % x, []byte as % x", n, alias[:min(len(alias), 16)], plain[:min(len(plain), 16)])
		}
		var got aliasMsg
		if err := wire.Unmarshal(alias, &got); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got.Data, data) {
			t.Fatalf("n=%d: decoded %d bytes that differ from the %d encoded", n, len(got.Data), n)
		}
		if n == 0 {
			continue
		}
		start := uintptr(unsafe.Pointer(unsafe.SliceData(alias)))
		p := uintptr(unsafe.Pointer(unsafe.SliceData(got.Data)))
		if p < start || p+uintptr(n) > start+uintptr(len(alias)) {
			t.Fatalf("n=%d: decoded bytes are a copy, not a slice of the input", n)
		}
		if cap(got.Data) != n {
			t.Fatalf("n=%d: capacity %d, want %d (an append must not write over the input)", n, cap(got.Data), n)
		}
	}
}

// TestBytesRefusesOtherItems: null decodes to nil; any other item than a byte string
// is an error naming what it is, and a tagged byte string too.
func TestBytesRefusesOtherItems(t *testing.T) {
	var b wire.Bytes = []byte("old")
	if err := wire.Unmarshal([]byte{0xf6}, &b); err != nil || b != nil {
		t.Fatalf("null: %v, %q; want nil, no error", err, b)
	}
	for name, in := range map[string][]byte{
		"text string":  {0x63, 'a', 'b', 'c'},
		"integer":      {0x18, 0x40},
		"array":        {0x81, 0x41, 0x00},
		"tagged bytes": {0xd8, 0x18, 0x41, 0x00},
		"map":          {0xa0},
		"true":         {0xf5},
	} {
		var b wire.Bytes
		if err := wire.Unmarshal(in, &b); err == nil {
			t.Errorf("%s (% x): decoded as %q, want an error", name, in, b)
		}
	}
}
