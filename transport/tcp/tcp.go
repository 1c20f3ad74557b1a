// Package tcp carries RPCs between nodes over TCP with mutual TLS 1.3: the same frames
// (transport/wire), certificates (transport/pki) and Handler as transport/quic, for
// node-to-node shard traffic. quic-go costs about 3.8x the CPU per byte of TCP+TLS on the
// machines we measured (docs/benchmarks.md, transport stage), and shard traffic is 1.5x the
// bytes agents send, so nodes move shards over TCP; agents and admins stay on QUIC.
//
// Only node certificates are served: any other role is refused at the handshake. A
// connection carries one RPC at a time (request frame, response frame); concurrency comes
// from a small pool of connections per peer, reused while idle.
package tcp

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime/debug"
	"sync"
	"time"

	"github.com/cofferhq/coffer/transport"
	"github.com/cofferhq/coffer/transport/pki"
	"github.com/cofferhq/coffer/transport/wire"
)

// ALPN is the TLS application protocol of node-to-node RPC over TCP.
const ALPN = "coffer-node-tcp/1"

const (
	dialTimeout      = 3 * time.Second
	handshakeTimeout = 6 * time.Second
	// serverIdle closes a connection that brings no request for this long; clients drop
	// idle connections well before (clientIdle), so they never write into one the server
	// is closing, except across a server restart (handled by one retry).
	serverIdle         = 5 * time.Minute
	clientIdle         = time.Minute
	requestReadTimeout = 2 * time.Minute
	// DefaultMaxIdle is how many idle connections per peer a client keeps.
	DefaultMaxIdle = 16
)

// ErrClosed is returned (wrapped, with transport.ErrUnreachable) by calls on a closed
// Endpoint.
var ErrClosed = errors.New("tcp: endpoint closed")

// Config configures an Endpoint.
type Config struct {
	// ListenAddr is the TCP address to listen on; empty makes a client-only endpoint.
	ListenAddr string
	// Identity is this node's certificate and the cluster CA. Required; servers require
	// it to be a node certificate's peers.
	Identity *pki.Identity
	Logger   *slog.Logger
	// Handler serves RPCs; nil answers Unavailable until SetHandler.
	Handler transport.Handler
	// MaxIdle is the idle connections kept per peer; 0 means DefaultMaxIdle.
	MaxIdle int
	// CheckPeer, when set, runs before every request (as in transport/quic), once its
	// header is read and before its body is; its error is the answer, the handler is not
	// called and the body is read into nothing. Nodes refuse revoked certificates here.
	CheckPeer transport.PeerCheck
	// Liveness is how calls notice a peer that stopped answering (transport.Liveness):
	// the peer is watched across all its connections, and a probe is a ping on another
	// pooled or new connection. Zero fields take the defaults.
	Liveness transport.Liveness
}

// Endpoint is a TCP+TLS RPC server and client. It implements transport.Caller. Safe for
// concurrent use; Close waits for every goroutine it started.
type Endpoint struct {
	log     *slog.Logger
	id      *pki.Identity
	check   transport.PeerCheck
	ln      net.Listener
	client  *tls.Config
	server  *tls.Config
	maxIdle int
	// liveness is Config.Liveness with defaults filled in.
	liveness transport.Liveness

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu struct {
		sync.Mutex
		closed  bool
		handler transport.Handler
		idle    map[string][]idleConn
		open    map[net.Conn]struct{}      // every live connection, both directions
		live    map[string]*transport.Live // peers calls have gone to
	}
}

type idleConn struct {
	c     *tls.Conn
	since time.Time
}

var _ transport.Caller = (*Endpoint)(nil)

