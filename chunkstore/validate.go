package chunkstore

import "fmt"

// MaxWriterLen bounds ShardMeta.Writer: shard stores keep it behind a 16-bit length
// (chunkstore/segstore FORMAT.md), and every store refuses the same inputs.
const MaxWriterLen = 1<<16 - 1

// Validate reports why c cannot be stored (zero ID, empty data, data above
// MaxChunkSize): an error wrapping ErrInvalid that names the chunk and what is wrong, or
// nil. Every Store checks a whole batch with it before storing any of it.
func (c *Chunk) Validate() error {
	var why string
	switch {
	case c.ID.IsZero():
		why = "zero chunk ID"
	case len(c.Data) == 0:
		why = "empty data"
	case len(c.Data) > MaxChunkSize:
		why = fmt.Sprintf("%d bytes exceeds %d", len(c.Data), MaxChunkSize)
	default:
		return nil
	}
	return fmt.Errorf("chunk %s: %s: %w", c.ID.Str(), why, ErrInvalid)
}

// Validate reports why s cannot be stored (zero chunk ID, empty data, data above
// MaxChunkSize, K of 0, an index outside K+M, a writer name above MaxWriterLen): an
// error wrapping ErrInvalid that names the shard and what is wrong, or nil. Every
// ShardStore checks a whole batch with it before storing any of it.
func (s *Shard) Validate() error {
	k := s.Key
	var why string
	switch {
	case k.ID.IsZero():
		why = "zero chunk ID"
	case len(s.Data) == 0:
		why = "empty data"
	case len(s.Data) > MaxChunkSize:
		why = fmt.Sprintf("%d bytes exceeds %d", len(s.Data), MaxChunkSize)
	case s.Meta.K == 0:
		why = "K is 0"
	case int(k.Index) >= int(s.Meta.K)+int(s.Meta.M):
		why = fmt.Sprintf("index out of range for %d+%d", s.Meta.K, s.Meta.M)
	case len(s.Meta.Writer) > MaxWriterLen:
		why = fmt.Sprintf("writer name of %d bytes exceeds %d", len(s.Meta.Writer), MaxWriterLen)
	default:
		return nil
	}
	return fmt.Errorf("shard %s/%d: %s: %w", k.ID.Str(), k.Index, why, ErrInvalid)
}
