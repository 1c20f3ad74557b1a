package metarpc_test

import (
	"context"
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
	"github.com/cofferhq/coffer/placement"
	"github.com/cofferhq/coffer/transport"
	"github.com/cofferhq/coffer/transport/pki"
	"github.com/cofferhq/coffer/transport/quic"
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
		ca, err := pki.NewCA("conformance", time.Now())
		if err != nil {
			t.Fatal(err)
		}
		identity := func(name string, role transport.Role, vaults []string) *pki.Identity {
			cert, key, err := ca.Issue(pki.IssueRequest{CommonName: name, Role: role, Vaults: vaults}, time.Now())
			if err != nil {
				t.Fatal(err)
			}
			id, err := pki.NewIdentity(ca.CertPEM(), cert, key)
			if err != nil {
				t.Fatal(err)
			}
			return id
		}
		chunks := memstore.NewChunks()
		m := placement.Map{Epoch: 1, PGCount: 16, Profile: placement.DefaultProfile}
		svc, err := memmeta.New(memmeta.Config{Chunks: chunks, Now: time.Now, Map: &m})
		if err != nil {
			t.Fatal(err)
		}
		srv, err := quic.New(quic.Config{ListenAddr: "127.0.0.1:0", Identity: identity("meta-0", transport.RoleMeta, nil)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { srv.Close() })
		srv.SetHandler(metarpc.NewServer(svc, srv, nil))
		var mu sync.Mutex
		return metatest.Fixture{
			As: func(p meta.Principal) meta.Service {
				var vaults []string
				for _, v := range p.Vaults {
					vaults = append(vaults, string(v))
				}
				mu.Lock()
				defer mu.Unlock()
				ep, err := quic.New(quic.Config{Identity: identity(p.Name, certRole[p.Role], vaults)})
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { ep.Close() })
				return metarpc.NewClient(ep, []string{srv.Addr()})
			},
			Put: func(ctx context.Context, id chunk.ID, data []byte) error {
				return chunks.Put(ctx, []chunkstore.Chunk{{ID: id, Data: data}})
			},
		}
	})
}
