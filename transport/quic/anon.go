package quic

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	quicgo "github.com/quic-go/quic-go"
)

// Defaults of AnonymousLimits.
const (
	// DefaultAnonMaxBody bounds an anonymous request body. A real enrollment request (a
	// token, a P-256 CSR and a host name) is about 400 bytes; 16 KiB leaves room for long
	// names and added fields and still makes a stalled request cheap to hold.
	DefaultAnonMaxBody = 16 << 10
	// DefaultAnonReadTimeout bounds reading an anonymous request, header and body: a few
	// hundred bytes take one round trip, so this only has to cover a slow link.
	DefaultAnonReadTimeout = 5 * time.Second
	// DefaultAnonStreamsPerConn bounds anonymous requests in progress on one connection;
	// an enrolling agent makes one.
	DefaultAnonStreamsPerConn = 4
	// DefaultAnonConnsPerAddr bounds anonymous connections open at once from one IP
	// address: enough for a few hosts enrolling behind one NAT address.
	DefaultAnonConnsPerAddr = 8
	// DefaultAnonConns bounds anonymous connections open at once in all.
	DefaultAnonConns = 64
	// DefaultAnonLogInterval is how often refusals of one kind from one address are logged.
	DefaultAnonLogInterval = time.Minute

	// maxLogKeys bounds the addresses whose last refusal log time is remembered; past it,
	// refusals from addresses not already remembered are not logged until entries expire.
	maxLogKeys = 4096
)

// AnonymousLimits bound what peers without a certificate (ALPNEnroll) may hold on an
// endpoint before they are refused. Zero fields take the defaults above. Every refusal is
// quick (a handshake alert or a stream reset) and logged at most once per source address
// and kind per LogInterval.
type AnonymousLimits struct {
	// MaxBody bounds a request body; a request announcing more is refused from its header,
	// without its body being read. Default DefaultAnonMaxBody.
	MaxBody int
	// ReadTimeout bounds reading a request frame, header and body; a slower request is
	// reset. Default DefaultAnonReadTimeout.
	ReadTimeout time.Duration
	// MaxStreamsPerConn bounds requests in progress at once on one connection; a stream
	// beyond it is reset at once. Default DefaultAnonStreamsPerConn.
	MaxStreamsPerConn int
	// MaxConnsPerAddr bounds connections open at once from one IP address; a handshake
	// beyond it is refused. Default DefaultAnonConnsPerAddr.
	MaxConnsPerAddr int
	// MaxConns bounds anonymous connections open at once in all; a handshake beyond it is
	// refused. Default DefaultAnonConns.
	MaxConns int
	// LogInterval is how often a refusal of one kind from one address is logged (with the
	// number left unlogged since). Default DefaultAnonLogInterval.
	LogInterval time.Duration
}

func (l AnonymousLimits) withDefaults() (AnonymousLimits, error) {
	if l.MaxBody < 0 || l.ReadTimeout < 0 || l.MaxStreamsPerConn < 0 || l.MaxConnsPerAddr < 0 || l.MaxConns < 0 || l.LogInterval < 0 {
		return l, fmt.Errorf("quic: anonymous limits: negative value in %+v", l)
	}
	if l.MaxBody == 0 {
		l.MaxBody = DefaultAnonMaxBody
	}
	if l.ReadTimeout == 0 {
		l.ReadTimeout = DefaultAnonReadTimeout
	}
	if l.MaxStreamsPerConn == 0 {
		l.MaxStreamsPerConn = DefaultAnonStreamsPerConn
	}
	if l.MaxConnsPerAddr == 0 {
		l.MaxConnsPerAddr = DefaultAnonConnsPerAddr
	}
	if l.MaxConns == 0 {
		l.MaxConns = DefaultAnonConns
	}
	if l.LogInterval == 0 {
		l.LogInterval = DefaultAnonLogInterval
	}
	return l, nil
}

// connInfo rides in every accepted connection's context (quic-go Transport.ConnContext),
// from which the contexts of its TLS handshake and of the connection derive.
type connInfo struct {
	// life is the context ConnContext returned: it ends when the connection does,
	// whether its handshake failed or it closed later. (The handshake's own context,
	// tls.ClientHelloInfo.Context, ends with the handshake.)
	life context.Context
	// anon is set once the handshake admitted the connection as anonymous (ALPNEnroll).
	anon atomic.Bool
}

type connInfoKey struct{}

func withConnInfo(ctx context.Context, _ *quicgo.ClientInfo) (context.Context, error) {
	ci := &connInfo{}
	ci.life = context.WithValue(ctx, connInfoKey{}, ci)
	return ci.life, nil
}

func connInfoOf(ctx context.Context) *connInfo {
	ci, _ := ctx.Value(connInfoKey{}).(*connInfo)
	return ci
}

