// Package authz is the cluster's authorization table: for every RPC method (and every
// node-to-node stream protocol), what each role of caller may do with it. Each RPC package
// declares the rules of its own methods; the node composes them into one Table and checks
// every request against it before the request's body is read. Handlers keep their own
// checks (defence in depth) and the stateful conditions (vault scope, restore grants, the
// current Raft configuration, locks); the table decides at the level of roles only.
//
// A method the table does not know is refused. docs/security.md prints the composed table
// (Table.Markdown); a test keeps the two equal.
package authz

import (
	"fmt"
	"slices"
	"strings"

	"github.com/cofferhq/coffer/transport"
)

// Role is a caller's role as the table sees it: the certificate role, or Anonymous for a
// caller without a certificate (an enrolling host).
type Role string

// The roles of the table, one column each.
const (
	Agent     Role = "agent"
	Restore   Role = "restore-operator"
	Admin     Role = "admin"
	Node      Role = "node" // a chunk node
	Meta      Role = "meta" // a meta server
	Anonymous Role = "anonymous"
	// Replication is another cluster's replication job: reads of its vaults only.
	Replication Role = "replication"
)

// Roles returns every role of the table, in column order.
func Roles() []Role { return []Role{Agent, Restore, Admin, Node, Meta, Anonymous, Replication} }

// RoleOf returns the table role of an authenticated or anonymous peer, and false for a
// certificate role the table does not know (such a peer is refused everything).
func RoleOf(p transport.Peer) (Role, bool) {
	if p.Anonymous() {
		return Anonymous, true
	}
	switch p.Role {
	case transport.RoleAgent:
		return Agent, true
	case transport.RoleRestore:
		return Restore, true
	case transport.RoleAdmin:
		return Admin, true
	case transport.RoleNode:
		return Node, true
	case transport.RoleMeta:
		return Meta, true
	case transport.RoleReplication:
		return Replication, true
	}
	return "", false
}

// Decision is a cell's verdict. The zero value refuses.
type Decision uint8

// Decisions.
const (
	Refused Decision = iota
	Allowed
	// Conditional lets the request through to its handler, which checks the cell's
	// condition.
	Conditional
)

func (d Decision) String() string {
	switch d {
	case Allowed:
		return "allowed"
	case Conditional:
		return "conditional"
	}
	return "refused"
}

// Cell is one method × role entry. The zero Cell refuses.
type Cell struct {
	Decision Decision
	// Condition says, in a few words, what the handler checks (Conditional only).
	Condition string
}

// Allow is an unconditional allowed cell. Immutable: a value copied into rules, never
// modified.
var Allow = Cell{Decision: Allowed}

// If returns a cell allowed when condition holds; the handler checks it.
func If(condition string) Cell { return Cell{Decision: Conditional, Condition: condition} }

// String is the cell as docs/security.md shows it.
func (c Cell) String() string {
	switch c.Decision {
	case Allowed:
		return "allowed"
	case Conditional:
		return "conditional: " + c.Condition
	}
	return "refused"
}

// Rule is the row of one method. Cells left zero refuse.
type Rule struct {
	// Method is the RPC method ("meta.GetVault") or, for a stream protocol,
	// StreamMethod(alpn).
	Method string
	// Destructive marks a method that can destroy or weaken protection of data or
	// credentials: every refusal of it, by the table or by its handler for the caller's
	// role, is recorded in the audit log.
	Destructive bool
	// Audit, when set, names the action under which the audit log records the method's
	// refusals (by the table here, or by its handler), for a method whose every use is
	// audited although it destroys nothing (vault creation, scrub starts). Refusals of a
	// destructive method without Audit are recorded under the method's name.
	Audit string
	// Doc is a short description of the method for the docs.
	Doc string

	Agent, Restore, Admin, Node, Meta, Anonymous Cell
	// Replication is the cell of another cluster's replication job (refused unless set).
	Replication Cell
}

// Audited reports whether the rule's refusals are recorded in the audit log: a
// destructive method, or one with an Audit action.
func (r Rule) Audited() bool { return r.Destructive || r.Audit != "" }

// AuditAction is the action the audit log records the rule's refusals under: Audit when
// set, else the method.
func (r Rule) AuditAction() string {
	if r.Audit != "" {
		return r.Audit
	}
	return r.Method
}

// Cell returns the rule's cell for role r (a refusing cell for an unknown role).
func (r Rule) Cell(role Role) Cell {
	switch role {
	case Agent:
		return r.Agent
	case Restore:
		return r.Restore
	case Admin:
		return r.Admin
	case Node:
		return r.Node
	case Meta:
		return r.Meta
	case Anonymous:
		return r.Anonymous
	case Replication:
		return r.Replication
	}
	return Cell{}
}

// StreamMethod is the name a stream protocol is checked under: the quic endpoint asks
// its PeerCheck about "stream:" + alpn before handing over a stream of that protocol.
func StreamMethod(alpn string) string { return "stream:" + alpn }

// Table is a composed, immutable authorization table. Safe for concurrent use.
type Table struct {
	rules map[string]Rule
	order []string // methods, sorted
}

