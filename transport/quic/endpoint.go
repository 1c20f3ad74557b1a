package quic

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	quicgo "github.com/quic-go/quic-go"

	"github.com/cofferhq/coffer/transport"
	"github.com/cofferhq/coffer/transport/pki"
)

// ALPNRPC is the ALPN protocol of RPC connections.
const ALPNRPC = "coffer-rpc/1"

// ALPNEnroll is the ALPN protocol of enrollment connections: the only protocol on which a
// client without a certificate completes the TLS handshake. Its peers are anonymous and
// may call only Config.AnonymousMethods; every other method is answered Unauthenticated.
const ALPNEnroll = "coffer-enroll/1"

// Defaults for zero Config fields, and fixed connection parameters.
const (
	DefaultMaxIncomingStreams = 1024
	DefaultKeepAlive          = 2 * time.Second

	// maxIdleTimeout is how long a connection may go without hearing from the peer.
	// Keep-alives (DefaultKeepAlive) keep healthy idle connections well inside it, so it
	// is what a call on a connection to a crashed peer (no CONNECTION_CLOSE) can wait
	// before failing over: short, since shard reads wait on it.
	maxIdleTimeout = 8 * time.Second
	// handshakeTimeout bounds a whole dial; the handshake idle timeout is half of it. A
	// dead peer drops packets silently (Linux does not report ICMP on unconnected UDP
	// sockets), so this is what a call to a dead node costs before failover: 3 s of
	// silence still allows two retransmissions of the first flight.
	handshakeTimeout           = 6 * time.Second
	maxStreamReceiveWindow     = 16 << 20
	maxConnectionReceiveWindow = 64 << 20
	// requestReadTimeout bounds how long a server waits for a whole request frame.
	requestReadTimeout = 2 * time.Minute
)

// Application error codes on streams and connections.
const (
	codeNoError   quicgo.ApplicationErrorCode = 0
	codeClosing   quicgo.ApplicationErrorCode = 1
	codeForbidden quicgo.ApplicationErrorCode = 2
	streamCancel  quicgo.StreamErrorCode      = 1
	streamBadReq  quicgo.StreamErrorCode      = 2
	streamRefused quicgo.StreamErrorCode      = 3
)

// ErrClosed is returned (wrapped, together with transport.ErrUnreachable) by calls on a
// closed Endpoint.
var ErrClosed = errors.New("quic: endpoint closed")

// Config configures an Endpoint. Zero fields take defaults.
type Config struct {
	// ListenAddr is the UDP address to bind ("127.0.0.1:0" picks a port). Empty means a
	// client-only endpoint: it binds "0.0.0.0:0" and accepts no connections.
	ListenAddr string
	// Identity is this endpoint's certificate and the cluster CA. Required.
	Identity *pki.Identity
	// Logger receives connection-level events; nil discards them.
	Logger *slog.Logger
	// MaxIncomingStreams bounds concurrent streams a peer may open on one connection, and
	// so the server goroutines per connection. Default 1024.
	MaxIncomingStreams int64
	// KeepAlive is the keep-alive period of connections. Default DefaultKeepAlive.
	KeepAlive time.Duration
	// Handler serves RPCs. It may be nil: RPCs are then answered Unavailable until
	// SetHandler installs one.
	Handler transport.Handler
	// CheckPeer, when set, runs before every request of an authenticated peer (RPCs and
	// streams of other protocols, whose method is reported as "stream:"+ALPN), once the
	// request's header is read and before any of its body is; its error is the answer,
	// the body is never read and the handler is not called. Nodes refuse revoked
	// certificates here, on connections old and new. Anonymous peers are not passed to
	// it: AnonymousMethods and Anonymous decide on them.
	CheckPeer transport.PeerCheck
	// AnonymousMethods are the RPC methods a peer without a certificate may call over
	// ALPNEnroll (an enrolling agent: "meta.Enroll"). Empty: the endpoint refuses ALPNEnroll
	// at the handshake.
	AnonymousMethods []string
	// Anonymous bounds what peers without a certificate may hold (body size, read time,
	// streams, connections); zero fields take defaults.
	Anonymous AnonymousLimits
	// Liveness is how calls notice a peer that went silent (transport.Liveness): a
	// probe is a ping on a new stream of the call's connection. Zero fields take the
	// defaults.
	Liveness transport.Liveness
}

