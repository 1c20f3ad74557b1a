package metarpc_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/cofferhq/coffer/chunkstore"
	"github.com/cofferhq/coffer/chunkstore/chunk"
	"github.com/cofferhq/coffer/chunkstore/memstore"
	"github.com/cofferhq/coffer/meta"
	"github.com/cofferhq/coffer/meta/memmeta"
	"github.com/cofferhq/coffer/meta/metarpc"
	"github.com/cofferhq/coffer/meta/metatest"
	"github.com/cofferhq/coffer/meta/server"
	"github.com/cofferhq/coffer/placement"
	"github.com/cofferhq/coffer/transport"
	"github.com/cofferhq/coffer/transport/pki"
	"github.com/cofferhq/coffer/transport/pki/pkitest"
	"github.com/cofferhq/coffer/transport/quic"
	"github.com/hashicorp/raft"
)

// certRole is the certificate role that metarpc.PrincipalOf maps to each meta role.
var certRole = map[meta.Role]transport.Role{
	meta.RoleAdmin:           transport.RoleAdmin,
	meta.RoleBackupAgent:     transport.RoleAgent,
	meta.RoleRestoreOperator: transport.RoleRestore,
	meta.RoleNode:            transport.RoleNode,
}

// TestServiceConformance holds the RPC layer to the meta.Service contract: a metarpc
// client on its own QUIC endpoint, holding a certificate for the principal, calls a
// metarpc server on loopback QUIC in front of the in-memory service.
func TestServiceConformance(t *testing.T) {
	metatest.RunService(t, func(t *testing.T) metatest.Fixture {
		chunks := memstore.NewChunks()
		m := placement.Map{Epoch: 1, PGCount: 16, Profile: placement.DefaultProfile}
		svc, err := memmeta.New(memmeta.Config{Chunks: chunks, Now: time.Now, Map: &m})
		if err != nil {
			t.Fatal(err)
		}
		return overQUIC(t, svc, nil, chunks)
	})
}

// TestServiceConformanceRaft is TestServiceConformance in front of a one-server meta
// group (meta/server on raft's in-memory transport).
func TestServiceConformanceRaft(t *testing.T) {
	metatest.RunService(t, func(t *testing.T) metatest.Fixture {
		chunks := memstore.NewChunks()
		minimalApprovals := meta.MinimalApprovalPolicy()
		_, trans := raft.NewInmemTransport("m0")
		srv, err := server.New(server.Config{
			ID: "m0", Addr: "m0", Dir: t.TempDir(), Transport: trans,
			Bootstrap: []meta.Server{{ID: "m0", Addr: "m0", Voter: true}},
			Chunks:    chunks, Now: time.Now,
			ChunkNotFound:    func(err error) bool { return errors.Is(err, chunkstore.ErrNotFound) },
			InitialMap:       &placement.Map{PGCount: 16, Profile: placement.DefaultProfile},
			HeartbeatTimeout: time.Second, ElectionTimeout: time.Second, LeaderLeaseTimeout: 500 * time.Millisecond,
			TickInterval: 100 * time.Millisecond,
			Approvals:    &minimalApprovals,
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { srv.Close() })
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		for _, err := srv.ClusterMap(ctx); err != nil; _, err = srv.ClusterMap(ctx) {
			if ctx.Err() != nil {
				t.Fatalf("no initial map: %v", err)
			}
			time.Sleep(20 * time.Millisecond)
		}
		return overQUIC(t, srv, srv, chunks)
	})
}

// overQUIC serves svc (a meta.RetentionService too) with metarpc on a loopback QUIC
// endpoint and returns a fixture whose principals call it as metarpc clients holding
// their own certificates.
func overQUIC(t *testing.T, svc meta.Service, auth metarpc.Authority, chunks *memstore.Chunks) metatest.Fixture {
	ca := pkitest.NewCA(t)
	identity := func(name string, role transport.Role, vaults []string) *pki.Identity {
		return pkitest.IdentityFor(t, ca, pki.IssueRequest{CommonName: name, Role: role, Vaults: vaults})
	}
	srv, err := quic.New(quic.Config{ListenAddr: "127.0.0.1:0", Identity: identity("meta-0", transport.RoleMeta, nil)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	srv.SetHandler(metarpc.NewServer(svc, srv, auth))
	var mu sync.Mutex
	clients := map[string]*metarpc.Client{}
	client := func(p meta.Principal) *metarpc.Client {
		var vaults []string
		for _, v := range p.Vaults {
			vaults = append(vaults, string(v))
		}
		key := fmt.Sprintf("%s %v", p, vaults)
		mu.Lock()
		defer mu.Unlock()
		if c, ok := clients[key]; ok {
			return c
		}
		ep, err := quic.New(quic.Config{Identity: identity(p.Name, certRole[p.Role], vaults)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ep.Close() })
		clients[key] = metarpc.NewClient(ep, []string{srv.Addr()})
		return clients[key]
	}
	return metatest.Fixture{
		As: func(p meta.Principal) meta.Service { return client(p) },
		Put: func(ctx context.Context, id chunk.ID, data []byte) error {
			return chunks.Put(ctx, []chunkstore.Chunk{{ID: id, Data: data}})
		},
		Retention: func(p meta.Principal) meta.RetentionService { return client(p) },
	}
}
