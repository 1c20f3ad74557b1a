package transport_test

import (
	"os/exec"
	"strings"
	"testing"
)

// TestOnlyRaftlayerLinksRaft keeps hashicorp/raft out of everything an agent links from
// transport/: only transport/raftlayer may import it.
func TestOnlyRaftlayerLinksRaft(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go list")
	}
	pkgs := []string{
		"github.com/cofferhq/coffer/transport",
		"github.com/cofferhq/coffer/transport/wire",
		"github.com/cofferhq/coffer/transport/pki",
		"github.com/cofferhq/coffer/transport/quic",
	}
	out, err := exec.Command("go", append([]string{"list", "-deps"}, pkgs...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, dep := range strings.Fields(string(out)) {
		if strings.HasPrefix(dep, "github.com/hashicorp/raft") || strings.HasPrefix(dep, "github.com/hashicorp/memberlist") {
			t.Errorf("transport packages used by agents link %s", dep)
		}
	}
}
