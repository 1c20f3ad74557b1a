// Package fsm is the Raft state machine of Coffer's metadata: it applies decoded
// meta/command entries to state kept in Pebble and streams that state as Raft snapshots.
//
// Apply is deterministic: the only clock is the leader's stamp carried by each command,
// folded into a monotonic cluster clock. State and the last applied log index are written
// in one synced Pebble batch per applied group of log entries, so after a crash the FSM
// knows exactly which entries it holds and skips them when Raft replays its log.
//
// Layout of Pebble keys:
//
//	v/<vault>           CBOR meta.Vault
//	s/<vault>/<id hex>  CBOR meta.Snapshot
//	map                 CBOR placement.Map
//	meta/applied        u64 big-endian: index of the last applied log entry
//	meta/clock          i64 big-endian: cluster clock, Unix nanoseconds
//
// The directory given to Open holds a CURRENT file naming the live Pebble directory
// (db-NNNNNN). Restore writes a snapshot into a fresh Pebble directory, verifies its
// checksum, and only then switches CURRENT to it, so a bad or interrupted restore leaves
// the previous state untouched. The snapshot stream format is in meta/FORMAT.md.
package fsm
