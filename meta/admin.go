package meta

import (
	"context"
	"time"

	"github.com/cofferhq/coffer/placement"
)

// AuditEntry is one recorded administrative or automatic action, kept in Raft. The FSM
// sets Seq (the log index) and Time (the cluster clock).
type AuditEntry struct {
	Seq       uint64    `cbor:"seq" json:"seq"`
	Time      time.Time `cbor:"time" json:"time"`
	Principal string    `cbor:"principal" json:"principal"` // certificate CN, or "system"
	Action    string    `cbor:"action" json:"action"`       // e.g. "node.drain", "node.down"
	Target    string    `cbor:"target" json:"target"`       // what it acted on (node ID, ...)
	Reason    string    `cbor:"reason,omitempty" json:"reason,omitempty"`
	Outcome   string    `cbor:"outcome" json:"outcome"` // "ok", or "refused: <why>"
}

// Node actions accepted by ClusterAdmin.NodeAction.
const (
	NodeDrain        = "drain"
	NodeUndrain      = "undrain"
	NodeDecommission = "decommission"
	NodeActivate     = "activate"
	// RebalanceApply activates every joining node in one map change (Node is empty).
	RebalanceApply = "rebalance-apply"
	// RebalanceCancel returns the nodes of the last RebalanceApply that are still
	// active to joining (Node is empty); data moves back to where it was.
	RebalanceCancel = "rebalance-cancel"
)

// NodeActionRequest asks to change one node's lifecycle state.
type NodeActionRequest struct {
	Node      placement.NodeID `cbor:"node" json:"node"`
	Action    string           `cbor:"action" json:"action"` // NodeDrain, ...
	Reason    string           `cbor:"reason,omitempty" json:"reason,omitempty"`
	Principal string           `cbor:"principal,omitempty" json:"principal,omitempty"` // set by the RPC layer
}

// ClusterAdmin is the cluster-administration side of the metadata service. Every
// action, accepted or refused, is recorded in the audit list.
type ClusterAdmin interface {
	// NodeAction applies a lifecycle action and returns the new map. Refusals wrap
	// ErrInvalid and say why (a decommission names the PGs that still depend on the
	// node). ErrNotFound for an unknown node.
	NodeAction(ctx context.Context, req NodeActionRequest) (placement.Map, error)
	// AuditLog returns the newest limit entries (all when limit ≤ 0), oldest first.
	AuditLog(ctx context.Context, limit int) ([]AuditEntry, error)
	// PGHealth returns the latest health report of every PG known to the chunk nodes,
	// sorted by PG.
	PGHealth(ctx context.Context) ([]placement.PGHealth, error)
}
