package chunkstore

import (
	"errors"
	"strings"
	"testing"

	"github.com/cofferhq/coffer/chunkstore/chunk"
)

// TestValidate: each invariant refuses with ErrInvalid and says which one, at the bound
// and not before it.
func TestValidate(t *testing.T) {
	id := chunk.ID{1}
	good := Shard{Key: ShardKey{ID: id, Index: 5}, Meta: ShardMeta{K: 4, M: 2, Writer: strings.Repeat("w", MaxWriterLen)}, Data: make([]byte, MaxChunkSize)}
	if err := good.Validate(); err != nil {
		t.Fatalf("shard at every bound: %v", err)
	}
	if err := (&Chunk{ID: id, Data: make([]byte, MaxChunkSize)}).Validate(); err != nil {
		t.Fatalf("chunk of MaxChunkSize: %v", err)
	}
	for _, c := range []struct {
		name, want string
		edit       func(*Shard)
	}{
		{"zero ID", "zero chunk ID", func(s *Shard) { s.Key.ID = chunk.ID{} }},
		{"empty", "empty data", func(s *Shard) { s.Data = nil }},
		{"oversize", "exceeds", func(s *Shard) { s.Data = make([]byte, MaxChunkSize+1) }},
		{"K 0", "K is 0", func(s *Shard) { s.Meta.K = 0 }},
		{"index", "index out of range for 4+2", func(s *Shard) { s.Key.Index = 6 }},
		{"writer", "writer name", func(s *Shard) { s.Meta.Writer += "w" }},
	} {
		s := good
		c.edit(&s)
		err := s.Validate()
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "shard ") {
			t.Errorf("shard with %s: %v, want ErrInvalid saying %q", c.name, err, c.want)
		}
	}
	for _, c := range []struct {
		name, want string
		ch         Chunk
	}{
		{"zero ID", "zero chunk ID", Chunk{Data: []byte{1}}},
		{"empty", "empty data", Chunk{ID: id}},
		{"oversize", "exceeds", Chunk{ID: id, Data: make([]byte, MaxChunkSize+1)}},
	} {
		err := c.ch.Validate()
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "chunk ") {
			t.Errorf("chunk with %s: %v, want ErrInvalid saying %q", c.name, err, c.want)
		}
	}
}
