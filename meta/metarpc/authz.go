package metarpc

import "github.com/cofferhq/coffer/transport/authz"

// AuthzRules is the authorization table of every meta.* method (see transport/authz).
// The handlers (metarpc.Server and the meta service behind it) keep their own checks and
// check the conditions.
func AuthzRules() []authz.Rule {
	// fwd is a meta server's right on a request it forwards from a follower to the
	// leader: the leader authorizes the original caller, named in the request.
	fwd := authz.If("forwarding a caller's request (checked as that caller)")
	// ownVaults is an agent's or restore operator's right to read its vaults.
	ownVaults := authz.If("vaults in its certificate's scope")
	return []authz.Rule{
		{Method: MethodCreateVault, Audit: "vault create", Doc: "create a vault (init)",
			Agent: authz.If("a vault in its certificate's scope"), Admin: authz.Allow, Meta: fwd},
		{Method: MethodGetVault, Doc: "read one vault record, with its key wraps",
			Agent: ownVaults, Restore: ownVaults, Admin: authz.Allow,
			Node: authz.If("without key wraps"), Meta: authz.If("forwarding (as the caller); its own reads without key wraps")},
		{Method: MethodListVaults, Doc: "list the vault records the caller may read",
			Agent: authz.If("only the vaults in its scope"), Restore: authz.If("only the vaults in its scope"), Admin: authz.Allow,
			Node: authz.If("without key wraps"), Meta: authz.If("forwarding (as the caller); its own reads without key wraps")},
		{Method: MethodCommitSnapshot, Doc: "commit a snapshot whose chunks are all stored",
			Agent: authz.If("its vaults; locks only within the vault's limit"), Admin: authz.Allow, Meta: fwd},
		{Method: MethodListSnapshots, Doc: "list a vault's snapshots",
			Agent: ownVaults, Restore: ownVaults, Admin: authz.Allow, Meta: fwd},
		{Method: MethodGetSnapshot, Doc: "read one snapshot",
			Agent: ownVaults, Restore: ownVaults, Admin: authz.Allow, Meta: fwd},
		{Method: MethodClusterMap, Doc: "read the cluster map",
			Agent:   authz.If("entry points only: the addresses of usable chunk nodes"),
			Restore: authz.If("entry points only: the addresses of usable chunk nodes"),
			Admin:   authz.Allow, Node: authz.Allow, Meta: authz.Allow},
		{Method: MethodSetClusterMap, Destructive: true, Doc: "replace the cluster map (epoch + 1)",
			Meta: authz.If("a server in the current Raft configuration")},
		{Method: MethodRaftStatus, Doc: "the meta group's Raft view (admin status)",
			Admin: authz.Allow, Node: authz.Allow, Meta: authz.Allow},
		{Method: MethodDeleteSnapshots, Destructive: true, Doc: "delete snapshots (locks and holds still hold)",
			Admin: authz.If("no compliance lock or hold; governance only with a bypass reason"), Meta: fwd},
		{Method: MethodForget, Destructive: true, Doc: "delete snapshots by a retention policy",
			Agent: authz.If("dry run in its vaults"), Restore: authz.If("dry run in its vaults"),
			Admin: authz.If("no compliance lock or hold; governance only with a bypass reason"), Meta: fwd},
		{Method: MethodSetLock, Destructive: true, Doc: "set, extend or (governance, with a bypass) shorten a lock",
			Agent: authz.If("set or extend only, its vaults, within the vault's lock limit"),
			Admin: authz.If("compliance locks never shortened"), Meta: fwd},
		{Method: MethodSetHold, Destructive: true, Doc: "set or clear a legal hold",
			Admin: authz.Allow, Meta: fwd},
		{Method: MethodAuditLog, Doc: "read the audit log",
			Admin: authz.Allow, Meta: fwd},
		{Method: MethodRecordRefusal, Doc: "record a request a node refused in the audit log",
			Node: authz.Allow, Meta: authz.Allow},
		{Method: MethodRecordNodeAction, Doc: "record an action a node performed at a principal's request (a scrub start) in the audit log",
			Node: authz.Allow, Meta: authz.Allow},
		{Method: MethodDeleteVault, Destructive: true, Doc: "soft-delete a vault (purged after its recovery window)",
			Admin: authz.If("no locked or held snapshot"), Meta: fwd},
		{Method: MethodUndeleteVault, Doc: "undo a vault's soft delete within its window",
			Admin: authz.Allow, Meta: fwd},
		{Method: MethodSetVaultPolicy, Destructive: true, Doc: "change a vault's retention policy and lock limit",
			Admin: authz.Allow, Meta: fwd},
		{Method: MethodIssueGrant, Doc: "issue a restore grant for one snapshot",
			Agent: ownVaults, Restore: ownVaults, Admin: authz.Allow, Meta: fwd},
		{Method: MethodNodeAction, Destructive: true, Doc: "drain, undrain, decommission or activate a chunk node",
			Admin: authz.Allow, Meta: fwd},
		{Method: MethodPGHealth, Doc: "the chunk nodes' PG health reports (admin pgs)",
			Admin: authz.Allow, Node: authz.Allow, Meta: authz.Allow},
		{Method: MethodGCRun, Destructive: true, Doc: "run a garbage collection now",
			Admin: authz.Allow, Meta: fwd},
		{Method: MethodGCStatus, Doc: "the garbage-collection state (chunk nodes check GC orders by it)",
			Admin: authz.Allow, Node: authz.Allow, Meta: authz.Allow},
		{Method: MethodCreateEnrollToken, Destructive: true, Doc: "mint a one-time enrollment token",
			Admin: authz.Allow, Meta: fwd},
		{Method: MethodEnroll, Doc: "exchange an enrollment token and a CSR for a certificate",
			Meta:      authz.If("forwarding an enrollment from a follower"),
			Anonymous: authz.If("on meta servers; the one-time token is the credential")},
		{Method: MethodRevokeCert, Destructive: true, Doc: "revoke a certificate by serial or principal",
			Admin: authz.Allow, Meta: fwd},
		{Method: MethodListEnrollTokens, Doc: "list enrollment tokens (never the secrets)",
			Admin: authz.Allow, Meta: fwd},
		{Method: MethodRevokeEnrollToken, Destructive: true, Doc: "revoke an unused enrollment token",
			Admin: authz.Allow, Meta: fwd},
		{Method: MethodSecurityState, Doc: "the revocation list and the cluster time",
			Admin: authz.Allow, Node: authz.Allow, Meta: authz.Allow},
	}
}
