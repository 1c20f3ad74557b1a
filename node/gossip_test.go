package node_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/cofferhq/coffer/node"
	"github.com/cofferhq/coffer/node/nodetest"
)

// TestGossipSeesStoppedNodes: a gracefully stopped node and a killed one are reported as
// gone (left or dead) by every other node's gossip view within seconds, so reads stop
// trying them. memberlist does not reliably tell the two apart, so either state counts.
func TestGossipSeesStoppedNodes(t *testing.T) {
	c := nodetest.New(t, nodetest.Opts{})
	if err := c.Stop("chunk-2"); err != nil {
		t.Fatal(err)
	}
	if err := c.Kill("chunk-3"); err != nil {
		t.Fatal(err)
	}
	ctx := ctxT(t, 60*time.Second)
	for _, n := range c.Nodes {
		if n.ID() == "chunk-2" || n.ID() == "chunk-3" {
			continue
		}
		waitMember(ctx, t, n, "chunk-2")
		waitMember(ctx, t, n, "chunk-3")
	}
}

// waitMember polls n's gossip view until member is left or dead, failing when ctx ends.
func waitMember(ctx context.Context, t *testing.T, n *node.Node, member string) {
	t.Helper()
	waitMemberState(ctx, t, n, member, "left", "dead")
}

// waitMemberState polls n's gossip view until member is in one of states, failing when
// ctx ends.
func waitMemberState(ctx context.Context, t *testing.T, n *node.Node, member string, states ...string) {
	t.Helper()
	for {
		st, err := n.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		state := ""
		for _, m := range st.Members {
			if m.Name == member {
				state = m.State
			}
		}
		if slices.Contains(states, state) {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s sees %s as %q, want one of %q: %v", n.ID(), member, state, states, st.Members)
		case <-time.After(50 * time.Millisecond):
		}
	}
}
