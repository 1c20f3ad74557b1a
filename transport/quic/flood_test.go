package quic_test

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	quicgo "github.com/quic-go/quic-go"

	"github.com/cofferhq/coffer/meta"
	"github.com/cofferhq/coffer/transport"
	"github.com/cofferhq/coffer/transport/pki"
	"github.com/cofferhq/coffer/transport/quic"
	"github.com/cofferhq/coffer/transport/wire"
)

// enrollBody is a real enrollment request body as metarpc sends it: a token, a P-256 CSR
// and the host's name.
func enrollBody(t testing.TB) []byte {
	t.Helper()
	csr, _, err := pki.NewKeyAndCSR("host-enrolling.example.internal")
	if err != nil {
		t.Fatal(err)
	}
	tok, err := meta.NewEnrollToken()
	if err != nil {
		t.Fatal(err)
	}
	b, err := wire.Marshal(struct {
		Req meta.EnrollRequest `cbor:"req"`
	}{meta.EnrollRequest{Token: tok, CSR: csr, Name: "host-enrolling.example.internal"}})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// requestHeader is the start of a request frame for method announcing a body of n bytes.
func requestHeader(method string, n uint32) []byte {
	h := []byte{'C', 'F', wire.Version, 1}
	h = binary.BigEndian.AppendUint16(h, uint16(len(method)))
	h = append(h, method...)
	return binary.BigEndian.AppendUint32(h, n)
}

// rawAnon dials addr over the enrollment protocol without a certificate from the local
// address src (port 0), as an attacker would: no server verification, no Endpoint.
type rawAnon struct {
	tr *quicgo.Transport
}

func newRawAnon(t *testing.T, src string) *rawAnon {
	t.Helper()
	udp, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.ParseIP(src)})
	if err != nil {
		t.Fatal(err)
	}
	tr := &quicgo.Transport{Conn: udp}
	t.Cleanup(func() { tr.Close(); udp.Close() })
	return &rawAnon{tr: tr}
}

func (r *rawAnon) dial(ctx context.Context, addr string) (*quicgo.Conn, error) {
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return nil, err
	}
	return r.tr.Dial(ctx, ua, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{quic.ALPNEnroll}, MinVersion: tls.VersionTLS13},
		&quicgo.Config{HandshakeIdleTimeout: 3 * time.Second, MaxIdleTimeout: 30 * time.Second})
}

func heapNow() (alloc, inuse uint64) {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc, ms.HeapInuse
}

