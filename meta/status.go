package meta

import (
	"time"

	"github.com/cofferhq/coffer/chunkstore/nodestat"
)

// NodeStatus is what one node reports about itself (RPC "node.Status"), for
// `coffer admin status`. Its chunk-node figures are chunkstore/nodestat's (a leaf).
type NodeStatus struct {
	ID      string           `cbor:"id" json:"id"`
	Addr    string           `cbor:"addr" json:"addr"`
	Roles   []string         `cbor:"roles" json:"roles"`
	Domain  string           `cbor:"domain" json:"domain"`
	Shards  nodestat.Shards  `cbor:"shards" json:"shards"`
	Members []Member         `cbor:"members" json:"members"` // gossip view
	Raft    *RaftStatus      `cbor:"raft,omitempty" json:"raft,omitempty"`
	Repair  *nodestat.Repair `cbor:"repair,omitempty" json:"repair,omitempty"` // chunk nodes
	// CertNotAfter is when the node's own certificate expires (`cofferd renew` before).
	CertNotAfter time.Time `cbor:"cert_not_after,omitempty" json:"cert_not_after,omitzero"`
}

// Member is one gossip member as seen by the reporting node.
type Member struct {
	Name  string `cbor:"name" json:"name"`
	Addr  string `cbor:"addr" json:"addr"`
	State string `cbor:"state" json:"state"` // alive, suspect, dead, left
	// RPCAddr, Roles and Domain are what the member advertises: its QUIC address, its
	// node roles and its failure domain (empty when it advertises nothing).
	RPCAddr string   `cbor:"rpc_addr,omitempty" json:"rpc_addr,omitempty"`
	Roles   []string `cbor:"roles,omitempty" json:"roles,omitempty"`
	Domain  string   `cbor:"domain,omitempty" json:"domain,omitempty"`
}
