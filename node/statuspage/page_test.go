package statuspage

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/cofferhq/coffer/meta"
	"github.com/cofferhq/coffer/placement"
)

// sampleView is a view with every section filled, for the rendering tests.
func sampleView() View {
	m := placement.Map{Epoch: 3, PGCount: 8}
	reps := []placement.PGHealth{
		{PG: 0, Epoch: 3, Reporter: "chunk-1", N: 6, MinHealthy: 6},
		{PG: 1, Epoch: 3, Reporter: "chunk-2", N: 6, MinHealthy: 5, Degraded: 2},
		{PG: 2, Epoch: 2, Reporter: "chunk-2", N: 6, MinHealthy: 5, Degraded: 1, Reason: "owner down: chunk-4"}, // an older epoch's report
		{PG: 3, Epoch: 3, Reporter: "chunk-3", N: 6, MinHealthy: 6, Inconsistent: 1},
		{PG: 4, Epoch: 3, Reporter: "chunk-1", N: 6, MinHealthy: 6},
		{PG: 5, Epoch: 3, Reporter: "chunk-1", N: 6, MinHealthy: 6, Misplaced: 3},
		{PG: 6, Epoch: 3, Reporter: "chunk-1", N: 6, MinHealthy: 6},
	}
	v := View{
		Node: "meta-1", Generated: t0.Add(time.Hour), MapEpoch: 3, PGCount: 8, Profile: "4+2",
		Raft: meta.RaftStatus{Leader: "meta-1", Term: 2, CommitIndex: 40},
		Nodes: []NodeRow{
			{ID: "chunk-1", Addr: "127.0.0.1:1", Roles: []string{"chunk"}, Up: true, MapState: "active", Bytes: 1 << 30, Capacity: 4 << 30},
			{ID: "chunk-<b>2</b>", Addr: "127.0.0.1:2", Roles: []string{"chunk"}, MapState: "active", Error: "timeout"},
		},
		PGs:         SummarisePGs(m, reps),
		SampleEvery: time.Minute,
		Jobs: JobSection{From: t0, To: t0.Add(time.Hour), Jobs: []Job{
			{ID: "j1", Name: "web-1", Kind: "backup", Status: meta.JobCompleted, Start: t0, End: t0.Add(5 * time.Minute), Bytes: 5 << 20},
			{ID: "j2", Name: "db-1", Kind: "backup", Status: meta.JobFailed, Start: t0.Add(10 * time.Minute), End: t0.Add(11 * time.Minute), Error: "hook failed"},
			{ID: "j3", Name: "db-1", Kind: "backup", Status: meta.JobRunning, Start: t0.Add(50 * time.Minute), Anomaly: "changed 80% of files"},
		}},
		Alerts: AlertSection{Alerts: []Alert{{Time: t0, Severity: "critical", Name: "PGDegraded", Message: "1 PG degraded"}}},
		Audit:  AuditSection{Entries: []meta.AuditEntry{{Seq: 7, Time: t0, Principal: "dev-admin", Role: meta.RoleAdmin, Action: "vault create", Outcome: meta.AuditOK}}},
	}
	for i := range 10 {
		v.History = append(v.History, Sample{Time: t0.Add(time.Duration(i) * time.Minute), Used: int64(i) << 20, Capacity: 8 << 30, NodesUp: 1, NodesDown: 1})
	}
	return v
}

func TestSummarisePGs(t *testing.T) {
	sec := sampleView().PGs
	want := map[string]int{"healthy": 3, "backfilling": 1, "degraded": 2, "inconsistent": 1, "unreadable": 0, "unknown": 1}
	if len(sec.Counts) != len(PGStates()) {
		t.Fatalf("counts %v: want every state", sec.Counts)
	}
	for _, c := range sec.Counts {
		if c.N != want[c.State] {
			t.Errorf("%s: %d, want %d", c.State, c.N, want[c.State])
		}
	}
	if len(sec.Problems) != 5 || sec.Problems[0].PG != 1 || sec.Problems[1].State != "degraded (owner down: chunk-4)" || sec.Problems[4].State != "unknown" {
		t.Errorf("problems %+v: want PGs 1, 2, 3, 5, 7 with PG 2 degraded with its reason (an older epoch's report still counts) and PG 7 unknown (no report)", sec.Problems)
	}
	many := SummarisePGs(placement.Map{Epoch: 1, PGCount: MaxProblems + 7}, nil)
	if len(many.Problems) != MaxProblems || many.More != 7 {
		t.Errorf("%d problems and %d more, want %d and 7", len(many.Problems), many.More, MaxProblems)
	}
}

