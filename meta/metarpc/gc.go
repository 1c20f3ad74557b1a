package metarpc

import (
	"context"
	"fmt"

	"github.com/cofferhq/coffer/meta"
	"github.com/cofferhq/coffer/transport"
)

// Garbage-collection methods (meta.GCAdmin).
const (
	MethodGCRun    = "meta.GCRun"
	MethodGCStatus = "meta.GCStatus"
)

type (
	gcRunReq struct {
		Opts meta.GCOptions  `cbor:"opts"`
		As   *meta.Principal `cbor:"as,omitempty"`
		Fwd  bool            `cbor:"fwd,omitempty"`
	}
	gcStatusReq struct {
		As  *meta.Principal `cbor:"as,omitempty"`
		Fwd bool            `cbor:"fwd,omitempty"`
	}
)

var _ meta.GCAdmin = (*Client)(nil)

// serveGC runs the meta.GCAdmin methods; ok is false for other methods.
func (h *Server) serveGC(ctx context.Context, peer transport.Peer, method string, body []byte) (out, fwd any, err error, ok bool) {
	switch method {
	case MethodGCRun, MethodGCStatus:
	default:
		return nil, nil, nil, false
	}
	adm, isGC := h.svc.(meta.GCAdmin)
	if !isGC {
		return nil, nil, &transport.Error{Code: transport.UnknownMethod, Msg: fmt.Sprintf("metarpc: %s: not served here", method)}, true
	}
	if method == MethodGCRun {
		var r gcRunReq
		if err := decode(body, &r); err != nil {
			return nil, nil, err, true
		}
		ctx = h.authenticate(ctx, peer, &r.As)
		rep, err := adm.RunGC(ctx, r.Opts)
		return rep, markFwd(&r, &r.Fwd), err, true
	}
	var r gcStatusReq
	if err := decode(body, &r); err != nil {
		return nil, nil, err, true
	}
	ctx = h.authenticate(ctx, peer, &r.As)
	st, err := adm.GCStatus(ctx)
	return st, markFwd(&r, &r.Fwd), err, true
}

// RunGC implements meta.GCAdmin: it runs one collection on the leader and waits for its
// report (admin certificates only).
func (cl *Client) RunGC(ctx context.Context, opts meta.GCOptions) (meta.GCReport, error) {
	var rep meta.GCReport
	err := cl.call(ctx, MethodGCRun, gcRunReq{Opts: opts}, &rep)
	return rep, err
}

// GCStatus implements meta.GCAdmin. Leader is the meta server that answered, the
// leader: chunk nodes use it to check GC orders (gcorder.Check on GCStatus.Order).
func (cl *Client) GCStatus(ctx context.Context) (meta.GCStatus, error) {
	var st meta.GCStatus
	err := cl.call(ctx, MethodGCStatus, gcStatusReq{}, &st)
	return st, err
}
