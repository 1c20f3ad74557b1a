package quic

import (
	"context"
	"errors"
	"fmt"
	"io"
	"runtime/debug"
	"time"

	quicgo "github.com/quic-go/quic-go"

	"github.com/cofferhq/coffer/transport"
	"github.com/cofferhq/coffer/transport/wire"
)

var _ transport.Caller = (*Endpoint)(nil)

// Call sends one RPC to addr and returns the reply body (owned by the caller). body is not
// retained after Call returns.
//
// It reuses a cached connection to addr, dialing once more when the cached one turns out
// to be dead before the request is written. A non-OK reply comes back as *transport.Error
// with the remote code and message. Failures to dial, to complete the handshake (including
// a refused certificate) or to exchange the frames (reset, closed connection) wrap
// transport.ErrUnreachable. When ctx ends first the stream is cancelled (which cancels the
// handler's context on the server) and the error wraps ctx.Err().
func (e *Endpoint) Call(ctx context.Context, addr, method string, body []byte) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("quic: call %s on %s: %w", method, addr, err)
	}
	alpn := e.rpcALPN()
	for attempt := 0; ; attempt++ {
		str, conn, err := e.openStream(ctx, addr, alpn)
		if err != nil {
			return nil, fmt.Errorf("quic: call %s: %w", method, err)
		}
		reply, written, err := e.watchedRoundTrip(ctx, str, conn, method, body)
		if err == nil {
			return reply, nil
		}
		var te *transport.Error
		if errors.As(err, &te) {
			return nil, err
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("quic: call %s on %s: %w", method, addr, ctx.Err())
		}
		if errors.Is(err, ErrStalled) {
			// NB: not retried here: the connection still looks open, and the same silence
			// would cost the next attempt the same wait. The caller may go elsewhere.
			return nil, fmt.Errorf("quic: call %s on %s: %w", method, addr, err)
		}
		dead := conn.Context().Err() != nil
		if dead {
			e.forget(dialKey{addr, alpn}, conn)
		}
		// NB: retry only when the request never left: a written request may have run.
		if dead && !written && attempt == 0 {
			continue
		}
		return nil, fmt.Errorf("quic: call %s on %s: %w: %w", method, addr, unreachable(err), err)
	}
}

// watchedRoundTrip is roundTrip under the liveness watch of conn (transport.Liveness): a peer
// that answers neither the call nor a probe ends it with an error matching ErrStalled
// and transport.ErrUnreachable. Any answer on the stream counts as hearing from the
// peer. Calls of an identity without a certificate (enrollment) are not watched.
func (e *Endpoint) watchedRoundTrip(ctx context.Context, str *quicgo.Stream, conn *quicgo.Conn, method string, body []byte) ([]byte, bool, error) {
	if e.liveness.Off || e.id.Anonymous() || !transport.LivenessWatched(ctx) {
		return e.roundTrip(ctx, str, method, body)
	}
	var reply []byte
	var written bool
	err := e.live(conn).Watch(ctx, e.liveness, e.prober(conn), str, func(ctx context.Context, rw io.ReadWriter) (bool, error) {
		var err error
		reply, written, err = e.roundTripVia(ctx, str, rw, rw, method, body)
		var te *transport.Error
		return err == nil || errors.As(err, &te), err
	})
	if err != nil {
		return nil, written, err
	}
	return reply, written, nil
}

// rpcALPN is the protocol this endpoint's calls use: ALPNEnroll for an identity without
// a certificate, else ALPNRPC.
func (e *Endpoint) rpcALPN() string {
	if e.id.Anonymous() {
		return ALPNEnroll
	}
	return ALPNRPC
}

// roundTrip writes the request, closes the send side and reads the response. written
// reports whether the whole request frame was handed to the stream.
func (e *Endpoint) roundTrip(ctx context.Context, str *quicgo.Stream, method string, body []byte) (reply []byte, written bool, err error) {
	return e.roundTripVia(ctx, str, str, str, method, body)
}

