// Package bench is Coffer's benchmark suite (`coffer bench`): client-side stage
// micro-benchmarks run in process (FastCDC, chunk IDs, zstd and S2, AES-GCM, the real
// chunk sealing, Reed-Solomon, QUIC versus TCP+TLS 1.3 on loopback), the client
// pipeline run in process (client.Agent.Backup into memstore and an in-memory meta
// service, pipeline.go), node-side stages
// read from `cofferd bench-stages --json` (package bench/nodebench), and end-to-end
// scenarios that drive a `cofferd dev` cluster and the `coffer` binary as child
// processes, next to restic and borg on the same datasets (successive Go toolchain
// releases from the module proxy).
//
// The package must stay importable by the agent binary: it imports no raft, memberlist
// or pebble (node/structure_test.go); everything node-side runs in the cofferd process.
// Figures are measurements for humans; nothing here fails on speed.
package bench
