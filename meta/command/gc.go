package command

import (
	"github.com/cofferhq/coffer/meta"
)

// GCBegin starts garbage-collection epoch Epoch (the current epoch plus one), led by
// Leader, abandoning any collection still in progress. It puts the state in the mark
// phase. CommitSnapshot entries checked in an earlier epoch are refused from now on.
type GCBegin struct {
	Epoch  uint64 `cbor:"epoch"`
	Leader string `cbor:"leader"`
	Grace  int64  `cbor:"grace"` // nanoseconds
}

// GCSweep moves epoch Epoch (current, in the mark phase) to the sweep phase: from now on
// chunk nodes accept its sweep orders.
type GCSweep struct {
	Epoch uint64 `cbor:"epoch"`
}

// GCEnd ends epoch Epoch (current) and records its report; the state goes idle.
type GCEnd struct {
	Epoch  uint64        `cbor:"epoch"`
	Report meta.GCReport `cbor:"report"`
}

// Type implements Body.
func (GCBegin) Type() Type { return TypeGCBegin }

// Type implements Body.
func (GCSweep) Type() Type { return TypeGCSweep }

// Type implements Body.
func (GCEnd) Type() Type { return TypeGCEnd }