// roundTripVia is roundTrip writing the request to w and reading the reply from r (str
// itself, or str wrapped to record progress: see progress).
func (e *Endpoint) roundTripVia(ctx context.Context, str *quicgo.Stream, w io.Writer, r io.Reader, method string, body []byte) (reply []byte, written bool, err error) {
	stop := context.AfterFunc(ctx, func() {
		str.CancelWrite(streamCancel)
		str.CancelRead(streamCancel)
	})
	defer stop()
	if err := wire.WriteRequest(w, method, body); err != nil {
		if refusedEarly(str) {
			return refusedAnswer(str, err)
		}
		str.CancelWrite(streamCancel)
		str.CancelRead(streamCancel)
		if errors.Is(err, wire.ErrFrame) {
			// Our own request is malformed (bad method, oversize body): not a network error.
			return nil, false, &transport.Error{Code: transport.Invalid, Msg: err.Error()}
		}
		return nil, false, err
	}
	if err := str.Close(); err != nil {
		if refusedEarly(str) {
			return refusedAnswer(str, err)
		}
		str.CancelRead(streamCancel)
		return nil, false, err
	}
	reply, code, msg, err := readReplyFrom(str, r)
	if err != nil {
		return nil, true, err
	}
	if code != transport.OK {
		return nil, true, &transport.Error{Code: code, Msg: msg}
	}
	return reply, true, nil
}

// readReply reads the response frame and the FIN after it. A read error cancels the
// receive side; an empty error message is filled in from the code.
func readReply(str *quicgo.Stream) (reply []byte, code transport.Code, msg string, err error) {
	return readReplyFrom(str, str)
}

// readReplyFrom is readReply reading through r (str, or str wrapped).
func readReplyFrom(str *quicgo.Stream, r io.Reader) (reply []byte, code transport.Code, msg string, err error) {
	code, msg, reply, err = wire.ReadResponse(r)
	if err != nil {
		str.CancelRead(streamCancel)
		return nil, 0, "", err
	}
	// Consume the FIN so the stream completes on both sides; anything else is a peer bug.
	var one [1]byte
	if n, err := r.Read(one[:]); n != 0 || !errors.Is(err, io.EOF) {
		str.CancelRead(streamCancel)
	}
	if code != transport.OK && msg == "" {
		msg = "transport: " + code.String()
	}
	return reply, code, msg, nil
}

// refusedEarly reports whether the server stopped reading the request with
// streamRefused (which ends our send side's context with that cause): it refused the
// request from its header and answers on the stream.
func refusedEarly(str *quicgo.Stream) bool {
	var se *quicgo.StreamError
	return errors.As(context.Cause(str.Context()), &se) && se.Remote && se.ErrorCode == streamRefused
}

// refusedAnswer reads the answer of a server that refused the request from its header
// (see serveStream): that answer is the outcome, and the handler never ran. When no error
// answer can be read, the stream is cancelled and werr, the failed write, is returned.
func refusedAnswer(str *quicgo.Stream, werr error) (reply []byte, written bool, err error) {
	if _, code, msg, rerr := readReply(str); rerr == nil && code != transport.OK {
		return nil, false, &transport.Error{Code: code, Msg: msg}
	}
	str.CancelWrite(streamCancel)
	str.CancelRead(streamCancel)
	return nil, false, werr
}