// Endpoint is one QUIC endpoint: an RPC server and client and a carrier for extra stream
// protocols, all on one UDP socket. It implements transport.Caller. All methods are safe
// for concurrent use. Close releases everything and waits for every goroutine it started.
type Endpoint struct {
	log     *slog.Logger
	id      *pki.Identity
	udp     *net.UDPConn
	tr      *quicgo.Transport
	ln      *quicgo.Listener // nil for a client-only endpoint
	qconf   *quicgo.Config
	handler atomic.Pointer[handlerBox]
	check   transport.PeerCheck // nil: every authenticated peer is served
	anon    map[string]bool     // methods anonymous peers may call
	anonLim AnonymousLimits     // with defaults filled in
	// liveness is Config.Liveness with defaults filled in.
	liveness transport.Liveness

	anonConns anonConns
	refusals  *logLimiter // refusals of traffic before authentication, per address

	// NB: ctx is the endpoint's lifetime, not a request's: it is cancelled by Close and
	// parents every handler context and background dial.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu struct {
		sync.Mutex
		closed    bool
		dials     map[dialKey]*dialEntry
		accepted  map[*quicgo.Conn]struct{}
		listeners map[string]*streamListener
		live      map[*quicgo.Conn]*transport.Live // outgoing connections calls have used
	}
}

type handlerBox struct{ h transport.Handler }

type dialKey struct{ addr, alpn string }

// dialEntry is one cached outgoing connection; ready is closed once conn or err is set.
type dialEntry struct {
	ready chan struct{}
	conn  *quicgo.Conn
	err   error
}

// New binds the UDP socket, starts accepting connections (unless client-only) and returns
// the running endpoint.
func New(cfg Config) (*Endpoint, error) {
	if cfg.Identity == nil {
		return nil, errors.New("quic: new endpoint: Config.Identity is required")
	}
	if cfg.MaxIncomingStreams < 0 {
		return nil, fmt.Errorf("quic: new endpoint: negative MaxIncomingStreams %d", cfg.MaxIncomingStreams)
	}
	if cfg.MaxIncomingStreams == 0 {
		cfg.MaxIncomingStreams = DefaultMaxIncomingStreams
	}
	if cfg.KeepAlive <= 0 {
		cfg.KeepAlive = DefaultKeepAlive
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	anonLim, err := cfg.Anonymous.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("quic: new endpoint: %w", err)
	}
	liveness, err := cfg.Liveness.WithDefaults()
	if err != nil {
		return nil, fmt.Errorf("quic: new endpoint: %w", err)
	}
	listen := cfg.ListenAddr != ""
	if listen && cfg.Identity.Anonymous() {
		return nil, errors.New("quic: new endpoint: an identity without a certificate cannot listen")
	}
	addr := cfg.ListenAddr
	if !listen {
		addr = "0.0.0.0:0"
	}
	uaddr, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return nil, fmt.Errorf("quic: new endpoint: listen address %q: %w", addr, err)
	}
	udp, err := net.ListenUDP("udp", uaddr)
	if err != nil {
		return nil, fmt.Errorf("quic: new endpoint: %w", err)
	}
	resetKey := quicgo.StatelessResetKey(cfg.Identity.DeriveSecret("quic stateless reset"))
	anon := make(map[string]bool, len(cfg.AnonymousMethods))
	for _, m := range cfg.AnonymousMethods {
		anon[m] = true
	}
	e := &Endpoint{
		log:       cfg.Logger,
		id:        cfg.Identity,
		udp:       udp,
		check:     cfg.CheckPeer,
		anon:      anon,
		anonLim:   anonLim,
		liveness:  liveness,
		anonConns: anonConns{byAddr: make(map[string]int)},
		refusals:  newLogLimiter(anonLim.LogInterval, time.Now),
		// NB: a stateless-reset key derived from the node's private key survives restarts,
		// so peers of a restarted node learn at once that their connection is gone instead
		// of waiting for the idle timeout. Every accepted connection's context carries its
		// connInfo, which its TLS handshake and flow control consult.
		tr: &quicgo.Transport{Conn: udp, StatelessResetKey: &resetKey, ConnContext: withConnInfo},
		qconf: &quicgo.Config{
			HandshakeIdleTimeout:          handshakeTimeout / 2,
			MaxIdleTimeout:                maxIdleTimeout,
			KeepAlivePeriod:               cfg.KeepAlive,
			MaxIncomingStreams:            cfg.MaxIncomingStreams,
			MaxIncomingUniStreams:         -1,
			MaxStreamReceiveWindow:        maxStreamReceiveWindow,
			MaxConnectionReceiveWindow:    maxConnectionReceiveWindow,
			AllowConnectionWindowIncrease: allowWindowIncrease,
		},
	}
	e.ctx, e.cancel = context.WithCancel(context.Background())
	e.mu.dials = make(map[dialKey]*dialEntry)
	e.mu.accepted = make(map[*quicgo.Conn]struct{})
	e.mu.listeners = make(map[string]*streamListener)
	e.mu.live = make(map[*quicgo.Conn]*transport.Live)
	if cfg.Handler != nil {
		e.handler.Store(&handlerBox{cfg.Handler})
	}
	if listen {
		ln, err := e.tr.Listen(e.serverTLS(), e.qconf)
		if err != nil {
			e.cancel()
			e.tr.Close()
			udp.Close()
			return nil, fmt.Errorf("quic: new endpoint: listen: %w", err)
		}
		e.ln = ln
		e.wg.Add(1)
		go e.acceptLoop()
	}
	e.log.Debug("quic endpoint up", "addr", e.Addr(), "principal", cfg.Identity.Principal(), "listening", listen)
	return e, nil
}

