package chunkrpc

import "github.com/cofferhq/coffer/transport/authz"

// AuthzRules is the authorization table of the shard.*, chunk.* and gc.* methods (see
// transport/authz). Server keeps its own checks: shard traffic for node roles only,
// restore operators through grants only, GC orders checked against the meta leader's GC
// state.
func AuthzRules() []authz.Rule {
	shard := func(method, doc string, destructive bool, node authz.Cell) authz.Rule {
		return authz.Rule{Method: method, Doc: doc, Destructive: destructive, Node: node, Meta: node}
	}
	leaderOrder := authz.If("from the current meta leader, for the current GC epoch")
	grant := authz.If("a restore grant for its principal and vault covering every chunk")
	// A replication job reads sealed chunks the way a restore operator does: through a
	// grant of a snapshot of a vault its certificate names.
	replGrant := authz.If("a grant for its principal and a vault it names, covering every chunk")
	return []authz.Rule{
		shard(MethodShardPut, "store shards (the coordinator's writes, repair)", false, authz.Allow),
		shard(MethodShardGet, "read one shard", false, authz.Allow),
		shard(MethodShardGetMany, "read shards in one call", false, authz.Allow),
		shard(MethodShardHas, "which shards are stored", false, authz.Allow),
		shard(MethodShardTouch, "mark shards used (commit checks), for GC", false, authz.Allow),
		shard(MethodShardDelete, "delete shards (repair)", true,
			authz.If("stray or damaged copies, or what a failed put left of a stripe short of K shards on every node (repair); never an owned shard of a readable stripe")),
		shard(MethodShardEnumerate, "list stored shards, whole or by PG (repair)", false, authz.Allow),
		shard(MethodShardVersions, "the PG change marks (repair skips unchanged PGs)", false, authz.Allow),
		shard(MethodShardStats, "shard store figures", false, authz.Allow),
		{Method: MethodChunkPut, Doc: "store chunks through a coordinating node",
			Agent: authz.Allow, Admin: authz.Allow},
		{Method: MethodChunkGet, Doc: "read one chunk through a coordinating node",
			Agent: authz.Allow, Restore: grant, Admin: authz.Allow, Replication: replGrant},
		{Method: MethodChunkGetMany, Doc: "read chunks in one call",
			Agent: authz.Allow, Restore: grant, Admin: authz.Allow, Replication: replGrant},
		{Method: MethodChunkHas, Doc: "which chunks are stored (dedup)",
			Agent: authz.Allow, Admin: authz.Allow},
		{Method: MethodGCPrepare, Destructive: true, Doc: "GC phase 1: record the node's cutoff", Meta: leaderOrder},
		{Method: MethodGCCandidates, Doc: "GC: list chunks untouched since the cutoff", Meta: leaderOrder},
		{Method: MethodGCSweep, Destructive: true, Doc: "GC: delete swept chunks", Meta: leaderOrder},
	}
}
