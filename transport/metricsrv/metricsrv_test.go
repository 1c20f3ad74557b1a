package metricsrv_test

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cofferhq/coffer/transport/metricsrv"
)

func TestServeAndClose(t *testing.T) {
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "coffer_test_things_total", Help: "Things."})
	reg.MustRegister(c)
	c.Add(3)
	s, err := metricsrv.Start("127.0.0.1:0", reg, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get(s.URL())
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(b), "coffer_test_things_total 3") {
		t.Fatalf("%s: %s", resp.Status, b)
	}
	// Only GET /metrics (and a pointer to it at /) is served.
	resp, err = http.Post(s.URL(), "text/plain", strings.NewReader("x"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST /metrics: %s", resp.Status)
	}
	resp, err = http.Get("http://" + s.Addr() + "/debug/pprof/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET /debug/pprof/: %s", resp.Status)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := http.Get(s.URL()); err == nil {
		t.Error("still serving after Close")
	}
}

func TestStartRefusesBadAddress(t *testing.T) {
	reg := prometheus.NewRegistry()
	if _, err := metricsrv.Start("", reg, nil); err == nil {
		t.Error("empty address accepted")
	}
	s, err := metricsrv.Start("127.0.0.1:0", reg, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(context.Background())
	if _, err := metricsrv.Start(s.Addr(), reg, nil); err == nil || !strings.Contains(err.Error(), s.Addr()) {
		t.Errorf("second listener on %s: %v", s.Addr(), err)
	}
}
