package metarpc

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync/atomic"
	"time"

	"github.com/cofferhq/coffer/meta"
	"github.com/cofferhq/coffer/placement"
	"github.com/cofferhq/coffer/transport"
	"github.com/cofferhq/coffer/transport/wire"
)

// Client implements meta.Service over the transport. It tries the meta addresses in
// order, starting from the last one that answered; NotLeader, Unavailable and unreachable
// peers move it on to the next, and after a full round it backs off (50 ms doubling to
// 1 s) and starts again until ctx is done. A server found unreachable is not where the
// next round starts. A call to a server that died or stalled with the call in flight
// ends after the transport's liveness watch (about 3 s over transport/quic, not the 8 s
// idle timeout), and a follower forwarding to a dead leader answers Unavailable as soon
// as its own forward call ends so, so a leader change costs a call about one election. Any other error (NotFound, Exists, Invalid,
// MissingChunks, PermissionDenied, ...) is definite and returned at once, never retried.
//
// NB: a write that fails with Unavailable (the leader lost leadership after proposing)
// is retried and may then report ErrExists for a commit that did succeed.
//
// Safe for concurrent use.
type Client struct {
	c     transport.Caller
	seeds []string                 // the addresses the client was made with
	addrs atomic.Pointer[[]string] // the addresses tried, in order (RefreshServers)
	last  atomic.Int64             // index of the address that last answered
}

var _ meta.Service = (*Client)(nil)

// NewClient returns a client for the meta servers at addrs. addrs is copied.
func NewClient(c transport.Caller, addrs []string) *Client {
	cl := &Client{c: c, seeds: append([]string(nil), addrs...)}
	cl.addrs.Store(&cl.seeds)
	return cl
}

// setAddrs makes current the addresses tried first, followed by the seeds not among them.
func (cl *Client) setAddrs(current []string) {
	list := append([]string(nil), current...)
	for _, s := range cl.seeds {
		if !slices.Contains(list, s) {
			list = append(list, s)
		}
	}
	if slices.Equal(list, *cl.addrs.Load()) {
		return
	}
	cl.addrs.Store(&list)
	cl.last.Store(0)
}

// Addrs returns the meta addresses the client tries, in order: the current servers
// learned by RefreshServers, then the seeds.
func (cl *Client) Addrs() []string { return slices.Clone(*cl.addrs.Load()) }

// retryable reports whether another meta server (or a later attempt) may succeed where
// err failed. A refused TLS handshake is final: every server would refuse it.
func retryable(err error) bool {
	if errors.Is(err, transport.ErrRefused) {
		return false
	}
	if errors.Is(err, transport.ErrUnreachable) {
		return true
	}
	var te *transport.Error
	if errors.As(err, &te) {
		return te.Code == transport.NotLeader || te.Code == transport.Unavailable
	}
	return false
}

func (cl *Client) call(ctx context.Context, method string, req, resp any) error {
	addrs := *cl.addrs.Load()
	n := len(addrs)
	if n == 0 {
		return fmt.Errorf("metarpc: %s: %w: no meta addresses configured", method, meta.ErrUnavailable)
	}
	req, err := withTOTP(ctx, req)
	if err != nil {
		return fmt.Errorf("metarpc: %s: %w", method, err)
	}
	backoff := 50 * time.Millisecond
	for {
		start := int(cl.last.Load()) % n
		var lastErr error
		for k := range n {
			i := (start + k) % n
			err := wire.Call(ctx, cl.c, addrs[i], method, req, resp)
			if err == nil {
				cl.last.Store(int64(i))
				return nil
			}
			err = Errors.Wrap(err)
			if !retryable(err) {
				if ctx.Err() == nil {
					cl.last.Store(int64(i))
				}
				return fmt.Errorf("metarpc: %s on %s: %w", method, addrs[i], err)
			}
			if errors.Is(err, transport.ErrUnreachable) {
				// NB: a server that is dead or stalled (no answer to the transport's
				// liveness probe) is not where the next round or call starts: it would cost
				// them the same wait again.
				cl.last.CompareAndSwap(int64(i), int64((i+1)%n))
			}
			lastErr = err
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("metarpc: %s: %w (last error: %w)", method, ctx.Err(), lastErr)
		case <-t.C:
		}
		backoff = min(2*backoff, time.Second)
	}
}

// CreateVault implements meta.Service.
func (cl *Client) CreateVault(ctx context.Context, v meta.Vault) (meta.Vault, error) {
	var out meta.Vault
	err := cl.call(ctx, MethodCreateVault, createVaultReq{Vault: v}, &out)
	return out, err
}

// GetVault implements meta.Service.
func (cl *Client) GetVault(ctx context.Context, id meta.VaultID) (meta.Vault, error) {
	var out meta.Vault
	err := cl.call(ctx, MethodGetVault, getVaultReq{ID: id}, &out)
	return out, err
}

// ListVaults implements meta.Service.
func (cl *Client) ListVaults(ctx context.Context) ([]meta.Vault, error) {
	var out vaultList
	err := cl.call(ctx, MethodListVaults, listVaultsReq{}, &out)
	return out.Vaults, err
}

// CommitSnapshot implements meta.Service.
func (cl *Client) CommitSnapshot(ctx context.Context, s meta.Snapshot) (meta.Snapshot, error) {
	var out meta.Snapshot
	err := cl.call(ctx, MethodCommitSnapshot, commitSnapshotReq{Snapshot: s}, &out)
	return out, err
}

// ListSnapshots implements meta.Service.
func (cl *Client) ListSnapshots(ctx context.Context, vault meta.VaultID) ([]meta.Snapshot, error) {
	var out snapshotList
	err := cl.call(ctx, MethodListSnapshots, listSnapshotsReq{Vault: vault}, &out)
	return out.Snapshots, err
}

// GetSnapshot implements meta.Service.
func (cl *Client) GetSnapshot(ctx context.Context, vault meta.VaultID, id meta.SnapshotID) (meta.Snapshot, error) {
	var out meta.Snapshot
	err := cl.call(ctx, MethodGetSnapshot, getSnapshotReq{Vault: vault, ID: id}, &out)
	return out, err
}

// ClusterMap implements meta.Service.
func (cl *Client) ClusterMap(ctx context.Context) (placement.Map, error) {
	var out placement.Map
	err := cl.call(ctx, MethodClusterMap, clusterMapReq{}, &out)
	return out, err
}

// SetClusterMap implements meta.Service.
func (cl *Client) SetClusterMap(ctx context.Context, m placement.Map) error {
	return cl.call(ctx, MethodSetClusterMap, setClusterMapReq{Map: m}, nil)
}

// RaftStatus implements meta.Service: the status as seen by the first server that
// answers.
func (cl *Client) RaftStatus(ctx context.Context) (meta.RaftStatus, error) {
	var out meta.RaftStatus
	err := cl.call(ctx, MethodRaftStatus, raftStatusReq{}, &out)
	return out, err
}

// PeerApplied returns a function reporting the Raft applied index of the meta server at
// addr (its own RaftStatus, not forwarded), for server.Config.PeerApplied.
func PeerApplied(c transport.Caller) func(ctx context.Context, id, addr string) (uint64, error) {
	return func(ctx context.Context, id, addr string) (uint64, error) {
		var rs meta.RaftStatus
		if err := wire.Call(ctx, c, addr, MethodRaftStatus, raftStatusReq{Local: true}, &rs); err != nil {
			return 0, fmt.Errorf("metarpc: raft status of %s (%s): %w", id, addr, Errors.Wrap(err))
		}
		return rs.AppliedIndex, nil
	}
}
