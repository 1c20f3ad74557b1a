// Package repair keeps every placement group at k+m healthy shards: backfill after a
// map change (nodes out, drained or added), reconstruction of lost shards, and scrub.
//
// Each chunk node runs one Worker. A Worker leads the PGs whose first active node in
// placement order is its own node, so the work is spread over the cluster with no
// central coordinator. A pass reads every reachable node's PG change marks
// (chunkstore.PGLister.PGVersions), lists what every node holds of each led PG whose
// marks moved since a listing last found it whole, whose placement changed, or that was
// listed longer than VerifyInterval ago (a few such per pass, oldest first), one PG
// listing per node and PG (EnumeratePG; a store that cannot list by PG is listed whole
// with EnumerateShards), and asks each owner once more, in one batch per PG, for
// the shards its listing lacked (a backup writing during the listing reaches the nodes
// listed first only after they were listed). Then, riskiest PGs first (fewest healthy
// shards), it puts every shard that its desired owner still lacks: copied from a node
// that holds it elsewhere or rebuilt from any k shards of the stripe (the rebuilt chunk
// is checked against its CRC32C before any shard is written). A copy on a node that no longer owns the
// position is deleted only after the owner holds the shard durably. A deep pass also
// reads every shard, rebuilds the chunk, checks its CRC and replaces any shard that is
// missing, damaged or differs from the re-encoded stripe; a stripe with fewer than k
// good shards is reported by name. A deep pass lists and reads every led PG, changed or
// not: the scrub still reads every shard, every DeepInterval. So the cost of a pass that
// is not deep grows with the PGs that changed, not with the shards stored.
//
// A stripe short of k shards for a minute since this worker first saw it so (the
// sighting kept across passes with a node down or the PG led elsewhere), and still
// short on a pass that lists every node (none down), is what a put that failed
// part-way left behind: an acknowledged put stores k+1 shards or more. Nothing can
// read it, and it would keep its PG unreadable until garbage collection swept it, so
// the pass asks every node once more and deletes what is left (a later put of the
// chunk writes a whole stripe).
//
// Passes are idempotent: a pass interrupted by a restart is simply run again, and the
// work already done shows up as shards in place. Writes are throttled (bytes/s) and at
// most ConcurrentPGs PGs are worked on at once.
package repair
