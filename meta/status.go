package meta

import (
	"github.com/cofferhq/coffer/chunkstore"
	"github.com/cofferhq/coffer/chunkstore/repair"
)

// NodeStatus is what one node reports about itself (RPC "node.Status"), for
// `coffer admin status`.
type NodeStatus struct {
	ID      string                `cbor:"id" json:"id"`
	Addr    string                `cbor:"addr" json:"addr"`
	Roles   []string              `cbor:"roles" json:"roles"`
	Domain  string                `cbor:"domain" json:"domain"`
	Shards  chunkstore.ShardStats `cbor:"shards" json:"shards"`
	Members []Member              `cbor:"members" json:"members"` // gossip view
	Raft    *RaftStatus           `cbor:"raft,omitempty" json:"raft,omitempty"`
	Repair  *repair.Status        `cbor:"repair,omitempty" json:"repair,omitempty"` // chunk nodes
}

// Member is one gossip member as seen by the reporting node.
type Member struct {
	Name  string `cbor:"name" json:"name"`
	Addr  string `cbor:"addr" json:"addr"`
	State string `cbor:"state" json:"state"` // alive, suspect, dead, left
}
