package authz_test

import (
	"strings"
	"testing"

	"github.com/cofferhq/coffer/transport"
	"github.com/cofferhq/coffer/transport/authz"
)

var rules = []authz.Rule{
	{Method: "x.Read", Agent: authz.If("its vaults"), Admin: authz.Allow, Node: authz.Allow, Meta: authz.Allow},
	{Method: "x.Delete", Destructive: true, Admin: authz.Allow},
	{Method: "x.Enroll", Anonymous: authz.If("on meta servers")},
}

func TestCheck(t *testing.T) {
	tab := authz.MustTable(rules)
	peer := func(r transport.Role) transport.Peer { return transport.Peer{Principal: "p", Role: r} }
	cases := []struct {
		peer   transport.Peer
		method string
		want   transport.Code
	}{
		{peer(transport.RoleAgent), "x.Read", transport.OK},
		{peer(transport.RoleRestore), "x.Read", transport.PermissionDenied},
		{peer(transport.RoleNode), "x.Read", transport.OK},
		{peer(transport.RoleNode), "x.Delete", transport.PermissionDenied},
		{peer(transport.RoleMeta), "x.Delete", transport.PermissionDenied},
		{peer(transport.RoleAdmin), "x.Delete", transport.OK},
		{peer(transport.RoleAdmin), "x.Unknown", transport.UnknownMethod},
		{peer("intruder"), "x.Read", transport.PermissionDenied},
		{transport.Peer{}, "x.Read", transport.Unauthenticated},
		{transport.Peer{}, "x.Enroll", transport.OK},
		{peer(transport.RoleAdmin), "x.Enroll", transport.PermissionDenied},
	}
	for _, c := range cases {
		r, err := tab.Check(c.peer, c.method)
		if got := transport.CodeOf(err); got != c.want {
			t.Errorf("%s × %q: %v, want %s", c.method, c.peer.Role, err, c.want)
		}
		if err != nil && !strings.HasPrefix(err.Error(), "authz: ") {
			t.Errorf("%s: message %q lacks the authz: prefix", c.method, err)
		}
		if c.want != transport.UnknownMethod && r.Method != c.method {
			t.Errorf("%s: rule %q returned", c.method, r.Method)
		}
	}
	if got := tab.Anonymous(); len(got) != 1 || got[0] != "x.Enroll" {
		t.Errorf("anonymous methods %v", got)
	}
}

func TestNewTableRefusesBadRules(t *testing.T) {
	for name, set := range map[string][]authz.Rule{
		"duplicate":          {{Method: "a.B"}, {Method: "a.B"}},
		"no method":          {{Admin: authz.Allow}},
		"empty condition":    {{Method: "a.B", Agent: authz.If(" ")}},
		"condition on allow": {{Method: "a.B", Agent: authz.Cell{Decision: authz.Allowed, Condition: "x"}}},
	} {
		if _, err := authz.NewTable(set); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestMarkdown(t *testing.T) {
	md := authz.MustTable(rules).Markdown()
	for _, want := range []string{
		"| Method | agent | restore-operator | admin | node | meta | anonymous | replication |",
		"| `x.Delete` (D) | refused | refused | allowed | refused | refused | refused | refused |",
		"| `x.Read` | conditional: its vaults | refused | allowed | allowed | allowed | refused | refused |",
	} {
		if !strings.Contains(md, want+"\n") {
			t.Errorf("markdown lacks %q:\n%s", want, md)
		}
	}
}
