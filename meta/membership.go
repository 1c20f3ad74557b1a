package meta

import "context"

// Meta-group membership actions (MetaChange.Action).
const (
	// MetaAdd adds a running meta server that is in no Raft configuration yet: first as
	// a non-voter, then, once it has caught up with the log, as a voter.
	MetaAdd = "add"
	// MetaRemove removes a server (voter or not) from the Raft configuration.
	MetaRemove = "remove"
)

// MetaChange asks for one change of the meta group's Raft configuration.
type MetaChange struct {
	Action string `cbor:"action" json:"action"` // MetaAdd or MetaRemove
	ID     string `cbor:"id" json:"id"`         // the server's node ID (its certificate's name)
	Addr   string `cbor:"addr,omitempty" json:"addr,omitempty"`
	Reason string `cbor:"reason,omitempty" json:"reason,omitempty"`
}

// MembershipAdmin changes the meta group's voters. Every request that reaches the leader
// is recorded in the audit log (actions "meta.add", "meta.remove"), refusals included.
type MembershipAdmin interface {
	// ChangeMeta applies one membership change and returns the group's view after it.
	// Admin principals only (ErrDenied). One change at a time: a second one while a
	// change is in progress (or while a server is still a non-voter) fails with
	// ErrInvalid. A removal that would leave no voter, or leave the voters that answer
	// short of a majority, is refused with ErrInvalid naming the voters. An ID not in
	// the configuration (remove) is ErrNotFound; an ID already a voter (add) ErrExists.
	ChangeMeta(ctx context.Context, req MetaChange) (RaftStatus, error)
	// MetaServers returns the servers of the current Raft configuration (ID and address,
	// voters and non-voters): how agents and nodes learn where the meta group is, beyond
	// the seed addresses they were configured with. Any authenticated caller.
	MetaServers(ctx context.Context) ([]Server, error)
}
