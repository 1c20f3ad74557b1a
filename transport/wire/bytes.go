package wire

import (
	"encoding/binary"
	"fmt"
)

// Bytes is a byte string field that Unmarshal fills without a copy: the decoded value is
// the byte string's content inside the input being decoded, its capacity clipped to its
// length (an append reallocates instead of writing over the rest of the input). It is
// for the bulk fields of large messages (chunk and shard data) decoded from a frame body
// that the reader allocated for that frame alone (ReadRequest, ReadResponse): a decoded
// value keeps the whole body alive, and neither the body nor the value may be changed
// while the other is used. It encodes as a plain byte string: the same bytes as []byte.
//
// Only a definite-length byte string (major type 2) or null decodes into Bytes; a tagged
// or other item is an error (an encoder of this format never writes one).
type Bytes []byte

// UnmarshalCBOR implements cbor.Unmarshaler. data is exactly one well-formed data item,
// a sub-slice of the input (the decoder checks well-formedness before it calls this).
func (b *Bytes) UnmarshalCBOR(data []byte) error {
	if len(data) == 1 && (data[0] == 0xf6 || data[0] == 0xf7) { // null, undefined
		*b = nil
		return nil
	}
	n, head, ok := Head(data, 2)
	if !ok {
		return fmt.Errorf("wire: bytes: not a definite-length byte string (initial byte %#x, %d bytes of input)", firstByte(data), len(data))
	}
	if uint64(len(data)-head) != n {
		return fmt.Errorf("wire: bytes: byte string of %d bytes in an item of %d", n, len(data)-head)
	}
	*b = data[head:len(data):len(data)]
	return nil
}

// Head parses the head of the CBOR data item at the start of data when it has major
// type major (RFC 8949 §3) and a definite length: the length or count it announces and
// the head's own size. It reads only the head, so a caller can bound an item (an
// array's element count, say) before decoding it.
func Head(data []byte, major byte) (n uint64, head int, ok bool) {
	if len(data) == 0 || data[0]>>5 != major {
		return 0, 0, false
	}
	info := data[0] & 0x1f
	switch {
	case info < 24:
		return uint64(info), 1, true
	case info > 27:
		return 0, 0, false // indefinite length or reserved: the decoder refuses them
	}
	size := 1 << (info - 24) // 1, 2, 4 or 8 bytes of length follow
	if len(data) < 1+size {
		return 0, 0, false
	}
	switch size {
	case 1:
		n = uint64(data[1])
	case 2:
		n = uint64(binary.BigEndian.Uint16(data[1:]))
	case 4:
		n = uint64(binary.BigEndian.Uint32(data[1:]))
	default:
		n = binary.BigEndian.Uint64(data[1:])
	}
	return n, 1 + size, true
}

func firstByte(data []byte) byte {
	if len(data) == 0 {
		return 0
	}
	return data[0]
}
