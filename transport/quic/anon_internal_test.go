package quic

import (
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	quicgo "github.com/quic-go/quic-go"

	"github.com/cofferhq/coffer/transport"
	"github.com/cofferhq/coffer/transport/pki"
	"github.com/cofferhq/coffer/transport/pki/pkitest"
)

// TestLogLimiter: one event per key per interval, the suppressed ones counted into the
// next; a full table of live keys drops new keys instead of growing.
func TestLogLimiter(t *testing.T) {
	now := time.Unix(1000, 0)
	l := newLogLimiter(time.Minute, func() time.Time { return now })
	if ok, _ := l.allow("a"); !ok {
		t.Fatal("first event not allowed")
	}
	for range 5 {
		if ok, _ := l.allow("a"); ok {
			t.Fatal("second event within the interval allowed")
		}
	}
	if ok, _ := l.allow("b"); !ok {
		t.Fatal("another key's first event not allowed")
	}
	now = now.Add(time.Minute)
	if ok, skipped := l.allow("a"); !ok || skipped != 5 {
		t.Fatalf("after the interval: allowed %v with %d skipped, want true and 5", ok, skipped)
	}
	l = newLogLimiter(time.Minute, func() time.Time { return now })
	for i := range maxLogKeys {
		l.allow(fmt.Sprint("k", i))
	}
	if ok, _ := l.allow("new"); ok || len(l.last) != maxLogKeys {
		t.Fatalf("full table: new key allowed %v, %d keys, want false and %d", ok, len(l.last), maxLogKeys)
	}
	now = now.Add(time.Minute)
	if ok, _ := l.allow("new"); !ok || len(l.last) > maxLogKeys {
		t.Fatalf("after expiry: new key allowed %v, %d keys", ok, len(l.last))
	}
}

// TestAnonymousConnectionWindowFixed: the server side of an anonymous connection is
// marked as such in its context, so its flow-control window never grows; an
// authenticated connection's may.
func TestAnonymousConnectionWindowFixed(t *testing.T) {
	ca := pkitest.NewCA(t)
	srv, err := New(Config{ListenAddr: "127.0.0.1:0", Identity: pkitest.Identity(t, ca, "meta-1", transport.RoleMeta),
		Handler:          transport.HandlerFunc(func(context.Context, transport.Peer, string, []byte) ([]byte, error) { return nil, nil }),
		AnonymousMethods: []string{"meta.Enroll"}})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	anonID, err := pki.NewAnonymousIdentity(ca.CertPEM())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, tc := range []struct {
		id   *pki.Identity
		grow bool
	}{{anonID, false}, {pkitest.Identity(t, ca, "host-a", transport.RoleAgent), true}} {
		cli, err := New(Config{Identity: tc.id})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := cli.Call(ctx, srv.Addr(), "meta.Enroll", nil); err != nil {
			t.Fatal(err)
		}
		local := cli.udp.LocalAddr().(*net.UDPAddr).Port
		var conn *quicgo.Conn
		srv.mu.Lock()
		for c := range srv.mu.accepted {
			if c.RemoteAddr().(*net.UDPAddr).Port == local {
				conn = c
			}
		}
		srv.mu.Unlock()
		if conn == nil {
			t.Fatalf("%s: no server-side connection from port %d", tc.id.Principal(), local)
		}
		if got := allowWindowIncrease(conn, 1<<20); got != tc.grow {
			t.Errorf("%q: window increase allowed %v, want %v", tc.id.Principal(), got, tc.grow)
		}
		cli.Close()
	}
}
