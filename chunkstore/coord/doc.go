// Package coord is the coordinator: a chunkstore.Store of shard stores: it erasure-codes every chunk and
// spreads its shards over the nodes that the cluster map places its PG on.
//
// Writes: each chunk of a batch is encoded (profile k+m from the map) and its shard i
// goes to the i-th placed node; all shards of a batch bound for one node travel in one
// PutShards call, nodes in parallel. A chunk is acknowledged once a write quorum of k+1
// shards is durable: it then survives the loss of one more shard and still reads back.
//
// Reads: the k data shards are fetched first, in parallel; parity shards are fetched
// only as needed. Any k shards whose stripe metadata agree rebuild the chunk, which is
// checked against the CRC32C recorded in every shard; when a combination does not match,
// other combinations are tried.
//
// Example:
//
//	st, err := coord.New(coord.Config{
//		Principal: "node-1",
//		Map:       func() *placement.Map { return current.Load() },
//		Shards:    func(n placement.Node) chunkstore.ShardStore { return peers.Shards(n) },
//	})
package coord