// New starts an endpoint (listening when cfg.ListenAddr is set).
func New(cfg Config) (*Endpoint, error) {
	if cfg.Identity == nil {
		return nil, errors.New("tcp: new endpoint: Config.Identity is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.MaxIdle <= 0 {
		cfg.MaxIdle = DefaultMaxIdle
	}
	liveness, err := cfg.Liveness.WithDefaults()
	if err != nil {
		return nil, fmt.Errorf("tcp: new endpoint: %w", err)
	}
	e := &Endpoint{log: cfg.Logger.With("component", "tcp"), id: cfg.Identity, maxIdle: cfg.MaxIdle, check: cfg.CheckPeer, liveness: liveness,
		client: cfg.Identity.ClientTLS(ALPN)}
	srv := cfg.Identity.ServerTLS(ALPN)
	verify := srv.VerifyConnection
	srv.VerifyConnection = func(cs tls.ConnectionState) error {
		if verify != nil {
			if err := verify(cs); err != nil {
				return err
			}
		}
		if p := pki.PeerFromTLS(cs, nil); !p.Role.IsNode() {
			return fmt.Errorf("tcp: %s %q: node-to-node transport, node certificates only", p.Role, p.Principal)
		}
		return nil
	}
	e.server = srv
	e.mu.handler = cfg.Handler
	e.mu.idle = map[string][]idleConn{}
	e.mu.open = map[net.Conn]struct{}{}
	e.mu.live = map[string]*transport.Live{}
	e.ctx, e.cancel = context.WithCancel(context.Background())
	if cfg.ListenAddr != "" {
		ln, err := net.Listen("tcp", cfg.ListenAddr)
		if err != nil {
			e.cancel()
			return nil, fmt.Errorf("tcp: listen %s: %w", cfg.ListenAddr, err)
		}
		e.ln = ln
		e.wg.Add(1)
		go e.acceptLoop()
	}
	return e, nil
}

// Addr is the listening address ("" for a client-only endpoint).
func (e *Endpoint) Addr() string {
	if e.ln == nil {
		return ""
	}
	return e.ln.Addr().String()
}

// SetHandler installs the RPC handler; calls already running keep the old one.
func (e *Endpoint) SetHandler(h transport.Handler) {
	e.mu.Lock()
	e.mu.handler = h
	e.mu.Unlock()
}

func (e *Endpoint) track(c net.Conn) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.mu.closed {
		return false
	}
	e.mu.open[c] = struct{}{}
	return true
}

func (e *Endpoint) untrack(c net.Conn) {
	e.mu.Lock()
	delete(e.mu.open, c)
	e.mu.Unlock()
}

func (e *Endpoint) acceptLoop() {
	defer e.wg.Done()
	for {
		c, err := e.ln.Accept()
		if err != nil {
			if e.ctx.Err() == nil {
				e.log.Warn("tcp accept stopped", "err", err)
			}
			return
		}
		if !e.track(c) {
			c.Close()
			return
		}
		e.wg.Add(1)
		go e.serveConn(c)
	}
}

// serveConn runs the handshake, then answers requests one after another until the peer
// closes, goes idle for serverIdle, or sends a malformed frame. Each request's header is
// read first and CheckPeer decides on it before any of the body is read: a refused request
// is answered at once, and its body then read through a small buffer and dropped (TCP
// cannot skip it), so that the connection stays usable.
func (e *Endpoint) serveConn(raw net.Conn) {
	defer e.wg.Done()
	defer e.untrack(raw)
	defer raw.Close()
	if tc, ok := raw.(*net.TCPConn); ok {
		_ = tc.SetNoDelay(true)
	}
	c := tls.Server(raw, e.server)
	hctx, cancel := context.WithTimeout(e.ctx, handshakeTimeout)
	err := c.HandshakeContext(hctx)
	cancel()
	if err != nil {
		e.log.Debug("tcp handshake refused", "addr", raw.RemoteAddr(), "err", err)
		return
	}
	peer := pki.PeerFromTLS(c.ConnectionState(), raw.RemoteAddr())
	for {
		_ = c.SetReadDeadline(time.Now().Add(serverIdle))
		h, err := wire.ReadRequestHeader(c)
		var body []byte
		if err == nil && h.Method == pingMethod && h.BodyLen == 0 {
			// A liveness probe (see Liveness), answered by the endpoint itself, before
			// CheckPeer and whatever handler is installed.
			_ = c.SetWriteDeadline(time.Now().Add(requestReadTimeout))
			if err := wire.WriteResponse(c, transport.OK, "", nil); err != nil {
				return
			}
			continue
		}
		if err == nil {
			_ = c.SetReadDeadline(time.Now().Add(requestReadTimeout))
			if e.check != nil {
				if cerr := e.check(e.ctx, peer, h.Method); cerr != nil {
					if !e.refuse(c, h, cerr) {
						return
					}
					continue
				}
			}
			body, err = wire.ReadRequestBody(c, h)
		}
		if err != nil {
			if !errors.Is(err, io.EOF) && e.ctx.Err() == nil {
				e.log.Debug("tcp read request", "peer", peer.Principal, "err", err)
				if errors.Is(err, wire.ErrFrame) {
					_ = c.SetWriteDeadline(time.Now().Add(requestReadTimeout))
					_ = wire.WriteResponse(c, transport.Invalid, err.Error(), nil)
				}
			}
			return
		}
		method := h.Method
		reply, herr := e.invoke(peer, method, body)
		code := transport.CodeOf(herr)
		msg := ""
		if herr != nil {
			msg, reply = herr.Error(), nil
		} else if len(reply) > wire.MaxBodyLen {
			code, msg, reply = transport.Internal, fmt.Sprintf("tcp: %s: reply of %d bytes exceeds %d", method, len(reply), wire.MaxBodyLen), nil
		}
		_ = c.SetWriteDeadline(time.Now().Add(requestReadTimeout))
		if err := wire.WriteResponse(c, code, msg, reply); err != nil {
			return
		}
	}
}