// Addr returns the bound UDP address as host:port.
func (e *Endpoint) Addr() string { return e.udp.LocalAddr().String() }

// SetHandler installs the RPC handler (atomically; calls already running keep the old
// one). A nil h makes RPCs answer Unavailable.
func (e *Endpoint) SetHandler(h transport.Handler) {
	if h == nil {
		e.handler.Store(nil)
		return
	}
	e.handler.Store(&handlerBox{h})
}

// serverTLS advertises the RPC protocol plus every protocol registered with Listener at
// the time of each handshake, and admits non-RPC protocols only for node certificates. A
// client offering only ALPNEnroll gets the enrollment configuration instead (no client
// certificate asked for, that protocol only) when admitAnonymous lets it in: never on an
// endpoint without AnonymousMethods, and only within the anonymous connection caps.
// Refused handshakes are logged with the remote address (a client without a certificate
// never reaches the application), at most once per address and LogInterval.
func (e *Endpoint) serverTLS() *tls.Config {
	base := e.id.ServerTLS(ALPNRPC)
	enroll := e.id.EnrollServerTLS(ALPNEnroll)
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		GetConfigForClient: func(chi *tls.ClientHelloInfo) (*tls.Config, error) {
			var remote net.Addr
			if chi.Conn != nil {
				remote = chi.Conn.RemoteAddr()
			}
			if len(chi.SupportedProtos) == 1 && chi.SupportedProtos[0] == ALPNEnroll {
				if err := e.admitAnonymous(chi, remote); err != nil {
					return nil, err
				}
				return enroll.Clone(), nil
			}
			c := base.Clone()
			c.NextProtos = e.alpns()
			// NB: the client certificate is still mandatory (VerifyConnection refuses a
			// connection without one); asking for it "if given" lets that refusal reach
			// the log below instead of failing inside crypto/tls unlogged.
			c.ClientAuth = tls.VerifyClientCertIfGiven
			verify := base.VerifyConnection
			c.VerifyConnection = func(cs tls.ConnectionState) error {
				err := verify(cs)
				if err == nil && cs.NegotiatedProtocol != ALPNRPC {
					if p := pki.PeerFromTLS(cs, nil); !p.Role.IsNode() {
						err = fmt.Errorf("quic: %s: protocol %q is for nodes only", p.Principal, cs.NegotiatedProtocol)
					}
				}
				if err != nil {
					e.logRefusal("tls", addrKey(remote), "tls handshake refused", "remote", remote, "alpn", cs.NegotiatedProtocol, "err", err)
				}
				return err
			}
			return c, nil
		},
	}
}

func (e *Endpoint) alpns() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := []string{ALPNRPC}
	for p := range e.mu.listeners {
		out = append(out, p)
	}
	return out
}

func (e *Endpoint) acceptLoop() {
	defer e.wg.Done()
	for {
		conn, err := e.ln.Accept(e.ctx)
		if err != nil {
			if e.ctx.Err() == nil {
				e.log.Warn("quic accept stopped", "err", err)
			}
			return
		}
		e.mu.Lock()
		if e.mu.closed {
			e.mu.Unlock()
			conn.CloseWithError(codeClosing, "endpoint closed")
			return
		}
		e.mu.accepted[conn] = struct{}{}
		e.wg.Add(1)
		e.mu.Unlock()
		go e.serveConn(conn)
	}
}

