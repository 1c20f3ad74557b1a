package metarpc

import (
	"context"
	"fmt"

	"github.com/cofferhq/coffer/meta"
	"github.com/cofferhq/coffer/transport"
	"github.com/cofferhq/coffer/transport/authz"
)

// Operations methods (meta.RetentionAdmin, meta.AlertAdmin; issue 15).
const (
	MethodRetentionStatus = "meta.RetentionStatus"
	MethodRetentionRun    = "meta.RetentionRun"
	MethodAlertSinkSet    = "meta.AlertSinkSet"
	MethodAlertSinkRemove = "meta.AlertSinkRemove"
	MethodAlertSinks      = "meta.AlertSinks"
	MethodAlerts          = "meta.Alerts"
	MethodAlertTest       = "meta.AlertTest"
)

// opsReq is the request of every operations method: its argument, and the principal
// and forwarding mark of any forwarded request.
type opsReq[T any] struct {
	Arg T               `cbor:"arg"`
	As  *meta.Principal `cbor:"as,omitempty"`
	Fwd bool            `cbor:"fwd,omitempty"`
}

type (
	retentionReports struct {
		Reports []meta.RetentionReport `cbor:"reports"`
	}
	alertSinkList struct {
		Sinks []meta.AlertSink `cbor:"sinks"`
	}
	alertList struct {
		Alerts []meta.Alert `cbor:"alerts"`
	}
)

var (
	_ meta.RetentionAdmin = (*Client)(nil)
	_ meta.AlertAdmin     = (*Client)(nil)
)

// opsRules is the authorization table of the operations methods.
func opsRules() []authz.Rule {
	fwd := authz.If("forwarding a caller's request (checked as that caller)")
	return []authz.Rule{
		{Method: MethodRetentionStatus, Doc: "automatic retention: interval, last round, each vault's latest report",
			Admin: authz.Allow, Node: authz.Allow, Meta: authz.Allow},
		{Method: MethodRetentionRun, Destructive: true, Doc: "apply every vault's stored retention policy now (locks and holds still hold)",
			Admin: authz.Allow, Meta: fwd},
		{Method: MethodAlertSinkSet, Destructive: true, Doc: "add or replace an alert sink (webhook, or a command the meta servers' configuration allows)",
			Admin: authz.Allow, Meta: fwd},
		{Method: MethodAlertSinkRemove, Destructive: true, Doc: "remove an alert sink",
			Admin: authz.Allow, Meta: fwd},
		{Method: MethodAlertSinks, Doc: "list the alert sinks (their URLs may carry tokens)",
			Admin: authz.Allow, Meta: fwd},
		{Method: MethodAlerts, Doc: "list fired alerts and their deliveries (admin alerts, the status page)",
			Admin: authz.Allow, Node: authz.Allow, Meta: authz.Allow},
		{Method: MethodAlertTest, Doc: "raise a test alert and deliver it now",
			Admin: authz.Allow, Meta: fwd},
	}
}