// TestAnonymousFloodBoundedMemory: 1,000 anonymous streams each announce a 64 MiB
// enrollment body, send a few bytes and stall, spread over as many connections as the
// server lets one address open. The server's heap must stay within 64 MiB of what it was
// before, every flood stream must be refused (its receive side cancelled) without its body
// being waited for, authenticated calls and a real enrollment request from another address
// must keep being answered promptly, and a chunk node (no anonymous methods) must refuse
// the enrollment protocol at the handshake.
func TestAnonymousFloodBoundedMemory(t *testing.T) {
	const (
		streams     = 1000
		maxAttempts = 32 // connection attempts from the flooding address
		heapLimit   = 64 << 20
		latencyMax  = 5 * time.Second // generous for -race on a loaded machine; measured well under 1 s
	)
	c := newCluster(t)
	srv := c.endpoint(quic.Config{ListenAddr: "127.0.0.1:0", Identity: c.identity("meta-1", transport.RoleMeta),
		Handler: echo, AnonymousMethods: []string{"meta.Enroll"}})
	var chunkServed atomic.Int64
	chunk := c.endpoint(quic.Config{ListenAddr: "127.0.0.1:0", Identity: c.identity("node-1", transport.RoleNode),
		Handler: transport.HandlerFunc(func(context.Context, transport.Peer, string, []byte) ([]byte, error) {
			chunkServed.Add(1)
			return nil, nil
		})})
	agent := c.client("host-a", transport.RoleAgent)
	anonID, err := pki.NewAnonymousIdentity(c.ca.CertPEM())
	if err != nil {
		t.Fatal(err)
	}
	anon := c.endpoint(quic.Config{Identity: anonID})
	body := enrollBody(t)
	t.Logf("a real enrollment request body is %d bytes", len(body))
	ctx := ctxT(t)

	// (c) A chunk node refuses the enrollment protocol at the handshake.
	if _, err := anon.Call(ctx, chunk.Addr(), "meta.Enroll", body); !errors.Is(err, transport.ErrRefused) {
		t.Errorf("enrollment protocol at a chunk node: %v, want a refused handshake (ErrRefused)", err)
	}
	if n := chunkServed.Load(); n != 0 {
		t.Errorf("chunk node handler ran %d times for an anonymous peer", n)
	}

	// Warm both legitimate clients up so their connections exist before the baseline.
	if _, err := agent.Call(ctx, srv.Addr(), "x.Echo", []byte("warm")); err != nil {
		t.Fatal(err)
	}
	if _, err := anon.Call(ctx, srv.Addr(), "meta.Enroll", body); err != nil {
		t.Fatal(err)
	}
	baseAlloc, baseInuse := heapNow()

	floodCtx, stopFlood := context.WithCancel(ctx)
	defer stopFlood()
	// The monitor samples the heap after a GC until the flood is over, and stops the flood
	// at once if it exceeds the limit (so that the old code fails fast instead of eating
	// gigabytes).
	var maxAlloc, maxInuse atomic.Uint64
	monitorDone := make(chan struct{})
	floodOver := make(chan struct{})
	go func() {
		defer close(monitorDone)
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			a, i := heapNow()
			if a > baseAlloc && a-baseAlloc > maxAlloc.Load() {
				maxAlloc.Store(a - baseAlloc)
			}
			if i > baseInuse && i-baseInuse > maxInuse.Load() {
				maxInuse.Store(i - baseInuse)
			}
			if maxAlloc.Load() > heapLimit || maxInuse.Load() > heapLimit {
				stopFlood()
				return
			}
			select {
			case <-floodOver:
				return
			case <-tick.C:
			}
		}
	}()

	// Legitimate traffic during the flood: authenticated calls and a real enrollment
	// request, from 127.0.0.1 (the flood comes from 127.0.0.2).
	var legit sync.WaitGroup
	var legitCalls atomic.Int64
	var worst atomic.Int64
	legitErr := make(chan error, 2)
	legitStop := make(chan struct{})
	for _, call := range []func() error{
		func() error {
			got, err := agent.Call(ctx, srv.Addr(), "x.Echo", []byte("during"))
			if err == nil && string(got) != "x.Echo|host-a|agent|during" {
				err = fmt.Errorf("reply %q", got)
			}
			return err
		},
		func() error {
			_, err := anon.Call(ctx, srv.Addr(), "meta.Enroll", body)
			return err
		},
	} {
		legit.Add(1)
		go func() {
			defer legit.Done()
			for {
				start := time.Now()
				err := call()
				d := time.Since(start)
				if int64(d) > worst.Load() {
					worst.Store(int64(d))
				}
				if err == nil && d > latencyMax {
					err = fmt.Errorf("answered after %v, want within %v", d, latencyMax)
				}
				if err != nil {
					legitErr <- err
					return
				}
				legitCalls.Add(1)
				select {
				case <-legitStop:
					return
				default:
				}
			}
		}()
	}

	// The flood: as many connections as the server admits from one address, then 1,000
	// streams over them, each announcing 64 MiB, sending 16 bytes and stalling.
	flooder := newRawAnon(t, "127.0.0.2")
	var conns []*quicgo.Conn
	refusedConns := 0
	for range maxAttempts {
		conn, err := flooder.dial(floodCtx, srv.Addr())
		if err != nil {
			refusedConns++
			continue
		}
		conns = append(conns, conn)
	}
	t.Cleanup(func() {
		for _, c := range conns {
			c.CloseWithError(0, "")
		}
	})
	if len(conns) == 0 {
		t.Fatalf("no anonymous connection admitted from the flooding address (%d refused)", refusedConns)
	}
	hdr := append(requestHeader("meta.Enroll", 64<<20), make([]byte, 16)...)
	var opened []*quicgo.Stream
	for i := range streams {
		str, err := conns[i%len(conns)].OpenStreamSync(floodCtx)
		if err != nil {
			if floodCtx.Err() != nil {
				break
			}
			t.Fatalf("flood stream %d: %v", i, err)
		}
		if _, err := str.Write(hdr); err != nil && floodCtx.Err() == nil {
			var se *quicgo.StreamError
			if !errors.As(err, &se) {
				t.Fatalf("flood stream %d: write: %v", i, err)
			}
		}
		opened = append(opened, str)
	}
	// Every flood stream must be refused by the server (it cancels its receive side, which
	// ends our send side's context) while we keep stalling.
	unrefused := 0
	waitCtx, cancelWait := context.WithTimeout(floodCtx, 10*time.Second)
	for _, str := range opened {
		select {
		case <-str.Context().Done():
		case <-waitCtx.Done():
			unrefused++
		}
	}
	cancelWait()
	// Measure once more while the flood's connections and streams are still open.
	a, i := heapNow()
	if a > baseAlloc && a-baseAlloc > maxAlloc.Load() {
		maxAlloc.Store(a - baseAlloc)
	}
	if i > baseInuse && i-baseInuse > maxInuse.Load() {
		maxInuse.Store(i - baseInuse)
	}
	close(floodOver)
	<-monitorDone
	close(legitStop)
	legit.Wait()
	close(legitErr)

	t.Logf("flood: %d connections admitted, %d refused; %d streams opened, %d not refused; heap growth max: alloc %.1f MiB, in use %.1f MiB; %d legitimate calls, slowest %v",
		len(conns), refusedConns, len(opened), unrefused, float64(maxAlloc.Load())/(1<<20), float64(maxInuse.Load())/(1<<20), legitCalls.Load(), time.Duration(worst.Load()))
	if maxAlloc.Load() > heapLimit || maxInuse.Load() > heapLimit {
		t.Errorf("server heap grew by %d bytes allocated, %d in use during the flood; want under %d", maxAlloc.Load(), maxInuse.Load(), heapLimit)
	}
	if len(conns) > quic.DefaultAnonConnsPerAddr {
		t.Errorf("%d anonymous connections admitted from one address, want at most %d", len(conns), quic.DefaultAnonConnsPerAddr)
	}
	if len(opened) < streams {
		t.Errorf("only %d of %d flood streams were opened", len(opened), streams)
	}
	if unrefused > 0 {
		t.Errorf("%d of %d flood streams were not refused: the server is waiting for their 64 MiB bodies", unrefused, len(opened))
	}
	for err := range legitErr {
		t.Errorf("legitimate call during the flood: %v", err)
	}
	if legitCalls.Load() < 2 {
		t.Errorf("only %d legitimate calls completed during the flood", legitCalls.Load())
	}
}
