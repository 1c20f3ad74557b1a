// Package transport defines the RPC contract every Coffer node and agent speaks: a
// request/response call carrying a method name and an opaque body, authenticated peers,
// and error codes that cross the wire.
//
// The QUIC implementation lives in transport/quic; framing in transport/wire; the Raft
// stream layer in transport/raftlayer; certificates in transport/pki.
package transport

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"
)

// Code classifies an error on the wire. Codes are append-only: never renumber or reuse one.
type Code uint16

// Wire error codes.
const (
	OK               Code = 0
	NotFound         Code = 1
	Exists           Code = 2
	Corrupt          Code = 3
	Locked           Code = 4
	NotLeader        Code = 5
	Unavailable      Code = 6
	Invalid          Code = 7
	PermissionDenied Code = 8
	Internal         Code = 9
	Unauthenticated  Code = 10
	UnknownMethod    Code = 11
	WrongPassphrase  Code = 12
	MissingChunks    Code = 13
	NoSpace          Code = 14
)

// codeNames is immutable: indexed by Code, only ever read.
var codeNames = [...]string{"ok", "not found", "exists", "corrupt", "locked", "not leader",
	"unavailable", "invalid argument", "permission denied", "internal", "unauthenticated",
	"unknown method", "wrong passphrase", "missing chunks", "no space"}

func (c Code) String() string {
	if int(c) < len(codeNames) {
		return codeNames[c]
	}
	return fmt.Sprintf("code(%d)", uint16(c))
}

// Error is an error that carries a wire code. Remote errors arrive as *Error; rpc client
// packages map codes back to their own sentinels (see Error.Is).
type Error struct {
	Code Code
	Msg  string
	// Sentinel, when set, is what errors.Is matches besides the *Error itself. RPC clients
	// set it from the code so errors.Is(err, chunkstore.ErrNotFound) works across the wire.
	Sentinel error
}

func (e *Error) Error() string {
	if e.Msg == "" {
		return "transport: " + e.Code.String()
	}
	return e.Msg
}

// Unwrap exposes the mapped sentinel.
func (e *Error) Unwrap() error { return e.Sentinel }

// Errorf builds an *Error with a code.
func Errorf(code Code, format string, args ...any) error {
	return &Error{Code: code, Msg: fmt.Sprintf(format, args...)}
}

