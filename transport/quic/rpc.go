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
		reply, written, err := e.roundTrip(ctx, str, method, body)
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
	stop := context.AfterFunc(ctx, func() {
		str.CancelWrite(streamCancel)
		str.CancelRead(streamCancel)
	})
	defer stop()
	if err := wire.WriteRequest(str, method, body); err != nil {
		str.CancelWrite(streamCancel)
		str.CancelRead(streamCancel)
		if errors.Is(err, wire.ErrFrame) {
			// Our own request is malformed (bad method, oversize body): not a network error.
			return nil, false, &transport.Error{Code: transport.Invalid, Msg: err.Error()}
		}
		return nil, false, err
	}
	if err := str.Close(); err != nil {
		str.CancelRead(streamCancel)
		return nil, false, err
	}
	code, msg, reply, err := wire.ReadResponse(str)
	if err != nil {
		str.CancelRead(streamCancel)
		return nil, true, err
	}
	// Consume the FIN so the stream completes on both sides; anything else is a peer bug.
	var one [1]byte
	if n, err := str.Read(one[:]); n != 0 || !errors.Is(err, io.EOF) {
		str.CancelRead(streamCancel)
	}
	if code != transport.OK {
		if msg == "" {
			msg = "transport: " + code.String()
		}
		return nil, true, &transport.Error{Code: code, Msg: msg}
	}
	return reply, true, nil
}

// serveStream answers one RPC stream.
func (e *Endpoint) serveStream(str *quicgo.Stream, peer transport.Peer) {
	defer e.wg.Done()
	str.SetReadDeadline(time.Now().Add(requestReadTimeout))
	method, body, err := wire.ReadRequest(str)
	if err != nil {
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
	str.SetReadDeadline(time.Time{})
	// The handler's context ends when the endpoint closes or the caller cancels the
	// stream (its STOP_SENDING cancels our send side and so str.Context()).
	ctx, cancel := context.WithCancel(e.ctx)
	defer cancel()
	stop := context.AfterFunc(str.Context(), cancel)
	defer stop()

	reply, herr := e.invoke(ctx, peer, method, body)
	code := transport.CodeOf(herr)
	msg := ""
	if herr != nil {
		msg = herr.Error()
		reply = nil
	} else if len(reply) > wire.MaxBodyLen {
		code, msg, reply = transport.Internal, fmt.Sprintf("quic: %s: reply of %d bytes exceeds %d", method, len(reply), wire.MaxBodyLen), nil
	}
	e.respond(str, code, msg, reply)
}

func (e *Endpoint) respond(str *quicgo.Stream, code transport.Code, msg string, reply []byte) {
	if err := wire.WriteResponse(str, code, msg, reply); err != nil {
		str.CancelWrite(streamCancel)
		return
	}
	str.Close()
}

// invoke runs the handler, turning a panic into an Internal error so that one bad request
// cannot take the node down. An anonymous peer reaches the handler only for
// AnonymousMethods (Unauthenticated otherwise); an authenticated one only when CheckPeer
// lets it.
func (e *Endpoint) invoke(ctx context.Context, peer transport.Peer, method string, body []byte) (reply []byte, err error) {
	if peer.Anonymous() {
		if !e.anon[method] {
			e.log.Warn("refused request without a certificate", "addr", peer.Addr, "method", method)
			return nil, transport.Errorf(transport.Unauthenticated, "quic: %s: a client without a certificate may only enroll", method)
		}
	} else if e.check != nil {
		if err := e.check(ctx, peer, method); err != nil {
			return nil, err
		}
	}
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