// serveOps runs the operations methods; ok is false for other methods.
func (h *Server) serveOps(ctx context.Context, peer transport.Peer, method string, body []byte) (out, fwd any, err error, ok bool) {
	ret, isRet := h.svc.(meta.RetentionAdmin)
	al, isAlert := h.svc.(meta.AlertAdmin)
	notHere := &transport.Error{Code: transport.UnknownMethod, Msg: fmt.Sprintf("metarpc: %s: not served here", method)}
	switch method {
	case MethodRetentionStatus, MethodRetentionRun:
		if !isRet {
			return nil, nil, notHere, true
		}
	case MethodAlertSinkSet, MethodAlertSinkRemove, MethodAlertSinks, MethodAlerts, MethodAlertTest:
		if !isAlert {
			return nil, nil, notHere, true
		}
	default:
		return nil, nil, nil, false
	}
	switch method {
	case MethodRetentionStatus:
		out, fwd, err = serveOp(h, ctx, peer, body, func(ctx context.Context, _ struct{}) (any, error) { return ret.RetentionStatus(ctx) })
	case MethodRetentionRun:
		out, fwd, err = serveOp(h, ctx, peer, body, func(ctx context.Context, _ struct{}) (any, error) {
			reps, err := ret.RunRetention(ctx)
			return retentionReports{Reports: reps}, err
		})
	case MethodAlertSinkSet:
		out, fwd, err = serveOp(h, ctx, peer, body, func(ctx context.Context, s meta.AlertSink) (any, error) { return al.SetAlertSink(ctx, s) })
	case MethodAlertSinkRemove:
		out, fwd, err = serveOp(h, ctx, peer, body, func(ctx context.Context, name string) (any, error) {
			return empty{}, al.RemoveAlertSink(ctx, name)
		})
	case MethodAlertSinks:
		out, fwd, err = serveOp(h, ctx, peer, body, func(ctx context.Context, _ struct{}) (any, error) {
			sinks, err := al.AlertSinks(ctx)
			return alertSinkList{Sinks: sinks}, err
		})
	case MethodAlerts:
		out, fwd, err = serveOp(h, ctx, peer, body, func(ctx context.Context, f meta.AlertFilter) (any, error) {
			as, err := al.Alerts(ctx, f)
			return alertList{Alerts: as}, err
		})
	case MethodAlertTest:
		out, fwd, err = serveOp(h, ctx, peer, body, func(ctx context.Context, msg string) (any, error) { return al.TestAlert(ctx, msg) })
	}
	return out, fwd, err, true
}

// serveOp decodes an opsReq[T], authenticates its principal and calls fn.
func serveOp[T any](h *Server, ctx context.Context, peer transport.Peer, body []byte, fn func(context.Context, T) (any, error)) (out, fwd any, err error) {
	var r opsReq[T]
	if err := decode(body, &r); err != nil {
		return nil, nil, err
	}
	ctx = h.authenticate(ctx, peer, &r.As)
	out, err = fn(ctx, r.Arg)
	return out, markFwd(&r, &r.Fwd), err
}

// RetentionStatus implements meta.RetentionAdmin.
func (cl *Client) RetentionStatus(ctx context.Context) (meta.RetentionStatus, error) {
	var st meta.RetentionStatus
	err := cl.call(ctx, MethodRetentionStatus, opsReq[struct{}]{}, &st)
	return st, err
}

// RunRetention implements meta.RetentionAdmin.
func (cl *Client) RunRetention(ctx context.Context) ([]meta.RetentionReport, error) {
	var r retentionReports
	err := cl.call(ctx, MethodRetentionRun, opsReq[struct{}]{}, &r)
	return r.Reports, err
}

// SetAlertSink implements meta.AlertAdmin.
func (cl *Client) SetAlertSink(ctx context.Context, s meta.AlertSink) (meta.AlertSink, error) {
	var out meta.AlertSink
	err := cl.call(ctx, MethodAlertSinkSet, opsReq[meta.AlertSink]{Arg: s}, &out)
	return out, err
}

// RemoveAlertSink implements meta.AlertAdmin.
func (cl *Client) RemoveAlertSink(ctx context.Context, name string) error {
	return cl.call(ctx, MethodAlertSinkRemove, opsReq[string]{Arg: name}, &empty{})
}

// AlertSinks implements meta.AlertAdmin.
func (cl *Client) AlertSinks(ctx context.Context) ([]meta.AlertSink, error) {
	var r alertSinkList
	err := cl.call(ctx, MethodAlertSinks, opsReq[struct{}]{}, &r)
	return r.Sinks, err
}

// Alerts implements meta.AlertAdmin.
func (cl *Client) Alerts(ctx context.Context, f meta.AlertFilter) ([]meta.Alert, error) {
	var r alertList
	err := cl.call(ctx, MethodAlerts, opsReq[meta.AlertFilter]{Arg: f}, &r)
	return r.Alerts, err
}

// TestAlert implements meta.AlertAdmin.
func (cl *Client) TestAlert(ctx context.Context, message string) (meta.Alert, error) {
	var a meta.Alert
	err := cl.call(ctx, MethodAlertTest, opsReq[string]{Arg: message}, &a)
	return a, err
}