// serveStream answers one RPC stream. It reads the request's header first and decides
// on the peer, the method and the announced body length (admit) before it reads any of
// the body; a refused request is answered at once and its receive side cancelled, so its
// body is never read. done, when set, runs when the stream is finished with (anonymous
// streams count against their connection's limit until then).
func (e *Endpoint) serveStream(str *quicgo.Stream, peer transport.Peer, done func()) {
	defer e.wg.Done()
	if done != nil {
		defer done()
	}
	anonymous := peer.Anonymous()
	// The handler's context ends when the endpoint closes or the caller cancels the
	// stream (its STOP_SENDING cancels our send side and so str.Context()).
	ctx, cancel := context.WithCancel(e.ctx)
	defer cancel()
	stop := context.AfterFunc(str.Context(), cancel)
	defer stop()

	readTimeout := requestReadTimeout
	if anonymous {
		readTimeout = e.anonLim.ReadTimeout
	}
	str.SetReadDeadline(time.Now().Add(readTimeout))
	h, err := wire.ReadRequestHeader(str)
	if err == nil && h.Method == pingMethod && h.BodyLen == 0 && !anonymous {
		// A liveness probe (see Liveness), answered by the endpoint itself: before
		// CheckPeer, so probes are neither counted nor logged as requests, and before
		// any handler is installed. It carries nothing and says only that this endpoint
		// reads its connections.
		str.SetReadDeadline(time.Time{})
		e.respond(str, transport.OK, "", nil)
		return
	}
	if err == nil {
		if aerr := e.admit(ctx, peer, h); aerr != nil {
			str.CancelRead(streamRefused)
			e.respond(str, transport.CodeOf(aerr), aerr.Error(), nil)
			return
		}
	}
	var body []byte
	if err == nil {
		body, err = wire.ReadRequestBody(str, h)
	}
	if err != nil {
		if anonymous {
			e.logRefusal("request", addrKey(peer.Addr), "unreadable request without a certificate", "err", err)
		}
		if errors.Is(err, wire.ErrFrame) {
			// A malformed request fails this stream only; the connection keeps serving.
			e.log.Debug("bad request frame", "peer", peer.Principal, "addr", peer.Addr, "err", err)
			str.CancelRead(streamBadReq)
			e.respond(str, transport.Invalid, err.Error(), nil)
			return
		}
		str.CancelRead(streamCancel)
		str.CancelWrite(streamCancel)
		return
	}
	if anonymous {
		// Nothing may follow the request but the FIN: an anonymous peer gets no buffer
		// for more while the handler runs.
		if err := expectEOF(str); err != nil {
			e.logRefusal("request", addrKey(peer.Addr), "unreadable request without a certificate", "err", err)
			str.CancelRead(streamBadReq)
			e.respond(str, transport.Invalid, fmt.Sprintf("quic: %s: %v", h.Method, err), nil)
			return
		}
	}
	str.SetReadDeadline(time.Time{})

	reply, herr := e.invoke(ctx, peer, h.Method, body)
	code := transport.CodeOf(herr)
	msg := ""
	if herr != nil {
		msg = herr.Error()
		reply = nil
	} else if len(reply) > wire.MaxBodyLen {
		code, msg, reply = transport.Internal, fmt.Sprintf("quic: %s: reply of %d bytes exceeds %d", h.Method, len(reply), wire.MaxBodyLen), nil
	}
	e.respond(str, code, msg, reply)
}

// admit decides on a request from its header, before any of its body is read. An
// anonymous peer may call only AnonymousMethods, with a body of at most
// Anonymous.MaxBody bytes (Unauthenticated, Invalid otherwise); an authenticated one is
// served when CheckPeer lets it.
func (e *Endpoint) admit(ctx context.Context, peer transport.Peer, h wire.RequestHeader) error {
	if !peer.Anonymous() {
		if e.check != nil {
			return e.check(ctx, peer, h.Method)
		}
		return nil
	}
	addr := addrKey(peer.Addr)
	if !e.anon[h.Method] {
		e.logRefusal("method", addr, "refused request without a certificate", "method", h.Method)
		return transport.Errorf(transport.Unauthenticated, "quic: %s: a client without a certificate may only enroll", h.Method)
	}
	if h.BodyLen > e.anonLim.MaxBody {
		e.logRefusal("body", addr, "refused request without a certificate", "method", h.Method, "body_len", h.BodyLen)
		return transport.Errorf(transport.Invalid, "quic: %s: a body of %d bytes exceeds the %d allowed to a client without a certificate",
			h.Method, h.BodyLen, e.anonLim.MaxBody)
	}
	return nil
}

// expectEOF reads the end of a request stream: the FIN and nothing else.
func expectEOF(str *quicgo.Stream) error {
	var one [1]byte
	n, err := str.Read(one[:])
	switch {
	case n == 0 && errors.Is(err, io.EOF):
		return nil
	case n > 0:
		return fmt.Errorf("%w: data after the request frame", wire.ErrFrame)
	default:
		return fmt.Errorf("request not closed: %w", err)
	}
}

func (e *Endpoint) respond(str *quicgo.Stream, code transport.Code, msg string, reply []byte) {
	if err := wire.WriteResponse(str, code, msg, reply); err != nil {
		str.CancelWrite(streamCancel)
		return
	}
	str.Close()
}

// invoke runs the handler (once admit let the request in), turning a panic into an
// Internal error so that one bad request cannot take the node down.
func (e *Endpoint) invoke(ctx context.Context, peer transport.Peer, method string, body []byte) (reply []byte, err error) {
	hb := e.handler.Load()
	if hb == nil {
		return nil, transport.Errorf(transport.Unavailable, "quic: %s: no handler installed yet", method)
	}
	defer func() {
		if r := recover(); r != nil {
			e.log.Error("rpc handler panic", "method", method, "peer", peer.Principal, "panic", r, "stack", string(debug.Stack()))
			reply, err = nil, transport.Errorf(transport.Internal, "quic: %s: internal error", method)
		}
	}()
	return hb.h.ServeRPC(ctx, peer, method, body)
}
