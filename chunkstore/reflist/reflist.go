// Package reflist is the snapshot reference-list format (FORMAT.md): the sorted, distinct
// chunk IDs a snapshot needs, stored as key-less chunks addressed by their SHA-256. The
// agent writes it; the meta leader's commit check and GC marking and a chunk node's grant
// gate read it back. It imports nothing of Coffer's but the chunk ID leaf.
package reflist

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"

	"github.com/cofferhq/coffer/chunkstore/chunk"
	sha256 "github.com/minio/sha256-simd"
)

// Reference-list chunk format (see FORMAT.md): magic, version, count, then count sorted,
// distinct 32-byte chunk IDs.
const (
	magic   = "CREF"
	version = 1
	header  = len(magic) + 1 + 4
	// MaxIDs is the most IDs one reference-list chunk holds (1 MiB of IDs).
	MaxIDs = 32768
	// AvgIDs is the average number of IDs per chunk Encode writes (32 KiB of IDs):
	// a chunk ends after an ID whose last 8 bytes are 0 modulo AvgIDs (boundary).
	AvgIDs = 1024
)

// boundary reports whether a reference-list chunk ends after id. It looks at the ID's
// last bytes, not its first: the list is sorted by the first, so a test on them would
// put every boundary at the start of the list. Chunk IDs are HMAC or SHA-256 outputs,
// so the last bytes are uniform and independent of the position in the list.
func boundary(id chunk.ID) bool {
	return binary.BigEndian.Uint64(id[chunk.Size-8:])%AvgIDs == 0
}

// ErrInvalid marks bytes that are not a reference-list chunk, or not the one asked for.
var ErrInvalid = errors.New("reflist: invalid reference list")

// Chunk is one encoded reference-list chunk: its content address and bytes. It converts
// to chunkstore.Chunk.
type Chunk struct {
	ID   chunk.ID
	Data []byte
}

// Encode builds the key-less reference-list chunks of a snapshot: ids are sorted and
// deduplicated, then split, in order, after every ID that is a boundary (AvgIDs IDs per
// chunk on average) and after MaxIDs IDs at most. Each chunk's ID is the SHA-256 of its
// data. ids is not modified; an empty ids gives no chunks.
//
// The split is content-defined so that a snapshot whose references differ from its
// parent's in a few IDs shares all but a few reference-list chunks with it: an added or
// removed ID changes only the chunk it falls in (two, when it is itself a boundary), and
// the agent uploads only those. With a split every MaxIDs IDs, one added ID shifted every
// later chunk: a backup that changed one file of a 1,000,000-file tree stored half of its
// 32 MiB reference list again.
func Encode(ids []chunk.ID) []Chunk {
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
	var out []Chunk
	for len(sorted) > 0 {
		n := 0
		for n < len(sorted) && n < MaxIDs {
			n++
			if boundary(sorted[n-1]) {
				break
			}
		}
		out = append(out, encodeRun(sorted[:n]))
		sorted = sorted[n:]
	}
	return out
}

// encodeRun encodes sorted, distinct ids (at most MaxIDs) as one chunk.
func encodeRun(ids []chunk.ID) Chunk {
	data := make([]byte, header+len(ids)*chunk.Size)
	copy(data, magic)
	data[len(magic)] = version
	binary.BigEndian.PutUint32(data[len(magic)+1:], uint32(len(ids)))
	p := data[header:]
	for i, id := range ids {
		copy(p[i*chunk.Size:], id[:])
	}
	return Chunk{ID: chunk.ID(sha256.Sum256(data)), Data: data}
}

// Open checks that data, read as reference-list chunk ref, hashes to ref (reference lists
// are content-addressed by SHA-256, so no node can substitute one) and decodes it
// (Decode). Both failures wrap ErrInvalid and name ref.
func Open(ref chunk.ID, data []byte) ([]chunk.ID, error) {
	if chunk.ID(sha256.Sum256(data)) != ref {
		return nil, fmt.Errorf("%w: reference list %s does not hash to its ID", ErrInvalid, ref.Str())
	}
	ids, err := Decode(data)
	if err != nil {
		return nil, fmt.Errorf("reference list %s: %w", ref.Str(), err)
	}
	return ids, nil
}

// Decode parses one reference-list chunk. It checks the magic, version, length and that
// the IDs are strictly increasing (sorted and distinct); any violation is an error
// wrapping ErrInvalid that names the problem. The returned slice does not alias data.
func Decode(data []byte) ([]chunk.ID, error) {
	if len(data) < header {
		return nil, fmt.Errorf("%w: %d bytes, shorter than the %d-byte header", ErrInvalid, len(data), header)
	}
	if string(data[:len(magic)]) != magic {
		return nil, fmt.Errorf("%w: bad magic %q", ErrInvalid, data[:len(magic)])
	}
	if v := data[len(magic)]; v != version {
		return nil, fmt.Errorf("%w: unsupported version %d (want %d)", ErrInvalid, v, version)
	}
	n := binary.BigEndian.Uint32(data[len(magic)+1:])
	if n > MaxIDs {
		return nil, fmt.Errorf("%w: count %d above the limit %d", ErrInvalid, n, MaxIDs)
	}
	body := data[header:]
	if uint64(len(body)) != uint64(n)*chunk.Size {
		return nil, fmt.Errorf("%w: count %d needs %d bytes of IDs, have %d", ErrInvalid, n, uint64(n)*chunk.Size, len(body))
	}
	ids := make([]chunk.ID, n)
	for i := range ids {
		copy(ids[i][:], body[i*chunk.Size:])
		if i > 0 && !ids[i-1].Less(ids[i]) {
			return nil, fmt.Errorf("%w: ID %d (%s) is not above ID %d (%s): not sorted or duplicated", ErrInvalid, i, ids[i].Str(), i-1, ids[i-1].Str())
		}
	}
	return ids, nil
}