// CodeOf returns the code carried by err: OK for nil, the *Error's code when err wraps one,
// otherwise Internal. Servers use it together with a package's own sentinel table.
func CodeOf(err error) Code {
	if err == nil {
		return OK
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return Internal
}

// SentinelTable maps sentinels to codes for one package's errors; rpc adapters use it in
// both directions.
type SentinelTable []struct {
	Err  error
	Code Code
}

// Code returns the code for err: the first sentinel err matches, else CodeOf(err).
func (t SentinelTable) Code(err error) Code {
	for _, s := range t {
		if errors.Is(err, s.Err) {
			return s.Code
		}
	}
	return CodeOf(err)
}

// Wrap turns a remote *Error into one that also matches the sentinel for its code.
// Other errors are returned unchanged.
func (t SentinelTable) Wrap(err error) error {
	var e *Error
	if !errors.As(err, &e) {
		return err
	}
	for _, s := range t {
		if s.Code == e.Code {
			return &Error{Code: e.Code, Msg: e.Msg, Sentinel: s.Err}
		}
	}
	return err
}

// Role is what a peer's certificate lets it be.
type Role string

// Roles carried in certificates (the OU field).
const (
	// RoleNode is a chunk node: shard traffic only.
	RoleNode Role = "node"
	// RoleMeta is a meta server: a node that may also speak Raft, forward requests on a
	// principal's behalf, give GC orders and write the cluster map, when it is a server in
	// the current Raft configuration. Chunk nodes never hold a meta certificate.
	RoleMeta  Role = "meta"
	RoleAdmin Role = "admin"
	RoleAgent Role = "agent"
	// RoleRestore is a restore operator: it reads snapshots (of its vaults, when the
	// certificate names any) and changes nothing.
	RoleRestore Role = "restore-operator"
	// RoleReplication is a replication job of another cluster (issue 19): it reads the
	// sealed chunks, snapshot records, locks, holds and key wraps of the vaults its
	// certificate names (never of others; a certificate naming none reads nothing) and
	// changes nothing.
	RoleReplication Role = "replication"
)

// IsNode reports whether r is a cluster node's role (a chunk node or a meta server):
// the roles that may serve as TLS servers and carry node-to-node traffic.
func (r Role) IsNode() bool { return r == RoleNode || r == RoleMeta }

// Peer is the authenticated caller of an RPC, taken from its verified client certificate.
type Peer struct {
	Principal string // certificate common name
	Role      Role   // certificate organisational unit
	// Vaults limits an agent or restore operator to these vaults (the certificate's
	// "coffer:vault:NAME" URI SANs); empty means every vault.
	Vaults []string
	Addr   net.Addr
	// Serial is the certificate's serial number in lower-case hex without leading
	// zeros (empty for a peer without a certificate); revocation by serial matches it.
	Serial string
	// Issued is the certificate's NotBefore; revocation by principal refuses
	// certificates issued before the revocation.
	Issued time.Time
}

// Anonymous reports whether the peer presented no certificate (an enrolling agent on the
// enrollment protocol). Such a peer may call only the methods its endpoint allows
// anonymous callers; everything else is answered Unauthenticated.
func (p Peer) Anonymous() bool { return p.Principal == "" && p.Role == "" }

// PeerCheck decides, before each request is dispatched, whether an authenticated peer
// may still be served (for example that its certificate is not revoked). A non-nil error
// (a *Error, normally PermissionDenied) is the caller's answer. It is called for every
// request on every connection, so a decision made after a connection opened still
// applies to it; it must be fast and safe for concurrent use.
type PeerCheck func(ctx context.Context, peer Peer, method string) error

// Handler serves one RPC. The body slice is owned by the handler for the call's duration
// only; the returned slice is owned by the transport afterwards. A returned error is sent
// to the caller as its Code (via CodeOf) and message.
type Handler interface {
	ServeRPC(ctx context.Context, peer Peer, method string, body []byte) ([]byte, error)
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(ctx context.Context, peer Peer, method string, body []byte) ([]byte, error)

// ServeRPC calls f.
func (f HandlerFunc) ServeRPC(ctx context.Context, peer Peer, method string, body []byte) ([]byte, error) {
	return f(ctx, peer, method, body)
}

// Caller makes RPCs to a node by its address ("host:port"). Safe for concurrent use.
// Remote failures come back as *Error; connection failures as errors matching
// ErrUnreachable.
type Caller interface {
	Call(ctx context.Context, addr, method string, body []byte) ([]byte, error)
}

// ErrUnreachable marks failures to reach a peer (dial, handshake, reset).
var ErrUnreachable = errors.New("transport: peer unreachable")

// ErrRefused marks a TLS handshake that one side refused: a certificate not signed by the
// cluster CA, expired, or of the wrong role. It always comes together with ErrUnreachable,
// and unlike other unreachable errors it is not worth retrying elsewhere: every node of
// the cluster would refuse the same certificate.
var ErrRefused = errors.New("transport: tls handshake refused")

// ErrStalled marks a call abandoned because its peer answered neither the call nor a
// liveness probe in time (a crashed, paused or cut-off node). It always comes together
// with ErrUnreachable: another node may answer where this one did not. The request may
// have run on the peer.
var ErrStalled = errors.New("transport: peer stalled")

// livenessOffKey marks a context whose calls are not watched for liveness.
type livenessOffKey struct{}

// WithoutLivenessWatch returns ctx marked so that calls made with it are not ended by the
// transport's liveness watch (Liveness): they wait for their answer, their context or
// the connection's failure. Callers that hedge (ask another node after a delay and take
// the first answer) use it: a probe that times out on a starved machine would turn their
// slow answers into failures, and the hedge already routes around a silent peer.
func WithoutLivenessWatch(ctx context.Context) context.Context {
	return context.WithValue(ctx, livenessOffKey{}, true)
}

// LivenessWatched reports whether calls made with ctx are watched for liveness.
func LivenessWatched(ctx context.Context) bool {
	off, _ := ctx.Value(livenessOffKey{}).(bool)
	return !off
}
