package meta

import (
	"encoding/binary"
	"fmt"
	"slices"

	"github.com/cofferhq/coffer/chunkstore"
	"github.com/cofferhq/coffer/chunkstore/chunk"
	sha256 "github.com/minio/sha256-simd"
)

// Reference-list chunk format (see FORMAT.md): magic, version, count, then count sorted,
// distinct 32-byte chunk IDs.
const (
	refListMagic   = "CREF"
	refListVersion = 1
	refListHeader  = len(refListMagic) + 1 + 4
	// RefListMaxIDs is the most IDs one reference-list chunk holds (1 MiB of IDs).
	RefListMaxIDs = 32768
)

// EncodeRefList builds the key-less reference-list chunks of a snapshot: ids are sorted
// and deduplicated, then split into chunks of at most RefListMaxIDs IDs, in order. Each
// chunk's ID is the SHA-256 of its data. ids is not modified; an empty ids gives no chunks.
func EncodeRefList(ids []chunk.ID) []chunkstore.Chunk {
	sorted := slices.Clone(ids)
	slices.SortFunc(sorted, func(a, b chunk.ID) int {
		switch {
		case a.Less(b):
			return -1
		case b.Less(a):
			return 1
		}
		return 0
	})
	sorted = slices.Compact(sorted)
	var out []chunkstore.Chunk
	for len(sorted) > 0 {
		n := min(len(sorted), RefListMaxIDs)
		data := make([]byte, refListHeader+n*chunk.Size)
		copy(data, refListMagic)
		data[len(refListMagic)] = refListVersion
		binary.BigEndian.PutUint32(data[len(refListMagic)+1:], uint32(n))
		p := data[refListHeader:]
		for i, id := range sorted[:n] {
			copy(p[i*chunk.Size:], id[:])
		}
		out = append(out, chunkstore.Chunk{ID: chunk.ID(sha256.Sum256(data)), Data: data})
		sorted = sorted[n:]
	}
	return out
}

// OpenRefList checks that data, read as reference-list chunk ref, hashes to ref (reference
// lists are content-addressed by SHA-256, so no node can substitute one) and decodes it
// (DecodeRefList). Both failures wrap ErrInvalid and name ref.
func OpenRefList(ref chunk.ID, data []byte) ([]chunk.ID, error) {
	if chunk.ID(sha256.Sum256(data)) != ref {
		return nil, fmt.Errorf("%w: reference list %s does not hash to its ID", ErrInvalid, ref.Str())
	}
	ids, err := DecodeRefList(data)
	if err != nil {
		return nil, fmt.Errorf("reference list %s: %w", ref.Str(), err)
	}
	return ids, nil
}

// DecodeRefList parses one reference-list chunk. It checks the magic, version, length and
// that the IDs are strictly increasing (sorted and distinct); any violation is an error
// wrapping ErrInvalid that names the problem. The returned slice does not alias data.
func DecodeRefList(data []byte) ([]chunk.ID, error) {
	if len(data) < refListHeader {
		return nil, fmt.Errorf("%w: reference list: %d bytes, shorter than the %d-byte header", ErrInvalid, len(data), refListHeader)
	}
	if string(data[:len(refListMagic)]) != refListMagic {
		return nil, fmt.Errorf("%w: reference list: bad magic %q", ErrInvalid, data[:len(refListMagic)])
	}
	if v := data[len(refListMagic)]; v != refListVersion {
		return nil, fmt.Errorf("%w: reference list: unsupported version %d (want %d)", ErrInvalid, v, refListVersion)
	}
	n := binary.BigEndian.Uint32(data[len(refListMagic)+1:])
	if n > RefListMaxIDs {
		return nil, fmt.Errorf("%w: reference list: count %d above the limit %d", ErrInvalid, n, RefListMaxIDs)
	}
	body := data[refListHeader:]
	if uint64(len(body)) != uint64(n)*chunk.Size {
		return nil, fmt.Errorf("%w: reference list: count %d needs %d bytes of IDs, have %d", ErrInvalid, n, uint64(n)*chunk.Size, len(body))
	}
	ids := make([]chunk.ID, n)
	for i := range ids {
		copy(ids[i][:], body[i*chunk.Size:])
		if i > 0 && !ids[i-1].Less(ids[i]) {
			return nil, fmt.Errorf("%w: reference list: ID %d (%s) is not above ID %d (%s): not sorted or duplicated", ErrInvalid, i, ids[i].Str(), i-1, ids[i-1].Str())
		}
	}
	return ids, nil
}
