// Package chunker splits byte streams into content-defined chunks with FastCDC
// (normalized chunking, level 2), its gear table derived from a per-vault secret seed.
//
// Chunk boundaries depend only on the content and the seed, so an insertion or deletion
// changes only the chunks around it and everything else deduplicates. Because the gear
// table is secret (derived from the vault key, see client/crypt), chunk sizes do not
// reveal which known files a vault holds. The algorithm and its parameters are part of
// the vault format and are named by Params.Name (see FORMAT.md beside this file).
//
//	c, err := chunker.New(chunker.DefaultParams(), keys.GearSeed())
//	buf := make([]byte, 2*c.Params().Max)
//	err = c.Split(file, buf, func(chunk []byte) error { ...; return nil })
//
// A *Chunker is immutable and safe for concurrent use; Cut is a pure function of its
// input, which makes the chunker easy to drive from a pipeline that owns the buffers.
package chunker