func TestRenderShowsEverySection(t *testing.T) {
	p, err := NewPage()
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if err := p.Render(&b, sampleView()); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		`id="nodes"`, `id="pgs"`, `id="capacity"`, `id="throughput"`, `id="jobs"`, `id="alerts"`, `id="audit"`,
		"chunk-1", "1 of 2 nodes up", `class="num pg-degraded">2<`, `class="num pg-unknown">1<`,
		"✕<title>failed: backup, hook failed</title>", "⚠ changed 80% of files", "PGDegraded", "dev-admin",
		"10 samples, one every 1m0s", "<polyline", "Stored 9.0 MiB of 8.0 GiB (&lt;1%). The capacity line is left out",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("page lacks %q", want)
		}
	}
	if strings.Contains(out, "<b>2</b>") || !strings.Contains(out, "chunk-&lt;b&gt;2&lt;/b&gt;") {
		t.Error("a node name's markup was not escaped")
	}
	if strings.Contains(out, "<script") {
		t.Error("the page carries a script")
	}
}

func TestCapacityLineShownFromATenth(t *testing.T) {
	v := View{History: []Sample{{Time: t0, Used: 99, Capacity: 1000}, {Time: t0.Add(time.Minute), Used: 100, Capacity: 1000}}}
	if !strings.Contains(string(CapacityChart(v)), ">capacity<") {
		t.Error("capacity line missing at 10% use")
	}
	v.History = v.History[:1]
	if strings.Contains(string(CapacityChart(v)), ">capacity<") {
		t.Error("capacity line drawn below 10% use")
	}
}

func TestRenderEmptyAndFailedSections(t *testing.T) {
	p, err := NewPage()
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	v := View{Node: "chunk-1", RaftError: "no leader", PGs: PGSection{Error: "pg health: unavailable"},
		Jobs: JobSection{Note: "this cluster keeps no job records"}, Audit: AuditSection{Note: "audit entries are shown by meta nodes"}}
	if err := p.Render(&b, v); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{"no leader", "pg health: unavailable", "this cluster keeps no job records",
		"no jobs in this window", "no samples yet", "No alerts.", "audit entries are shown by meta nodes"} {
		if !strings.Contains(out, want) {
			t.Errorf("page lacks %q", want)
		}
	}
}

func TestHandler(t *testing.T) {
	p, err := NewPage()
	if err != nil {
		t.Fatal(err)
	}
	gathered := 0
	h := &Handler{Page: p,
		Gather: func(context.Context) View { gathered++; return sampleView() },
		Authorize: func(r *http.Request) error {
			if r.Header.Get("X-Test-Role") != "admin" {
				return errors.New("role agent may not see the status page")
			}
			return nil
		}}
	do := func(method, path, role string) *httptest.ResponseRecorder {
		r := httptest.NewRequest(method, path, nil)
		r.Header.Set("X-Test-Role", role)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w
	}
	if w := do("GET", "/", "agent"); w.Code != http.StatusForbidden || !strings.Contains(w.Body.String(), "role agent may not") || gathered != 0 {
		t.Errorf("agent: %d %q (gathered %d times), want 403 before gathering", w.Code, w.Body, gathered)
	}
	w := do("GET", "/", "admin")
	if w.Code != http.StatusOK || !strings.Contains(w.Body.String(), "chunk-1") {
		t.Fatalf("admin: %d", w.Code)
	}
	if csp := w.Header().Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") {
		t.Errorf("CSP %q does not forbid scripts", csp)
	}
	if w := do("POST", "/", "admin"); w.Code != http.StatusMethodNotAllowed {
		t.Errorf("POST: %d, want 405", w.Code)
	}
	if w := do("GET", "/other", "admin"); w.Code != http.StatusNotFound {
		t.Errorf("GET /other: %d, want 404", w.Code)
	}
	if w := do("HEAD", "/", "admin"); w.Code != http.StatusOK || w.Body.Len() != 0 {
		t.Errorf("HEAD: %d with %d bytes", w.Code, w.Body.Len())
	}
}
