// Package chunkrpc carries the chunkstore contracts over transport: a Server that answers
// "shard.*" and "chunk.*" RPCs from a node's stores, a ShardClient that is a
// chunkstore.ShardStore on one remote node, and a Client that is a chunkstore.Store across
// a set of coordinator nodes.
//
// Wiring on a node: the server is mounted on the node's transport.Mux under the prefixes
// "shard" and "chunk":
//
//	mux := transport.NewMux()
//	chunkrpc.NewServer(shards, coordinator).Register(mux) // Handle("shard", s); Handle("chunk", s)
//	ep, _ := quic.New(quic.Config{ListenAddr: addr, Identity: id, Handler: mux})
//
// Access: shard.* methods are for peers whose certificate role is node (coordinators
// writing shards, repair, scrub); anyone else gets PermissionDenied. chunk.* methods are
// open to every authenticated peer; finer permissions (vault grants) are enforced above
// this layer.
//
// Errors: chunkstore sentinels cross the wire as transport codes (see Sentinels) and the
// clients map them back, so errors.Is(err, chunkstore.ErrNotFound) works on the caller's
// side. A peer that cannot be reached yields an error matching both
// transport.ErrUnreachable and chunkstore.ErrUnavailable.
//
// Message layouts are in FORMAT.md beside this file.
package chunkrpc