// refuse answers a request that CheckPeer refused from its header with that error, then
// reads its body into nothing (under the read deadline already set). It reports whether
// the connection can carry the next request.
func (e *Endpoint) refuse(c *tls.Conn, h wire.RequestHeader, cerr error) bool {
	_ = c.SetWriteDeadline(time.Now().Add(requestReadTimeout))
	if err := wire.WriteResponse(c, transport.CodeOf(cerr), cerr.Error(), nil); err != nil {
		return false
	}
	if _, err := io.CopyN(io.Discard, c, int64(h.BodyLen)); err != nil {
		e.log.Debug("tcp refused request: body not sent", "method", h.Method, "err", err)
		return false
	}
	return true
}

// invoke runs the handler (once CheckPeer let the request in), turning a panic into an
// Internal error.
func (e *Endpoint) invoke(peer transport.Peer, method string, body []byte) (reply []byte, err error) {
	e.mu.Lock()
	h := e.mu.handler
	e.mu.Unlock()
	if h == nil {
		return nil, transport.Errorf(transport.Unavailable, "tcp: %s: no handler installed yet", method)
	}
	defer func() {
		if r := recover(); r != nil {
			e.log.Error("rpc handler panic", "method", method, "peer", peer.Principal, "panic", r, "stack", string(debug.Stack()))
			reply, err = nil, transport.Errorf(transport.Internal, "tcp: %s: internal error", method)
		}
	}()
	return h.ServeRPC(e.ctx, peer, method, body)
}

// Call sends one RPC to the node at addr over a pooled or new connection. A non-OK reply
// is a *transport.Error; dial, handshake and I/O failures wrap transport.ErrUnreachable
// (and transport.ErrRefused for a refused certificate). A request on a reused idle
// connection that the peer had closed is sent again once on a new connection.
func (e *Endpoint) Call(ctx context.Context, addr, method string, body []byte) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("tcp: call %s on %s: %w", method, addr, err)
	}
	for attempt := 0; ; attempt++ {
		c, reused, err := e.conn(ctx, addr)
		if err != nil {
			return nil, fmt.Errorf("tcp: call %s on %s: %w", method, addr, err)
		}
		reply, answered, err := e.watchedRoundTrip(ctx, addr, c, method, body)
		if err == nil {
			e.release(addr, c)
			return reply, nil
		}
		var te *transport.Error
		if errors.As(err, &te) {
			if answered {
				e.release(addr, c)
			} else {
				e.drop(c)
			}
			return nil, err
		}
		e.drop(c)
		if ctx.Err() != nil {
			return nil, fmt.Errorf("tcp: call %s on %s: %w", method, addr, ctx.Err())
		}
		if errors.Is(err, transport.ErrStalled) {
			return nil, fmt.Errorf("tcp: call %s on %s: %w", method, addr, err)
		}
		if reused && !answered && attempt == 0 {
			continue
		}
		return nil, fmt.Errorf("tcp: call %s on %s: %w: %w", method, addr, transport.ErrUnreachable, err)
	}
}

// roundTrip writes the request and reads the response. answered reports that a whole
// response frame arrived (the connection is then reusable).
func (e *Endpoint) roundTrip(ctx context.Context, c *tls.Conn, method string, body []byte) (reply []byte, answered bool, err error) {
	return e.roundTripVia(ctx, c, c, method, body)
}

