package meta

import (
	"context"

	"github.com/cofferhq/coffer/placement"
)

// Node actions accepted by ClusterAdmin.NodeAction.
const (
	NodeDrain        = "drain"
	NodeUndrain      = "undrain"
	NodeDecommission = "decommission"
	NodeActivate     = "activate"
	// NodeAdd puts a chunk node that runs and gossips, but is not in the map yet, in the
	// map as joining (its address and failure domain as it advertises them).
	NodeAdd = "add"
	// RebalanceApply activates every joining node in one map change (Node is empty).
	RebalanceApply = "rebalance-apply"
	// RebalanceCancel returns the nodes of the last RebalanceApply that are still
	// active to joining (Node is empty); data moves back to where it was.
	RebalanceCancel = "rebalance-cancel"
)

// NodeActionRequest asks to change one node's lifecycle state.
type NodeActionRequest struct {
	Node   placement.NodeID `cbor:"node" json:"node"`
	Action string           `cbor:"action" json:"action"` // NodeDrain, ...
	Reason string           `cbor:"reason,omitempty" json:"reason,omitempty"`
	// Weight is the relative capacity of a node being added (NodeAdd); 0 means 1.
	Weight float64 `cbor:"weight,omitempty" json:"weight,omitempty"`
}

// ClusterAdmin is the cluster-administration side of the metadata service. Every
// action, accepted or refused, is recorded in the audit log (RetentionService.AuditLog).
type ClusterAdmin interface {
	// NodeAction applies a lifecycle action and returns the new map. Admin principals
	// only (ErrDenied). Refusals wrap ErrInvalid and say why (a decommission names the
	// PGs that still depend on the node). ErrNotFound for an unknown node.
	NodeAction(ctx context.Context, req NodeActionRequest) (placement.Map, error)
	// PGHealth returns the latest health report of every PG known to the chunk nodes,
	// sorted by PG.
	PGHealth(ctx context.Context) ([]placement.PGHealth, error)
}
