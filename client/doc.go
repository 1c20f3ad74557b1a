// Package client is the Coffer agent library: it creates and opens vaults, backs up
// directory trees into the cluster and restores, lists and dumps snapshots.
//
// It reaches the cluster only through meta.Service and chunkstore.Store; it encrypts
// everything (client/crypt), chunks files (client/chunker), stores directories as trees
// (client/tree), loads and caches trees through client/snapshot and uploads through a
// bounded pipeline (client/upload).
//
// Snapshot layout (restic-like): every backup path argument becomes one top-level entry
// of the snapshot's root tree, named by its base name: `coffer backup /usr/local/go/src
// /etc` gives a root tree with entries "etc" and "src". Two arguments with the same base
// name are refused. A single "/" argument makes the root tree the listing of "/" itself.
// Snapshot.Paths records the cleaned absolute paths. Paths inside a snapshot, as List
// reports them and Restore's Include and Dump accept them, are slash-separated and start
// with "/": "/src/fmt/print.go".
//
// The formats (trees, chunk envelopes, reference lists) and how they fit together are
// described in client/tree/FORMAT.md.
//
// Example:
//
//	agent, err := client.Open(ctx, client.Config{Meta: m, Chunks: s, Now: time.Now}, "default", pass)
//	res, err := agent.Backup(ctx, client.BackupOptions{Paths: []string{"/etc"}})
//	_, err = agent.Restore(ctx, res.Snapshot, client.RestoreOptions{Target: "/tmp/r"})
package client
