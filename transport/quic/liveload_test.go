package quic_test

import (
	"bytes"
	"context"
	"sync"
	"testing"
	"time"

	"github.com/cofferhq/coffer/transport"
	"github.com/cofferhq/coffer/transport/quic"
)

// TestBulkTransfersAreNotStalls: calls moving large replies over one busy connection
// (probes may queue behind the data) count every byte that arrives as hearing from the
// peer, so none of them is abandoned as stalled however slow the machine.
func TestBulkTransfersAreNotStalls(t *testing.T) {
	c := newCluster(t)
	big := bytes.Repeat([]byte{7}, 8<<20)
	srv := c.server("node-1", transport.HandlerFunc(func(ctx context.Context, _ transport.Peer, method string, body []byte) ([]byte, error) {
		return big, nil
	}))
	cli := c.endpoint(quic.Config{Identity: c.identity("host-a", transport.RoleAgent),
		Liveness: transport.Liveness{After: 500 * time.Millisecond, Timeout: time.Second}})
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	start := time.Now()
	for i := range 8 {
		wg.Go(func() {
			if _, err := cli.Call(ctx, srv.Addr(), "x.Big", big[:1<<20]); err != nil {
				t.Errorf("call %d after %v: %v", i, time.Since(start), err)
			}
		})
	}
	wg.Wait()
	t.Logf("8 calls of 8 MiB replies took %v", time.Since(start))
}