// allowWindowIncrease keeps anonymous connections at the initial connection flow-control
// window (768 KiB in quic-go), so what quic-go buffers for one of them stays bounded
// however fast its requests are read; authenticated connections grow theirs as usual.
func allowWindowIncrease(conn *quicgo.Conn, _ uint64) bool {
	ci := connInfoOf(conn.Context())
	return ci == nil || !ci.anon.Load()
}

// anonConns counts open anonymous connections, in all and per IP address.
type anonConns struct {
	mu     sync.Mutex
	total  int
	byAddr map[string]int
}

// admitAnonymous decides on a handshake offering only ALPNEnroll, from the ClientHello:
// it is refused when this endpoint serves no anonymous method or when the caps on
// anonymous connections are reached; otherwise the connection takes a slot, given back
// when the connection ends (it closes or its handshake fails).
func (e *Endpoint) admitAnonymous(chi *tls.ClientHelloInfo, remote net.Addr) error {
	addr := addrKey(remote)
	if len(e.anon) == 0 {
		e.logRefusal("handshake", addr, "refused the enrollment protocol: this node serves nothing to clients without a certificate")
		return fmt.Errorf("quic: %s: this node serves nothing to clients without a certificate", ALPNEnroll)
	}
	ci := connInfoOf(chi.Context())
	if ci == nil {
		return fmt.Errorf("quic: %s: connection without accounting state", ALPNEnroll)
	}
	if ci.anon.Load() {
		return nil // a second ClientHello of an admitted connection (after a retry request)
	}
	lim := e.anonLim
	e.anonConns.mu.Lock()
	var err error
	switch {
	case e.anonConns.total >= lim.MaxConns:
		err = fmt.Errorf("quic: %s: %d connections without a certificate are open, the most allowed", ALPNEnroll, lim.MaxConns)
	case e.anonConns.byAddr[addr] >= lim.MaxConnsPerAddr:
		err = fmt.Errorf("quic: %s: %d connections without a certificate are open from %s, the most allowed", ALPNEnroll, lim.MaxConnsPerAddr, addr)
	default:
		e.anonConns.total++
		e.anonConns.byAddr[addr]++
	}
	e.anonConns.mu.Unlock()
	if err != nil {
		e.logRefusal("connections", addr, "refused a connection without a certificate", "err", err)
		return err
	}
	ci.anon.Store(true)
	context.AfterFunc(ci.life, func() {
		e.anonConns.mu.Lock()
		defer e.anonConns.mu.Unlock()
		e.anonConns.total--
		if e.anonConns.byAddr[addr]--; e.anonConns.byAddr[addr] <= 0 {
			delete(e.anonConns.byAddr, addr)
		}
	})
	return nil
}

// addrKey is the IP address of a remote address (the port is the client's to choose).
func addrKey(a net.Addr) string {
	switch a := a.(type) {
	case *net.UDPAddr:
		return a.IP.String()
	case *net.TCPAddr:
		return a.IP.String()
	case nil:
		return "unknown"
	}
	if host, _, err := net.SplitHostPort(a.String()); err == nil {
		return host
	}
	return a.String()
}

// logRefusal logs a refusal of kind from addr at Warn, at most once per (kind, addr)
// per LogInterval, with the number of such refusals not logged since the last line.
func (e *Endpoint) logRefusal(kind, addr, msg string, args ...any) {
	ok, skipped := e.refusals.allow(kind + " " + addr)
	if !ok {
		return
	}
	e.log.Warn(msg, append([]any{"addr", addr, "unlogged_since_last", skipped}, args...)...)
}

// logLimiter lets an event be logged at most once per key per interval. It remembers at
// most maxLogKeys keys; when full of unexpired keys, events of new keys are dropped
// unlogged. Safe for concurrent use.
type logLimiter struct {
	every time.Duration
	now   func() time.Time

	mu   sync.Mutex
	last map[string]*logEntry
}

type logEntry struct {
	at      time.Time
	skipped int
}

func newLogLimiter(every time.Duration, now func() time.Time) *logLimiter {
	return &logLimiter{every: every, now: now, last: make(map[string]*logEntry)}
}

// allow reports whether an event of key may be logged now and, if so, how many events
// of key were suppressed since the last one logged.
func (l *logLimiter) allow(key string) (ok bool, skipped int) {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if ent := l.last[key]; ent != nil {
		if now.Sub(ent.at) < l.every {
			ent.skipped++
			return false, 0
		}
		skipped, ent.at, ent.skipped = ent.skipped, now, 0
		return true, skipped
	}
	if len(l.last) >= maxLogKeys {
		for k, ent := range l.last {
			if now.Sub(ent.at) >= l.every {
				delete(l.last, k)
			}
		}
		if len(l.last) >= maxLogKeys {
			return false, 0
		}
	}
	l.last[key] = &logEntry{at: now}
	return true, 0
}
