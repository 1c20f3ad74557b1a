package quic_test

import (
	"context"
	"testing"

	"github.com/cofferhq/coffer/transport"
)

// BenchmarkCall measures RPC round trips over loopback (one stream per call on a cached
// connection): a small body, and a 1 MiB body echoed back, with parallel callers.
func BenchmarkCall(b *testing.B) {
	for _, bc := range []struct {
		name string
		size int
	}{{"64B", 64}, {"1MiB", 1 << 20}} {
		b.Run(bc.name, func(b *testing.B) {
			c := newCluster(b)
			srv := c.server("node-1", transport.HandlerFunc(func(_ context.Context, _ transport.Peer, _ string, body []byte) ([]byte, error) {
				return body, nil
			}))
			cli := c.client("host-a", transport.RoleAgent)
			body := make([]byte, bc.size)
			ctx := context.Background()
			if _, err := cli.Call(ctx, srv.Addr(), "x.Echo", body); err != nil {
				b.Fatal(err)
			}
			b.SetBytes(int64(2 * bc.size))
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := cli.Call(ctx, srv.Addr(), "x.Echo", body); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}
