// Package nodestat holds what a chunk node reports about its storage and its repair
// worker in the node.Status answer (`coffer admin status`). It is a leaf: it imports
// nothing of Coffer's but placement's node ID, so meta's status contract carries these
// figures without importing chunkstore or its repair worker.
package nodestat

import "github.com/cofferhq/coffer/placement"

// Shards summarises one node's shard store (chunkstore.ShardStore's Stats).
type Shards struct {
	Shards   int64 // live shards
	Bytes    int64 // live shard bytes
	Segments int   // segment files (0 for memory stores)
	Capacity int64 // bytes available to the store (0 if unknown)
	Corrupt  int64 // damaged records found since the store was opened (0 if not tracked)
}

// Repair is a chunk node's repair worker's progress (chunkstore/repair), shown by
// `coffer admin status`.
type Repair struct {
	Node       placement.NodeID `cbor:"node" json:"node"`
	Running    bool             `cbor:"running" json:"running"`
	Deep       bool             `cbor:"deep" json:"deep"` // the running or last pass was a deep scrub
	Epoch      uint64           `cbor:"epoch" json:"epoch"`
	Passes     int              `cbor:"passes" json:"passes"`
	DeepPasses int              `cbor:"deep_passes" json:"deep_passes"`
	PGsLed     int              `cbor:"pgs_led" json:"pgs_led"`
	PGsDone    int              `cbor:"pgs_done" json:"pgs_done"` // in the running pass
	// Totals since the worker started.
	ShardsRebuilt int64 `cbor:"shards_rebuilt" json:"shards_rebuilt"`
	ShardsCopied  int64 `cbor:"shards_copied" json:"shards_copied"`
	ShardsDropped int64 `cbor:"shards_dropped" json:"shards_dropped"`
	BytesWritten  int64 `cbor:"bytes_written" json:"bytes_written"`
	// Scrub findings since the worker started: shards found missing at their owner or
	// damaged (bad CRC, or differing from the re-encoded stripe).
	FoundMissing int64 `cbor:"found_missing" json:"found_missing"`
	FoundCorrupt int64 `cbor:"found_corrupt" json:"found_corrupt"`
	// Unreadable names stripes of the last pass with fewer than k good shards.
	Unreadable []string `cbor:"unreadable,omitempty" json:"unreadable,omitempty"`
	LastPass   string   `cbor:"last_pass,omitempty" json:"last_pass,omitempty"` // duration
	// Last is what the last completed pass did and found.
	Last Pass `cbor:"last" json:"last"`
	// LastDeep is the last completed deep scrub pass (zero before the first).
	LastDeep  Pass   `cbor:"last_deep" json:"last_deep"`
	LastError string `cbor:"last_error,omitempty" json:"last_error,omitempty"`
}

// Pass is the counts of one completed repair pass.
type Pass struct {
	Deep       bool   `cbor:"deep" json:"deep"`
	Epoch      uint64 `cbor:"epoch" json:"epoch"`
	Stripes    int    `cbor:"stripes" json:"stripes"`
	Rebuilt    int64  `cbor:"rebuilt" json:"rebuilt"`
	Copied     int64  `cbor:"copied" json:"copied"`
	Dropped    int64  `cbor:"dropped" json:"dropped"`
	Missing    int64  `cbor:"missing" json:"missing"`
	Corrupt    int64  `cbor:"corrupt" json:"corrupt"`
	Unreadable int    `cbor:"unreadable" json:"unreadable"`
}
