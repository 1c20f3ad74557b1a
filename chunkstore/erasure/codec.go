package erasure

import (
	"fmt"
	"sync"

	"github.com/cofferhq/coffer/chunkstore"
	"github.com/klauspost/reedsolomon"
)

// MaxShards bounds k+m: shard indexes are one byte, and above 256 shards the library
// would switch to a different (Leopard GF16) code.
const MaxShards = 256

type profile struct{ k, m int }

// Codec encodes and decodes stripes. It builds one encoder per (k, m) on first use and
// reuses it. A Codec is safe for concurrent use; the zero value is not usable, use
// NewCodec.
type Codec struct {
	mu struct {
		sync.Mutex
		encs map[profile]reedsolomon.Encoder
	}
}

// NewCodec returns a Codec with an empty encoder cache.
func NewCodec() *Codec {
	c := &Codec{}
	c.mu.encs = make(map[profile]reedsolomon.Encoder)
	return c
}

func checkProfile(k, m int) error {
	if k < 1 || m < 0 || k+m > MaxShards {
		return fmt.Errorf("erasure: profile %d+%d: want k ≥ 1, m ≥ 0, k+m ≤ %d: %w", k, m, MaxShards, chunkstore.ErrInvalid)
	}
	return nil
}

// encoder returns the cached encoder for k+m, building it on first use.
func (c *Codec) encoder(k, m int) (reedsolomon.Encoder, error) {
	if err := checkProfile(k, m); err != nil {
		return nil, err
	}
	p := profile{k, m}
	c.mu.Lock()
	defer c.mu.Unlock()
	if enc, ok := c.mu.encs[p]; ok {
		return enc, nil
	}
	enc, err := reedsolomon.New(k, m)
	if err != nil {
		return nil, fmt.Errorf("erasure: new %d+%d encoder: %w", k, m, err)
	}
	c.mu.encs[p] = enc
	return enc, nil
}

// ShardLen returns the length of every shard of a stripe of a size-byte chunk:
// ceil(size/k). It is 0 for size ≤ 0 or k < 1.
func ShardLen(k, size int) int {
	if k < 1 || size <= 0 {
		return 0
	}
	return (size + k - 1) / k
}

// Encode splits data into k data shards (the last zero-padded) and computes m parity
// shards. It returns k+m shards of ShardLen(k, len(data)) bytes each, carved from one
// newly allocated buffer that the caller owns; data is not retained or modified.
// Errors wrap chunkstore.ErrInvalid for a bad profile or empty data.
func (c *Codec) Encode(k, m int, data []byte) ([][]byte, error) {
	enc, err := c.encoder(k, m)
	if err != nil {
		return nil, err
	}
	if len(data) == 0 {
		return nil, fmt.Errorf("erasure: encode %d+%d: empty data: %w", k, m, chunkstore.ErrInvalid)
	}
	per := ShardLen(k, len(data))
	buf := make([]byte, per*(k+m))
	copy(buf, data)
	shards := make([][]byte, k+m)
	for i := range shards {
		shards[i] = buf[i*per : (i+1)*per : (i+1)*per]
	}
	if m > 0 {
		if err := enc.Encode(shards); err != nil {
			return nil, fmt.Errorf("erasure: encode %d+%d: %w", k, m, err)
		}
	}
	return shards, nil
}

// present counts the shards that are not missing (nil or empty) and checks that they
// all have the same length, which it returns.
func present(k, m int, shards [][]byte) (have, size int, err error) {
	if len(shards) != k+m {
		return 0, 0, fmt.Errorf("erasure: %d+%d: %d shards given: %w", k, m, len(shards), chunkstore.ErrInvalid)
	}
	for i, s := range shards {
		if len(s) == 0 {
			continue
		}
		if have > 0 && len(s) != size {
			return 0, 0, fmt.Errorf("erasure: %d+%d: shard %d has %d bytes, others %d: %w", k, m, i, len(s), size, chunkstore.ErrInvalid)
		}
		size = len(s)
		have++
	}
	if have < k {
		return have, size, fmt.Errorf("erasure: %d+%d: have %d of %d shards, need %d: %w", k, m, have, k+m, k, chunkstore.ErrUnavailable)
	}
	return have, size, nil
}

// Decode rebuilds a size-byte chunk from a stripe in which missing shards are nil (or
// empty). It needs any k shards of equal length. The caller's shards slice and the
// shards in it are not modified; the result is newly allocated.
//
// Decode cannot tell a wrong shard from a right one: check the result against the
// chunk's checksum. Errors: fewer than k shards wraps chunkstore.ErrUnavailable and names
// have/need; a bad profile, unequal shard lengths or a size that does not fit the shards
// wrap chunkstore.ErrInvalid.
func (c *Codec) Decode(k, m int, shards [][]byte, size int) ([]byte, error) {
	enc, err := c.encoder(k, m)
	if err != nil {
		return nil, err
	}
	_, per, err := present(k, m, shards)
	if err != nil {
		return nil, err
	}
	if size <= 0 || ShardLen(k, size) != per {
		return nil, fmt.Errorf("erasure: decode %d+%d: size %d does not fit shards of %d bytes: %w", k, m, size, per, chunkstore.ErrInvalid)
	}
	work := shards
	for i := range k {
		if len(shards[i]) == 0 {
			// NB: reconstruct into a private copy of the slice header list so the
			// caller's slice keeps its nil entries.
			work = make([][]byte, k+m)
			copy(work, shards)
			if err := enc.ReconstructData(work); err != nil {
				return nil, fmt.Errorf("erasure: decode %d+%d: %w", k, m, err)
			}
			break
		}
	}
	out := make([]byte, size)
	off := 0
	for i := 0; i < k && off < size; i++ {
		off += copy(out[off:], work[i])
	}
	return out, nil
}

// Reconstruct fills every missing (nil or empty) shard of a stripe in place, for repair.
// Present shards are not modified; a missing entry with spare capacity (shard[:0]) is
// rebuilt in that buffer, a nil entry into a new one. Errors: as Decode.
func (c *Codec) Reconstruct(k, m int, shards [][]byte) error {
	enc, err := c.encoder(k, m)
	if err != nil {
		return err
	}
	have, _, err := present(k, m, shards)
	if err != nil {
		return err
	}
	if have == k+m {
		return nil
	}
	if err := enc.Reconstruct(shards); err != nil {
		return fmt.Errorf("erasure: reconstruct %d+%d: %w", k, m, err)
	}
	return nil
}

// Verify reports whether the parity of a complete stripe matches its data shards (deep
// scrub). All k+m shards must be present; errors as Decode.
func (c *Codec) Verify(k, m int, shards [][]byte) (bool, error) {
	enc, err := c.encoder(k, m)
	if err != nil {
		return false, err
	}
	have, _, err := present(k, m, shards)
	if err != nil {
		return false, err
	}
	if have != k+m {
		return false, fmt.Errorf("erasure: verify %d+%d: have %d of %d shards: %w", k, m, have, k+m, chunkstore.ErrInvalid)
	}
	ok, err := enc.Verify(shards)
	if err != nil {
		return false, fmt.Errorf("erasure: verify %d+%d: %w", k, m, err)
	}
	return ok, nil
}
