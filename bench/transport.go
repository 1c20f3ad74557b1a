package bench

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"io"
	"math/big"
	"runtime"
	"syscall"
	"time"

	quicgo "github.com/quic-go/quic-go"
)

// Windows used by transport/quic (kept equal so the comparison measures Coffer's
// settings).
const (
	quicStreamWindow = 16 << 20
	quicConnWindow   = 64 << 20
)

// selfSigned returns a throwaway TLS certificate for loopback benchmarks.
func selfSigned() (tls.Certificate, *x509.CertPool, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "bench"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		DNSNames: []string{"bench"}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	leaf, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, pool, nil
}

// cpuNow returns this process's user+system CPU time.
func cpuNow() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// TransportStages sends total bytes one way over loopback through one QUIC stream and
// through one TCP+TLS 1.3 connection (client and server in this process) and reports
// MB/s and CPU-seconds per GiB for both ends together.
func TransportStages(ctx context.Context, total int64) ([]Stage, error) {
	srvTLS, cliTLS, err := loopbackTLS()
	if err != nil {
		return nil, err
	}
	var out []Stage

	q, err := quicOneWay(ctx, srvTLS, cliTLS, total)
	if err != nil {
		return nil, err
	}
	q.Reference = "190-440, 4.3-4.8 CPU-s/GiB"
	out = append(out, q)
	t, err := tcpOneWay(srvTLS, cliTLS, total)
	if err != nil {
		return nil, err
	}
	t.Reference = "940-1600, 1.1 CPU-s/GiB"
	out = append(out, t)
	return out, nil
}

// loopbackTLS returns TLS 1.3 server and client configs sharing a throwaway certificate.
func loopbackTLS() (srv, cli *tls.Config, err error) {
	cert, pool, err := selfSigned()
	if err != nil {
		return nil, nil, fmt.Errorf("bench: transport cert: %w", err)
	}
	srv = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13, NextProtos: []string{"bench"}}
	cli = &tls.Config{RootCAs: pool, ServerName: "bench", MinVersion: tls.VersionTLS13, NextProtos: []string{"bench"}}
	return srv, cli, nil
}

func finishStage(name string, total int64, wall, cpu time.Duration) Stage {
	return Stage{
		Name: name, Side: "transport", Cores: runtime.GOMAXPROCS(0),
		MBps1:        float64(total) / wall.Seconds() / 1e6,
		CPUSecPerGiB: cpu.Seconds() / (float64(total) / (1 << 30)),
		Note:         "one stream, both ends in one process",
	}
}

func quicOneWay(ctx context.Context, srvTLS, cliTLS *tls.Config, total int64) (Stage, error) {
	qc := &quicgo.Config{MaxStreamReceiveWindow: quicStreamWindow, MaxConnectionReceiveWindow: quicConnWindow}
	ln, err := quicgo.ListenAddr("127.0.0.1:0", srvTLS, qc)
	if err != nil {
		return Stage{}, fmt.Errorf("bench: quic listen: %w", err)
	}
	defer ln.Close()
	done := make(chan error, 1)
	go func() {
		conn, err := ln.Accept(ctx)
		if err != nil {
			done <- err
			return
		}
		st, err := conn.AcceptStream(ctx)
		if err != nil {
			done <- err
			return
		}
		_, err = io.Copy(io.Discard, st)
		st.Close()
		done <- err
	}()
	conn, err := quicgo.DialAddr(ctx, ln.Addr().String(), cliTLS, qc)
	if err != nil {
		return Stage{}, fmt.Errorf("bench: quic dial: %w", err)
	}
	defer conn.CloseWithError(0, "")
	st, err := conn.OpenStreamSync(ctx)
	if err != nil {
		return Stage{}, fmt.Errorf("bench: quic stream: %w", err)
	}
	c0, t0 := cpuNow(), time.Now()
	if err := writeN(st, total); err != nil {
		return Stage{}, fmt.Errorf("bench: quic write: %w", err)
	}
	st.Close()
	if err := <-done; err != nil {
		return Stage{}, fmt.Errorf("bench: quic read: %w", err)
	}
	return finishStage("QUIC stream (quic-go)", total, time.Since(t0), cpuNow()-c0), nil
}

func tcpOneWay(srvTLS, cliTLS *tls.Config, total int64) (Stage, error) {
	ln, err := tls.Listen("tcp", "127.0.0.1:0", srvTLS)
	if err != nil {
		return Stage{}, fmt.Errorf("bench: tcp listen: %w", err)
	}
	defer ln.Close()
	done := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- err
			return
		}
		_, err = io.Copy(io.Discard, c)
		c.Close()
		done <- err
	}()
	c, err := tls.Dial("tcp", ln.Addr().String(), cliTLS)
	if err != nil {
		return Stage{}, fmt.Errorf("bench: tcp dial: %w", err)
	}
	if err := c.Handshake(); err != nil {
		return Stage{}, fmt.Errorf("bench: tls handshake: %w", err)
	}
	c0, t0 := cpuNow(), time.Now()
	if err := writeN(c, total); err != nil {
		return Stage{}, fmt.Errorf("bench: tcp write: %w", err)
	}
	c.Close()
	if err := <-done; err != nil {
		return Stage{}, fmt.Errorf("bench: tcp read: %w", err)
	}
	return finishStage("TCP+TLS 1.3 stream", total, time.Since(t0), cpuNow()-c0), nil
}

func writeN(w io.Writer, total int64) error {
	buf := make([]byte, 256<<10)
	for i := range buf {
		buf[i] = byte(i * 7)
	}
	for sent := int64(0); sent < total; {
		n := min(int64(len(buf)), total-sent)
		if _, err := w.Write(buf[:n]); err != nil {
			return err
		}
		sent += n
	}
	return nil
}