// NewTable composes the rule sets of several packages. A method declared twice, an empty
// method name or a conditional cell without its condition is an error.
func NewTable(sets ...[]Rule) (*Table, error) {
	t := &Table{rules: map[string]Rule{}}
	for _, set := range sets {
		for _, r := range set {
			if r.Method == "" {
				return nil, fmt.Errorf("authz: a rule without a method")
			}
			if _, dup := t.rules[r.Method]; dup {
				return nil, fmt.Errorf("authz: method %q declared twice", r.Method)
			}
			for _, role := range Roles() {
				c := r.Cell(role)
				if c.Decision == Conditional && strings.TrimSpace(c.Condition) == "" {
					return nil, fmt.Errorf("authz: %s × %s: conditional cell without a condition", r.Method, role)
				}
				if c.Decision != Conditional && c.Condition != "" {
					return nil, fmt.Errorf("authz: %s × %s: a condition on a %s cell", r.Method, role, c.Decision)
				}
			}
			t.rules[r.Method] = r
			t.order = append(t.order, r.Method)
		}
	}
	slices.Sort(t.order)
	return t, nil
}

// MustTable is NewTable for the composition root, where a bad table is a programming
// error: it panics on error.
func MustTable(sets ...[]Rule) *Table {
	t, err := NewTable(sets...)
	if err != nil {
		panic(err)
	}
	return t
}

// Rule returns the rule of method.
func (t *Table) Rule(method string) (Rule, bool) {
	r, ok := t.rules[method]
	return r, ok
}

// Rules returns every rule, sorted by method.
func (t *Table) Rules() []Rule {
	out := make([]Rule, 0, len(t.order))
	for _, m := range t.order {
		out = append(out, t.rules[m])
	}
	return out
}

// Anonymous returns the methods a caller without a certificate may call (allowed or
// conditional), sorted: what an endpoint passes on to its handler from such callers.
func (t *Table) Anonymous() []string {
	var out []string
	for _, m := range t.order {
		if t.rules[m].Anonymous.Decision != Refused {
			out = append(out, m)
		}
	}
	return out
}

// Check decides whether peer may call method at the role level. It returns the method's
// rule (the zero Rule for an unknown method) and nil when the request may go on to its
// handler (which checks the cell's condition, if any); otherwise a *transport.Error:
// UnknownMethod for a method the table does not know, Unauthenticated for an anonymous
// caller, PermissionDenied for everyone else. Messages start with "authz: ".
func (t *Table) Check(peer transport.Peer, method string) (Rule, error) {
	r, ok := t.rules[method]
	if !ok {
		return Rule{}, transport.Errorf(transport.UnknownMethod, "authz: %s: unknown method (not in the authorization table)", method)
	}
	role, known := RoleOf(peer)
	if !known {
		return r, transport.Errorf(transport.PermissionDenied, "authz: %s: %q has certificate role %q, which may call nothing", method, peer.Principal, peer.Role)
	}
	if r.Cell(role).Decision != Refused {
		return r, nil
	}
	if role == Anonymous {
		return r, transport.Errorf(transport.Unauthenticated, "authz: %s: a caller without a certificate may not call it", method)
	}
	return r, transport.Errorf(transport.PermissionDenied, "authz: %s: %s %q may not call it (%s)", method, role, peer.Principal, t.allowedRoles(r))
}

// allowedRoles names the roles that may call r's method, for refusal messages.
func (t *Table) allowedRoles(r Rule) string {
	var who []string
	for _, role := range Roles() {
		if r.Cell(role).Decision != Refused {
			who = append(who, string(role))
		}
	}
	if len(who) == 0 {
		return "no role may"
	}
	return strings.Join(who, ", ") + " only"
}

// Markdown renders the table as docs/security.md shows it: one row per method, one
// column per role, "(D)" after a destructive method's name and "(A)" after that of
// another method whose refusals are audited.
func (t *Table) Markdown() string {
	var b strings.Builder
	b.WriteString("| Method |")
	for _, role := range Roles() {
		fmt.Fprintf(&b, " %s |", role)
	}
	b.WriteString("\n|---|")
	for range Roles() {
		b.WriteString("---|")
	}
	b.WriteString("\n")
	for _, r := range t.Rules() {
		name := "`" + r.Method + "`"
		switch {
		case r.Destructive:
			name += " (D)"
		case r.Audited():
			name += " (A)"
		}
		fmt.Fprintf(&b, "| %s |", name)
		for _, role := range Roles() {
			fmt.Fprintf(&b, " %s |", escape(r.Cell(role).String()))
		}
		b.WriteString("\n")
	}
	return b.String()
}

// Descriptions renders one line per method with its description, for the docs.
func (t *Table) Descriptions() string {
	var b strings.Builder
	for _, r := range t.Rules() {
		fmt.Fprintf(&b, "- `%s`: %s\n", r.Method, escape(r.Doc))
	}
	return b.String()
}

func escape(s string) string { return strings.ReplaceAll(s, "|", `\|`) }
