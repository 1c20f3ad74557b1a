// Package placement maps chunks to nodes: the cluster map, placement groups, weighted
// rendezvous hashing with failure domains, and erasure profiles. It is pure and
// deterministic: no I/O, no clock, no randomness.
package placement

// NodeID names a node uniquely and permanently within a cluster.
type NodeID string

// State is a node's lifecycle state.
type State string

// Node states. Only Active nodes receive new shards; Down nodes keep their PGs but are
// skipped for reads first.
const (
	StateJoining        State = "joining"
	StateActive         State = "active"
	StateDraining       State = "draining"
	StateDecommissioned State = "decommissioned"
	StateDown           State = "down"
	StateOut            State = "out"
)

// Profile is an erasure-coding profile: K data shards plus M parity shards.
type Profile struct {
	K int `cbor:"k" json:"k"`
	M int `cbor:"m" json:"m"`
}

// DefaultProfile is 4+2. Immutable: never assigned; treat it as a constant.
var DefaultProfile = Profile{K: 4, M: 2}

// Node is one chunk-capable node in the map.
type Node struct {
	ID     NodeID  `cbor:"id" json:"id"`
	Addr   string  `cbor:"addr" json:"addr"`     // QUIC RPC address host:port
	Domain string  `cbor:"domain" json:"domain"` // failure domain (host, rack, zone)
	Weight float64 `cbor:"weight" json:"weight"` // relative capacity; 0 means 1
	State  State   `cbor:"state" json:"state"`
	// Since is the cluster time (Unix nanoseconds) of the last state change, 0 when
	// unknown. The meta leader uses it to mark a node out after down_out_interval.
	Since int64 `cbor:"since,omitempty" json:"since,omitempty"`
}

// Map is the cluster map at one epoch. A Map value is never modified after it is
// published: changes produce a new Map with a higher Epoch.
type Map struct {
	Epoch   uint64  `cbor:"epoch" json:"epoch"`
	PGCount uint32  `cbor:"pg_count" json:"pg_count"` // power of two
	Profile Profile `cbor:"profile" json:"profile"`   // default profile for vaults
	Nodes   []Node  `cbor:"nodes" json:"nodes"`       // sorted by ID
}