// serveConn accepts the streams of one incoming connection until it closes.
func (e *Endpoint) serveConn(conn *quicgo.Conn) {
	defer e.wg.Done()
	defer func() {
		e.mu.Lock()
		delete(e.mu.accepted, conn)
		e.mu.Unlock()
	}()
	cs := conn.ConnectionState().TLS
	alpn := cs.NegotiatedProtocol
	peer := transport.Peer{Addr: conn.RemoteAddr()}
	if alpn != ALPNEnroll {
		// NB: an enrollment connection's peer is anonymous whatever it presented.
		peer = pki.PeerFromTLS(cs, conn.RemoteAddr())
	}
	e.log.Debug("quic connection accepted", "peer", peer.Principal, "role", peer.Role, "addr", peer.Addr, "alpn", alpn)
	var active atomic.Int64 // anonymous requests in progress on this connection
	for {
		str, err := conn.AcceptStream(e.ctx)
		if err != nil {
			return
		}
		switch alpn {
		case ALPNRPC:
			e.wg.Add(1)
			go e.serveStream(str, peer, nil)
			continue
		case ALPNEnroll:
			if active.Add(1) > int64(e.anonLim.MaxStreamsPerConn) {
				active.Add(-1)
				e.logRefusal("streams", addrKey(peer.Addr), "refused a stream without a certificate",
					"err", fmt.Sprintf("%d requests in progress on the connection, the most allowed", e.anonLim.MaxStreamsPerConn))
				str.CancelRead(streamRefused)
				str.CancelWrite(streamRefused)
				continue
			}
			e.wg.Add(1)
			go e.serveStream(str, peer, func() { active.Add(-1) })
			continue
		}
		if e.check != nil {
			if err := e.check(e.ctx, peer, "stream:"+alpn); err != nil {
				e.log.Warn("stream refused", "peer", peer.Principal, "addr", peer.Addr, "alpn", alpn, "err", err)
				str.CancelRead(streamRefused)
				str.CancelWrite(streamRefused)
				continue
			}
		}
		e.mu.Lock()
		l := e.mu.listeners[alpn]
		e.mu.Unlock()
		if l == nil || !l.deliver(e.ctx, newStreamConn(str, conn)) {
			str.CancelRead(streamRefused)
			str.CancelWrite(streamRefused)
		}
	}
}

// Abort closes the endpoint the way a crash (kill -9) looks to its peers: the socket is
// closed first, so no CONNECTION_CLOSE leaves and they hear nothing more, then
// everything is released as by Close. Fault tests use it; a running node closes with
// Close.
func (e *Endpoint) Abort() error {
	if err := e.Silence(); err != nil {
		return err
	}
	return e.Close()
}

// Silence closes the endpoint's socket and nothing else: from then on it neither sends
// nor receives, as if its process had died, while its goroutines run on until Close.
// A node crashing in a fault test silences its endpoint before it tears down the rest,
// so that no peer hears of the teardown.
func (e *Endpoint) Silence() error {
	if err := e.udp.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
		return fmt.Errorf("quic: silence: %w", err)
	}
	return nil
}

// Close stops accepting, closes every listener and connection, cancels the contexts of
// running handlers and waits for all goroutines of the endpoint. Handlers that ignore
// their context delay Close. Calling Close again returns nil.
func (e *Endpoint) Close() error {
	e.mu.Lock()
	if e.mu.closed {
		e.mu.Unlock()
		return nil
	}
	e.mu.closed = true
	var conns []*quicgo.Conn
	for c := range e.mu.accepted {
		conns = append(conns, c)
	}
	for _, d := range e.mu.dials {
		select {
		case <-d.ready:
			if d.conn != nil {
				conns = append(conns, d.conn)
			}
		default: // the dial goroutine sees the cancelled context and cleans up
		}
	}
	listeners := make([]*streamListener, 0, len(e.mu.listeners))
	for _, l := range e.mu.listeners {
		listeners = append(listeners, l)
	}
	e.mu.Unlock()

	e.cancel()
	for _, l := range listeners {
		l.Close()
	}
	if e.ln != nil {
		e.ln.Close()
	}
	for _, c := range conns {
		c.CloseWithError(codeClosing, "endpoint closed")
	}
	e.wg.Wait()
	err := e.tr.Close()
	if uerr := e.udp.Close(); err == nil && uerr != nil && !errors.Is(uerr, net.ErrClosed) {
		err = uerr
	}
	if err != nil && !errors.Is(err, net.ErrClosed) {
		return fmt.Errorf("quic: close: %w", err)
	}
	return nil
}
