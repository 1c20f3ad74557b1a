package server

import (
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cofferhq/coffer/meta"
	"github.com/cofferhq/coffer/transport"
	"github.com/cofferhq/coffer/transport/pki"
)

// TestEnrollSignsOnceAndNeedsTheCAKey: the leader signs a backup-agent certificate for
// the token's vault (the token's name beats the default name), a server without the CA
// key says so and leaves the token unused, and SecurityState is for nodes and admins.
func TestEnrollSignsOnceAndNeedsTheCAKey(t *testing.T) {
	ca, err := pki.NewCA("test", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	for _, withCA := range []bool{false, true} {
		c := newCluster(t, 1, func(cfg *Config) {
			if withCA {
				cfg.CA = ca
			}
		})
		l := c.srv[c.leader()]
		ctx := meta.WithPrincipal(ctxT(t), meta.Principal{Name: "ops", Role: meta.RoleAdmin})
		tok, rec, err := l.CreateEnrollToken(ctx, "web", "db01", time.Hour, nil)
		if err != nil {
			t.Fatal(err)
		}
		csr, key, err := pki.NewKeyAndCSR("whatever")
		if err != nil {
			t.Fatal(err)
		}
		res, err := l.Enroll(ctxT(t), meta.EnrollRequest{Token: tok, CSR: csr})
		if !withCA {
			if !errors.Is(err, meta.ErrUnavailable) || !strings.Contains(err.Error(), "holds no issuing CA") {
				t.Fatalf("enroll without the CA key: %v, want ErrUnavailable naming the key", err)
			}
			if tk, err := l.fsm.EnrollToken(meta.EnrollTokenHash(tok)); err != nil || tk.Used {
				t.Fatalf("token after a server without the CA key refused: %+v %v, want unused", tk, err)
			}
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		id, err := pki.NewIdentity(ca.CertPEM(), res.Cert, key)
		if err != nil {
			t.Fatal(err)
		}
		if id.Principal() != "db01" || id.Role() != transport.RoleAgent || res.Vault != "web" || res.Serial != pki.SerialString(id.Leaf().SerialNumber) {
			t.Fatalf("certificate %s %s, result %+v (token %s)", id.Principal(), id.Role(), res, rec.ID)
		}
		if v := pki.VaultsOf(id.Leaf()); len(v) != 1 || v[0] != "web" {
			t.Fatalf("certificate vaults %v, want [web]", v)
		}
		// The same key again (a retry whose first answer was lost) gets the same serial:
		// still one certificate identity per token. Another key is refused.
		if again, err := l.Enroll(ctxT(t), meta.EnrollRequest{Token: tok, CSR: csr}); err != nil || again.Serial != res.Serial || again.Principal != "db01" {
			t.Fatalf("retry by the same key: %+v %v, want serial %s", again, err, res.Serial)
		}
		other, _, err := pki.NewKeyAndCSR("whatever")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := l.Enroll(ctxT(t), meta.EnrollRequest{Token: tok, CSR: other}); !errors.Is(err, meta.ErrDenied) {
			t.Fatalf("second use by another key: %v", err)
		}
		if _, err := l.Enroll(ctxT(t), meta.EnrollRequest{Token: "x", CSR: []byte("bad")}); !errors.Is(err, meta.ErrInvalid) {
			t.Fatalf("bad CSR: %v, want ErrInvalid", err)
		}
		agent := meta.WithPrincipal(ctxT(t), meta.Principal{Name: "db01", Role: meta.RoleBackupAgent})
		if _, err := l.SecurityState(agent, 0); !errors.Is(err, meta.ErrDenied) {
			t.Fatalf("agent reading the revocation list: %v", err)
		}
		node := meta.WithPrincipal(ctxT(t), meta.Principal{Name: "n1", Role: meta.RoleNode})
		st, err := l.SecurityState(node, 0)
		if err != nil || st.Now.IsZero() {
			t.Fatalf("node security state %+v %v", st, err)
		}
	}
}

// TestFailedEnrollmentsAreLimited: attempts with unknown tokens from one address are
// audited up to the burst, then refused before the log (the audit list stops growing),
// while a live token from the same address still enrolls.
func TestFailedEnrollmentsAreLimited(t *testing.T) {
	ca, err := pki.NewCA("test", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	c := newCluster(t, 1, func(cfg *Config) { cfg.CA = ca })
	l := c.srv[c.leader()]
	csr, _, err := pki.NewKeyAndCSR("whatever")
	if err != nil {
		t.Fatal(err)
	}
	const from = "192.0.2.7:40000"
	audited := func() int {
		es, err := l.fsm.AuditLog(0, 0)
		if err != nil {
			t.Fatal(err)
		}
		return len(es)
	}
	before := audited()
	for i := range enrollSourceBurst {
		_, err := l.Enroll(ctxT(t), meta.EnrollRequest{Token: fmt.Sprintf("guess-%d", i), CSR: csr, From: from})
		if !errors.Is(err, meta.ErrDenied) || !strings.Contains(err.Error(), "unknown enrollment token") {
			t.Fatalf("guess %d: %v, want ErrDenied for an unknown token", i+1, err)
		}
	}
	if n := audited() - before; n != enrollSourceBurst {
		t.Fatalf("%d audit entries for %d failed attempts", n, enrollSourceBurst)
	}
	_, err = l.Enroll(ctxT(t), meta.EnrollRequest{Token: "guess-more", CSR: csr, From: from})
	if !errors.Is(err, meta.ErrDenied) || !strings.Contains(err.Error(), "too many failed enrollment attempts from 192.0.2.7") {
		t.Fatalf("attempt past the limit: %v, want ErrDenied naming the address", err)
	}
	if n := audited() - before; n != enrollSourceBurst {
		t.Fatalf("a refused attempt reached the log: %d audit entries", n)
	}
	admin := meta.WithPrincipal(ctxT(t), meta.Principal{Name: "ops", Role: meta.RoleAdmin})
	tok, _, err := l.CreateEnrollToken(admin, "web", "db02", time.Hour, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res, err := l.Enroll(ctxT(t), meta.EnrollRequest{Token: tok, CSR: csr, From: from}); err != nil || res.Principal != "db02" {
		t.Fatalf("live token from a limited address: %+v %v, want enrolled as db02", res, err)
	}
}

// TestPrincipalRevocationCoversCertsFromAnAheadLeader: a revocation by principal covers
// certificates whose NotBefore is before its cluster time. A leader whose wall clock runs
// hours ahead of cluster time signed certificates dated by that wall clock, which a later
// revocation of their principal did not cover.
func TestPrincipalRevocationCoversCertsFromAnAheadLeader(t *testing.T) {
	ca, err := pki.NewCA("test", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	var ahead atomic.Int64 // the leader's wall clock jumps ahead once the cluster runs
	c := newCluster(t, 1, func(cfg *Config) {
		cfg.CA = ca
		cfg.Now = func() time.Time { return time.Now().Add(time.Duration(ahead.Load())) }
	})
	l := c.srv[c.leader()]
	admin := meta.WithPrincipal(ctxT(t), meta.Principal{Name: "ops", Role: meta.RoleAdmin})
	tok, _, err := l.CreateEnrollToken(admin, "web", "db01", time.Hour, nil) // cluster time starts here
	if err != nil {
		t.Fatal(err)
	}
	ahead.Store(int64(6 * time.Hour))
	csr, key, err := pki.NewKeyAndCSR("db01")
	if err != nil {
		t.Fatal(err)
	}
	res, err := l.Enroll(ctxT(t), meta.EnrollRequest{Token: tok, CSR: csr})
	if err != nil {
		t.Fatal(err)
	}
	id, err := pki.NewIdentity(ca.CertPEM(), res.Cert, key)
	if err != nil {
		t.Fatal(err)
	}
	rv, err := l.RevokeCert(admin, meta.Revocation{Principal: "db01", Reason: "host lost"})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := meta.Revoked([]meta.Revocation{rv}, res.Serial, "db01", id.Leaf().NotBefore); !ok {
		t.Fatalf("certificate issued at %v (leader wall clock) not covered by the revocation of db01 at cluster time %v",
			id.Leaf().NotBefore, rv.At)
	}
}
