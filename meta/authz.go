package meta

import (
	"context"
	"fmt"
	"slices"

	"github.com/cofferhq/coffer/placement"
)

// Role is what a principal may do. Certificates carry it (transport.Role); the meta
// servers map each request's certificate to a Principal and check it here.
type Role string

// Built-in roles.
const (
	// RoleAdmin may do everything, including deleting snapshots, bypassing governance
	// locks (with a reason), setting legal holds and reading the audit log. No role may
	// delete or shorten a compliance lock before its time.
	RoleAdmin Role = "admin"
	// RoleBackupAgent is append-only: create vaults, commit snapshots and lock (never
	// unlock or shorten) snapshots in its vaults, read their metadata.
	RoleBackupAgent Role = "backup-agent"
	// RoleRestoreOperator reads the metadata of its vaults and changes nothing.
	RoleRestoreOperator Role = "restore-operator"
	// RoleNode is a cluster node: it reads metadata and sets the cluster map.
	RoleNode Role = "node"
	// RoleSystem is the meta server itself (calls with no principal in their context).
	RoleSystem Role = "system"
	// RoleReplication is another cluster's replication job: it reads the vault records
	// (with key wraps) and snapshots of the vaults its certificate names, and obtains
	// grants to read their sealed chunks. An empty scope reads nothing.
	RoleReplication Role = "replication"
)

// Action is one permission.
type Action string

// Actions checked by Principal.Can.
const (
	ActRead        Action = "read"         // vaults, snapshots, cluster map
	ActCreateVault Action = "create-vault" // create a vault
	ActCommit      Action = "commit"       // commit a snapshot
	ActLock        Action = "lock"         // set or extend a retention lock
	ActDelete      Action = "delete"       // delete snapshots, forget
	ActBypass      Action = "bypass-governance"
	ActHold        Action = "legal-hold" // set or clear a legal hold
	ActAudit       Action = "audit"      // read the audit log
	ActClusterMap  Action = "cluster-map"
	ActPolicy      Action = "set-policy" // change a vault's retention policy
	ActGC          Action = "gc"         // run garbage collection
)

// Principal is the authenticated identity behind a request.
type Principal struct {
	Name string `cbor:"name" json:"name"`
	Role Role   `cbor:"role" json:"role"`
	// Vaults limits a backup agent or restore operator to these vaults; empty means all.
	Vaults []VaultID `cbor:"vaults,omitempty" json:"vaults,omitempty"`
}

// SystemPrincipal is the identity of calls made inside a meta server (no principal in
// the context): the leader's own jobs and in-process callers.
func SystemPrincipal() Principal { return Principal{Name: "system", Role: RoleSystem} }

func (p Principal) String() string { return fmt.Sprintf("%s %q", p.Role, p.Name) }

// inScope reports whether vault is one of p's vaults ("" = no particular vault).
func (p Principal) inScope(vault VaultID) bool {
	return len(p.Vaults) == 0 || vault == "" || slices.Contains(p.Vaults, vault)
}

// Can reports whether p may perform act on vault ("" for cluster-wide actions).
func (p Principal) Can(act Action, vault VaultID) bool {
	switch p.Role {
	case RoleSystem, RoleAdmin:
		return true
	case RoleBackupAgent:
		switch act {
		case ActRead, ActCreateVault, ActCommit, ActLock, ActKeys:
			return p.inScope(vault)
		}
	case RoleRestoreOperator:
		return act == ActRead && p.inScope(vault)
	case RoleNode:
		return act == ActRead || act == ActClusterMap
	case RoleReplication:
		return act == ActRead && vault != "" && slices.Contains(p.Vaults, vault)
	}
	return false
}

// Authorize returns nil when p may perform act on vault, else an error wrapping
// ErrDenied that names the principal, the action and the vault.
func (p Principal) Authorize(act Action, vault VaultID) error {
	if p.Can(act, vault) {
		return nil
	}
	if vault != "" {
		return fmt.Errorf("%w: %s may not %s in vault %s", ErrDenied, p, act, vault)
	}
	return fmt.Errorf("%w: %s may not %s", ErrDenied, p, act)
}

type principalKey struct{}

// WithPrincipal returns ctx carrying p, the identity the meta server authorizes.
func WithPrincipal(ctx context.Context, p Principal) context.Context {
	return context.WithValue(ctx, principalKey{}, p)
}

// PrincipalFrom returns the principal in ctx, or SystemPrincipal when there is none.
func PrincipalFrom(ctx context.Context) Principal {
	if p, ok := ctx.Value(principalKey{}).(Principal); ok {
		return p
	}
	return SystemPrincipal()
}

type totpKey struct{}

// WithTOTP returns ctx carrying code, the caller's current TOTP code: the requester of an
// operation the two-person rule gates gives it along with the request (the leader checks
// it against the requester's MFA enrollment before it queues the request). Clients send
// it with each request made with ctx; meta servers put the code a request carried here.
func WithTOTP(ctx context.Context, code string) context.Context {
	return context.WithValue(ctx, totpKey{}, code)
}

// TOTPFrom returns the TOTP code in ctx, or "" when there is none.
func TOTPFrom(ctx context.Context) string {
	code, _ := ctx.Value(totpKey{}).(string)
	return code
}

// SeesTopology reports whether p may read the cluster's topology (the full cluster map,
// Raft and PG state): admins, nodes and the meta server itself.
func (p Principal) SeesTopology() bool {
	return p.Role == RoleAdmin || p.Role == RoleNode || p.Role == RoleSystem
}

// SeesKeyWraps reports whether p may receive vault key wraps (with the vault records it
// may read): admins, the meta server itself, and the agents, restore operators and
// replication jobs of the vault (a replica carries the wraps, so that the vault can be
// restored at the second site). Nodes never do: a stolen node key must not allow offline passphrase guessing.
func (p Principal) SeesKeyWraps() bool {
	switch p.Role {
	case RoleAdmin, RoleSystem, RoleBackupAgent, RoleRestoreOperator, RoleReplication:
		return true
	}
	return false
}

// VaultFor returns v as p may see it: without its key wraps unless p.SeesKeyWraps.
func VaultFor(p Principal, v Vault) Vault {
	if !p.SeesKeyWraps() {
		v.KeyWraps = nil
		v.Keys = nil
	}
	return v
}

// MapFor returns m as p may see it: the whole map for principals that see the topology;
// for agents and restore operators only the entry points a client needs, the epoch and
// the addresses of the chunk nodes that coordinate requests (not down, out or
// decommissioned), with no node IDs, failure domains, weights, profile or PG count.
func MapFor(p Principal, m placement.Map) placement.Map {
	if p.SeesTopology() {
		return m
	}
	out := placement.Map{Epoch: m.Epoch}
	for _, n := range m.Nodes {
		switch n.State {
		case placement.StateDown, placement.StateOut, placement.StateDecommissioned:
			continue
		}
		if n.Addr != "" {
			out.Nodes = append(out.Nodes, placement.Node{Addr: n.Addr, State: n.State})
		}
	}
	return out
}
