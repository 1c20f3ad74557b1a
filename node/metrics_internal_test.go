package node

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/cofferhq/coffer/chunkstore"
	"github.com/cofferhq/coffer/chunkstore/chunkrpc"
	"github.com/cofferhq/coffer/transport"
	"github.com/cofferhq/coffer/transport/authz"
)

// TestInstrumentWarnsOnFullDisk: a shard.Put refused for a full disk is logged at warn
// level with code "no space" (not hidden at debug) and counted as no_space.
func TestInstrumentWarnsOnFullDisk(t *testing.T) {
	table, err := authz.NewTable()
	if err != nil {
		t.Fatal(err)
	}
	m := &nodeMetrics{
		rpcDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "d"}, []string{"method"}),
		rpcErrors:   prometheus.NewCounterVec(prometheus.CounterOpts{Name: "e"}, []string{"method", "code"}),
	}
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	full := fmt.Errorf("segstore: put shards: %w: no space left on device", chunkstore.ErrNoSpace)
	h := m.instrument(table, transport.HandlerFunc(func(context.Context, transport.Peer, string, []byte) ([]byte, error) {
		return nil, &transport.Error{Code: chunkrpc.Sentinels.Code(full), Msg: full.Error()}
	}), log)
	if _, err := h.ServeRPC(context.Background(), transport.Peer{}, "shard.Put", nil); err == nil {
		t.Fatal("no error")
	}
	out := logs.String()
	if !strings.Contains(out, "level=WARN") || !strings.Contains(out, `request.code="no space"`) || !strings.Contains(out, "disk full") {
		t.Fatalf("log %q, want a warning with code \"no space\" saying disk full", out)
	}
	var d dto.Metric
	if err := m.rpcErrors.WithLabelValues("other", "no_space").Write(&d); err != nil {
		t.Fatal(err)
	}
	if n := d.GetCounter().GetValue(); n != 1 {
		t.Fatalf("no_space errors counted %v, want 1", n)
	}
}
