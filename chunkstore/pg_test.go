package chunkstore

import (
	"math/rand/v2"
	"testing"

	"github.com/cofferhq/coffer/chunkstore/chunk"
)

// Under every power-of-two PG count, a chunk's sort key falls in its PG's range and in
// no other PG's, and the ranges of a count tile the 65536 sort keys in PG-sort order.
func TestPGRange(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for b := range 19 {
		pgCount := uint32(1) << b
		for range 2000 {
			var id chunk.ID
			for i := range id {
				id[i] = byte(r.Uint32())
			}
			pg := PGOf(id, pgCount)
			lo, hi := PGRange(pgCount, pg)
			if sk := uint32(PGSortKey(id)); sk < lo || sk >= hi {
				t.Fatalf("pgCount %d: chunk of PG %d has sort key %d outside [%d, %d)", pgCount, pg, sk, lo, hi)
			}
			if pgCount <= PGBuckets && pg+1 < pgCount {
				if lo2, _ := PGRange(pgCount, pg+1); lo2 < hi && lo2 >= lo {
					t.Fatalf("pgCount %d: ranges of PGs %d and %d overlap", pgCount, pg, pg+1)
				}
			}
		}
		if pgCount <= PGBuckets {
			total := uint32(0)
			for pg := range pgCount {
				lo, hi := PGRange(pgCount, pg)
				total += hi - lo
			}
			if total != PGBuckets {
				t.Fatalf("pgCount %d: ranges cover %d sort keys, want %d", pgCount, total, PGBuckets)
			}
		}
	}
}
