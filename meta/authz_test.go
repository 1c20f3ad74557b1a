package meta

import (
	"testing"

	"github.com/cofferhq/coffer/placement"
)

func TestMapForAndVaultFor(t *testing.T) {
	m := placement.Map{Epoch: 7, PGCount: 64, Profile: placement.DefaultProfile, Nodes: []placement.Node{
		{ID: "a", Addr: "10.0.0.1:1", Domain: "r1", Weight: 2, State: placement.StateActive},
		{ID: "b", Addr: "10.0.0.2:1", Domain: "r2", State: placement.StateDown},
		{ID: "c", Addr: "10.0.0.3:1", Domain: "r3", State: placement.StateDraining},
		{ID: "d", Addr: "10.0.0.4:1", Domain: "r4", State: placement.StateDecommissioned},
	}}
	v := Vault{ID: "v", KeyWraps: [][]byte{{1, 2, 3}}}
	for _, p := range []Principal{
		{Name: "a", Role: RoleAdmin}, {Name: "n", Role: RoleNode}, SystemPrincipal(),
		{Name: "w", Role: RoleBackupAgent}, {Name: "r", Role: RoleRestoreOperator}, {Name: "x"},
	} {
		got := MapFor(p, m)
		if p.SeesTopology() {
			if got.PGCount != 64 || len(got.Nodes) != 4 || got.Nodes[0].Domain != "r1" {
				t.Errorf("%s: map %+v, want the whole map", p, got)
			}
		} else {
			want := []placement.Node{{Addr: "10.0.0.1:1", State: placement.StateActive}, {Addr: "10.0.0.3:1", State: placement.StateDraining}}
			if got.Epoch != 7 || got.PGCount != 0 || got.Profile != (placement.Profile{}) || len(got.Nodes) != len(want) ||
				got.Nodes[0] != want[0] || got.Nodes[1] != want[1] {
				t.Errorf("%s: map %+v, want epoch 7 and entry points %+v only", p, got, want)
			}
		}
		wraps := len(VaultFor(p, v).KeyWraps)
		if want := p.Role != RoleNode && p.Role != ""; (wraps > 0) != want {
			t.Errorf("%s: vault with %d key wraps, want wraps: %v", p, wraps, want)
		}
	}
	if len(v.KeyWraps) != 1 || len(m.Nodes) != 4 {
		t.Fatal("MapFor or VaultFor changed its argument")
	}
}
