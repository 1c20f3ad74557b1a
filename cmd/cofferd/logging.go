package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
)

// Log formats of --log-format.
const (
	logText = "text"
	logJSON = "json"
)

// newLogger returns cofferd's logger: text (key=value) or JSON (one object per line)
// records on w at level and above. Every record of a node carries "node" and a
// "component" (node, meta, raft, gossip, quic, tcp, segstore, pebble, coord, repair,
// rpc, metrics, statuspage); RPC records carry a "request" group. A later attribute of
// the same key replaces an earlier one (a subsystem's component wins over the node's),
// so a JSON object never holds a key twice. Attributes whose key names a secret are
// redacted (see redact).
func newLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: l, ReplaceAttr: redact}
	var h slog.Handler
	switch format {
	case logText:
		h = slog.NewTextHandler(w, opts)
	case logJSON:
		h = slog.NewJSONHandler(w, opts)
	default:
		return nil, fmt.Errorf("--log-format %q: want text or json", format)
	}
	return slog.New(&lastWins{inner: h}), nil
}

// secretWords mark attribute keys whose values are never logged.
func secretWords() []string {
	return []string{"passphrase", "password", "secret", "private", "credential"}
}

// redact replaces the value of an attribute whose key names a secret with "[redacted]".
// Nothing in cofferd logs such a value on purpose; this is the net under a mistake.
func redact(_ []string, a slog.Attr) slog.Attr {
	k := strings.ToLower(a.Key)
	for _, w := range secretWords() {
		if strings.Contains(k, w) {
			return slog.String(a.Key, "[redacted]")
		}
	}
	return a
}

// lastWins is a slog.Handler in front of another that keeps one attribute per key:
// attributes added with WithAttrs replace earlier ones of the same key, and a record's
// own attributes replace those. Groups opened with WithGroup are handed to the inner
// handler as they are (after the collected attributes).
type lastWins struct {
	inner slog.Handler
	attrs []slog.Attr // collected by WithAttrs, one per key
}

func (h *lastWins) Enabled(ctx context.Context, l slog.Level) bool { return h.inner.Enabled(ctx, l) }

func (h *lastWins) Handle(ctx context.Context, r slog.Record) error {
	if len(h.attrs) == 0 {
		return h.inner.Handle(ctx, r)
	}
	own := map[string]bool{}
	r.Attrs(func(a slog.Attr) bool {
		own[a.Key] = true
		return true
	})
	out := slog.NewRecord(r.Time, r.Level, r.Message, r.PC)
	for _, a := range h.attrs {
		if !own[a.Key] {
			out.AddAttrs(a)
		}
	}
	r.Attrs(func(a slog.Attr) bool {
		out.AddAttrs(a)
		return true
	})
	return h.inner.Handle(ctx, out)
}

func (h *lastWins) WithAttrs(attrs []slog.Attr) slog.Handler {
	out := &lastWins{inner: h.inner, attrs: make([]slog.Attr, 0, len(h.attrs)+len(attrs))}
	replaced := map[string]bool{}
	for _, a := range attrs {
		replaced[a.Key] = true
	}
	for _, a := range h.attrs {
		if !replaced[a.Key] {
			out.attrs = append(out.attrs, a)
		}
	}
	out.attrs = append(out.attrs, attrs...)
	return out
}

func (h *lastWins) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	inner := h.inner
	if len(h.attrs) > 0 {
		inner = inner.WithAttrs(h.attrs)
	}
	return &lastWins{inner: inner.WithGroup(name)}
}
