package memstore

import (
	"fmt"

	"github.com/cofferhq/coffer/chunkstore"
)

// maxWriterLen bounds ShardMeta.Writer, matching the segment format of chunkstore/segstore
// so that both stores accept the same inputs.
const maxWriterLen = 1<<16 - 1

// validateShard reports why s cannot be stored, wrapping chunkstore.ErrInvalid, or nil.
func validateShard(s *chunkstore.Shard) error {
	k := s.Key
	switch {
	case k.ID.IsZero():
		return fmt.Errorf("memstore: shard %s/%d: zero chunk ID: %w", k.ID.Str(), k.Index, chunkstore.ErrInvalid)
	case len(s.Data) == 0:
		return fmt.Errorf("memstore: shard %s/%d: empty data: %w", k.ID.Str(), k.Index, chunkstore.ErrInvalid)
	case len(s.Data) > chunkstore.MaxChunkSize:
		return fmt.Errorf("memstore: shard %s/%d: %d bytes exceeds %d: %w", k.ID.Str(), k.Index, len(s.Data), chunkstore.MaxChunkSize, chunkstore.ErrInvalid)
	case s.Meta.K == 0:
		return fmt.Errorf("memstore: shard %s/%d: K is 0: %w", k.ID.Str(), k.Index, chunkstore.ErrInvalid)
	case int(k.Index) >= int(s.Meta.K)+int(s.Meta.M):
		return fmt.Errorf("memstore: shard %s/%d: index out of range for %d+%d: %w", k.ID.Str(), k.Index, s.Meta.K, s.Meta.M, chunkstore.ErrInvalid)
	case len(s.Meta.Writer) > maxWriterLen:
		return fmt.Errorf("memstore: shard %s/%d: writer name of %d bytes exceeds %d: %w", k.ID.Str(), k.Index, len(s.Meta.Writer), maxWriterLen, chunkstore.ErrInvalid)
	}
	return nil
}

// validateChunk reports why c cannot be stored, wrapping chunkstore.ErrInvalid, or nil.
func validateChunk(c *chunkstore.Chunk) error {
	switch {
	case c.ID.IsZero():
		return fmt.Errorf("memstore: chunk %s: zero chunk ID: %w", c.ID.Str(), chunkstore.ErrInvalid)
	case len(c.Data) == 0:
		return fmt.Errorf("memstore: chunk %s: empty data: %w", c.ID.Str(), chunkstore.ErrInvalid)
	case len(c.Data) > chunkstore.MaxChunkSize:
		return fmt.Errorf("memstore: chunk %s: %d bytes exceeds %d: %w", c.ID.Str(), len(c.Data), chunkstore.MaxChunkSize, chunkstore.ErrInvalid)
	}
	return nil
}
