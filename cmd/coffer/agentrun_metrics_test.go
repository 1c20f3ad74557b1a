package main

import (
	"bytes"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/cofferhq/coffer/node/nodetest"
)

// TestAgentRunMetricsListen: `coffer agent run --metrics-listen ADDR` serves the agent's
// Prometheus series, and a scheduled job the cluster accepted shows in
// coffer_agent_jobs_total{kind="backup",status="completed"}; with --log-format json every
// log line is one JSON object. An address already in use is a usage error (exit 2).
func TestAgentRunMetricsListen(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a cluster")
	}
	h := newAgentHost(t, nodetest.Opts{}, "agent metrics passphrase", []string{"every2s", "--schedule", "*/2 * * * * *"})
	agentEnv := h.agentEnv

	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	if code, _, stderr := cli(t, agentEnv, "agent", "run", "--metrics-listen", busy.Addr().String()); code != exitUsage || !strings.Contains(stderr, "--metrics-listen") {
		t.Fatalf("agent run on a busy address: exit %d: %s", code, stderr)
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	d := startAgentDaemon(agentEnv, "--log-format", "json", "agent", "run", "--max-jitter", "0", "--poll", "1s",
		"--metrics-listen", addr)
	logs := d.logs
	defer func() {
		if code := d.stop(); code != exitOK {
			t.Errorf("agent run stopped with exit %d: %s", code, logs.String())
		}
		for _, line := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
			if !strings.HasPrefix(line, "{") || !strings.HasSuffix(line, "}") {
				t.Errorf("--log-format json: a line that is not one JSON object: %q", line)
			}
		}
	}()

	deadline := time.Now().Add(2 * time.Minute)
	var last string
	for {
		if time.Now().After(deadline) {
			t.Fatalf("no completed backup job in the agent's metrics at %s; last scrape:\n%s\nlogs:\n%s", addr, last, logs.String())
		}
		if completed, body := scrapeAgentJobs(t, addr); completed > 0 {
			break
		} else {
			last = body
		}
		select {
		case <-d.exited:
			t.Fatalf("agent run exited %d: %s", d.code, logs.String())
		case <-time.After(200 * time.Millisecond): // poll interval, not synchronisation
		}
	}
}

// scrapeAgentJobs GETs the agent's metrics and returns the completed backup jobs counted
// (0 when the listener is not up yet) with the body.
func scrapeAgentJobs(t *testing.T, addr string) (float64, string) {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		return 0, string(body)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("agent metrics do not parse: %v\n%s", err, body)
	}
	if _, ok := fams["coffer_agent_backup_read_bytes_total"]; !ok {
		t.Fatalf("agent metrics lack coffer_agent_backup_read_bytes_total:\n%s", body)
	}
	fam, ok := fams["coffer_agent_jobs_total"]
	if !ok {
		return 0, string(body)
	}
	n := 0.0
	for _, m := range fam.GetMetric() {
		labels := map[string]string{}
		for _, l := range m.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		if labels["kind"] == "backup" && labels["status"] == "completed" {
			n += m.GetCounter().GetValue()
		}
	}
	return n, string(body)
}