// roundTripVia is roundTrip over rw: c itself, or c wrapped to record progress.
func (e *Endpoint) roundTripVia(ctx context.Context, c *tls.Conn, rw io.ReadWriter, method string, body []byte) (reply []byte, answered bool, err error) {
	dl, ok := ctx.Deadline()
	if !ok {
		dl = time.Time{}
	}
	_ = c.SetDeadline(dl)
	stop := context.AfterFunc(ctx, func() { _ = c.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if err := wire.WriteRequest(rw, method, body); err != nil {
		if errors.Is(err, wire.ErrFrame) {
			return nil, false, &transport.Error{Code: transport.Invalid, Msg: err.Error()}
		}
		return nil, false, err
	}
	code, msg, reply, err := wire.ReadResponse(rw)
	if err != nil {
		return nil, false, err
	}
	if code != transport.OK {
		if msg == "" {
			msg = "transport: " + code.String()
		}
		return nil, true, &transport.Error{Code: code, Msg: msg}
	}
	return reply, true, nil
}

// conn returns an idle connection to addr (reused) or dials one.
func (e *Endpoint) conn(ctx context.Context, addr string) (*tls.Conn, bool, error) {
	now := time.Now()
	e.mu.Lock()
	if e.mu.closed {
		e.mu.Unlock()
		return nil, false, fmt.Errorf("%w: %w", transport.ErrUnreachable, ErrClosed)
	}
	pool := e.mu.idle[addr]
	for len(pool) > 0 {
		ic := pool[len(pool)-1]
		pool = pool[:len(pool)-1]
		if now.Sub(ic.since) < clientIdle {
			e.mu.idle[addr] = pool
			e.mu.Unlock()
			return ic.c, true, nil
		}
		delete(e.mu.open, ic.c)
		ic.c.Close()
	}
	e.mu.idle[addr] = pool
	e.mu.Unlock()

	d := net.Dialer{Timeout: dialTimeout}
	raw, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, false, fmt.Errorf("%w: dial: %w", transport.ErrUnreachable, err)
	}
	if tc, ok := raw.(*net.TCPConn); ok {
		_ = tc.SetNoDelay(true)
	}
	c := tls.Client(raw, e.client)
	hctx, cancel := context.WithTimeout(ctx, handshakeTimeout)
	err = c.HandshakeContext(hctx)
	cancel()
	if err != nil {
		raw.Close()
		var ae tls.AlertError
		var ce *tls.CertificateVerificationError
		if errors.As(err, &ae) || errors.As(err, &ce) {
			return nil, false, fmt.Errorf("%w: %w: handshake: %w", transport.ErrUnreachable, transport.ErrRefused, err)
		}
		return nil, false, fmt.Errorf("%w: handshake: %w", transport.ErrUnreachable, err)
	}
	if !e.track(c) {
		c.Close()
		return nil, false, fmt.Errorf("%w: %w", transport.ErrUnreachable, ErrClosed)
	}
	return c, false, nil
}

// release returns a connection to the idle pool (or closes it when the pool is full).
func (e *Endpoint) release(addr string, c *tls.Conn) {
	_ = c.SetDeadline(time.Time{})
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.mu.closed || len(e.mu.idle[addr]) >= e.maxIdle {
		delete(e.mu.open, c)
		c.Close()
		return
	}
	e.mu.idle[addr] = append(e.mu.idle[addr], idleConn{c: c, since: time.Now()})
}

func (e *Endpoint) drop(c *tls.Conn) {
	e.untrack(c)
	c.Close()
}

// Close stops listening, closes every connection and waits for the server goroutines.
// Handlers see their context cancelled. Calling Close again returns nil.
func (e *Endpoint) Close() error {
	e.mu.Lock()
	if e.mu.closed {
		e.mu.Unlock()
		return nil
	}
	e.mu.closed = true
	conns := make([]net.Conn, 0, len(e.mu.open))
	for c := range e.mu.open {
		conns = append(conns, c)
	}
	e.mu.idle = nil
	e.mu.Unlock()
	e.cancel()
	var err error
	if e.ln != nil {
		err = e.ln.Close()
	}
	for _, c := range conns {
		c.Close()
	}
	e.wg.Wait()
	if err != nil && !errors.Is(err, net.ErrClosed) {
		return fmt.Errorf("tcp: close: %w", err)
	}
	return nil
}
