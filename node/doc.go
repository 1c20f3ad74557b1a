// Package node is the composition root of a running Coffer node: it reads a Config, builds
// every subsystem (QUIC endpoint, shard store, chunk coordinator, Raft meta server,
// gossip membership) with explicit dependencies, serves RPCs, and shuts down cleanly.
//
// A node has the meta role (a Raft voter whose FSM keeps vaults, snapshots and the cluster
// map), the chunk role (a Pebble-indexed segment store of shards, plus coordination of
// chunk writes and reads for any client), or both. The dev cluster (Dev*) runs several
// nodes in one process, each with its own data directory and QUIC port.
//
// Example node configuration (YAML, see deploy/ for more):
//
//	id: chunk-1
//	roles: [chunk]
//	listen: 10.0.0.11:7100
//	gossip: 10.0.0.11:7200
//	join: [10.0.0.1:7200, 10.0.0.2:7200]
//	domain: rack-1
//	data_dir: /var/lib/coffer
//	tls: {ca: /etc/coffer/ca.pem, cert: /etc/coffer/node.pem, key: /etc/coffer/node-key.pem}
//	cluster_secret_file: /etc/coffer/secret
//	meta_servers: [{id: meta-1, addr: 10.0.0.1:7100}, {id: meta-2, addr: 10.0.0.2:7100}, {id: meta-3, addr: 10.0.0.3:7100}]
package node
