package statuspage

import (
	"fmt"
	"github.com/cofferhq/coffer/meta"
	"math"
	"regexp"
	"strings"
	"testing"
	"time"
)

func TestLineChartIsDeterministicAndScaled(t *testing.T) {
	c := LineChart{Label: "test", Format: FormatBytes, Series: []Series{{Name: "a", Points: []Point{
		{T: t0, V: 0}, {T: t0.Add(time.Hour), V: 50}, {T: t0.Add(2 * time.Hour), V: 100},
	}}}}
	svg := string(c.SVG())
	if svg != string(c.SVG()) {
		t.Fatal("two renderings of one chart differ")
	}
	// x spans 72..628, y spans 178 (0) .. 22 (100): ticks 0, 20, …, 100.
	if !strings.Contains(svg, `points="72.0,178.0 350.0,100.0 628.0,22.0"`) {
		t.Errorf("polyline not where expected:\n%s", svg)
	}
	for _, tick := range []string{">0 B<", ">20 B<", ">100 B<", ">04:00<", ">06:00<"} { // two hours: minutes
		if !strings.Contains(svg, tick) {
			t.Errorf("axis label %s missing", tick)
		}
	}
}

func TestLineChartTimeLabels(t *testing.T) {
	for span, want := range map[time.Duration]string{
		10 * time.Minute: ">04:10:00<", 2 * time.Hour: ">06:00<", 48 * time.Hour: ">Dec 8 04:00<",
	} {
		svg := string(LineChart{Series: []Series{{Points: []Point{{T: t0, V: 1}, {T: t0.Add(span), V: 2}}}}}.SVG())
		if !strings.Contains(svg, want) {
			t.Errorf("a %s chart lacks the label %s", span, want)
		}
	}
}

func TestLineChartGapsAndEmpty(t *testing.T) {
	c := LineChart{Series: []Series{{Name: "a", Points: []Point{
		{T: t0, V: 1}, {T: t0.Add(time.Minute), V: 2}, {T: t0.Add(2 * time.Minute), V: math.NaN()},
		{T: t0.Add(3 * time.Minute), V: 3},
	}}}}
	svg := string(c.SVG())
	if n := strings.Count(svg, "<polyline"); n != 1 {
		t.Errorf("%d polylines, want 1 (the NaN breaks the line)", n)
	}
	if n := strings.Count(svg, "<circle"); n != 1 {
		t.Errorf("%d dots, want 1 (the lone point after the gap)", n)
	}
	empty := string(LineChart{Series: []Series{{Name: "a", Points: []Point{{T: t0, V: math.NaN()}}}}}.SVG())
	if !strings.Contains(empty, "no samples yet") || strings.Contains(empty, "polyline") {
		t.Errorf("a chart without values: %s", empty)
	}
}

func TestLineChartNegativeValues(t *testing.T) {
	svg := string(LineChart{Series: []Series{{Name: "a", Points: []Point{{T: t0, V: -30}, {T: t0.Add(time.Minute), V: 70}}}}}.SVG())
	if !strings.Contains(svg, ">-40<") && !strings.Contains(svg, ">-50<") {
		t.Errorf("no tick below the negative minimum: %s", svg)
	}
}

func TestChartsEscapeText(t *testing.T) {
	evil := `<script>alert(1)</script>`
	for name, svg := range map[string]string{
		"line":     string(LineChart{Label: evil, Series: []Series{{Name: evil, Color: `"/><script>`, Points: []Point{{T: t0, V: 1}}}}}.SVG()),
		"timeline": string(Timeline{From: t0, To: t0.Add(time.Hour), Spans: []Span{{Lane: evil, Start: t0, Status: evil, Detail: evil, Anomaly: evil}}}.SVG()),
		"bar":      string(HealthBar([]StateCount{{State: evil, N: 3}})),
	} {
		if strings.Contains(svg, "<script") {
			t.Errorf("%s chart let markup through: %s", name, svg)
		}
	}
}

func TestNiceTicks(t *testing.T) {
	for _, tc := range []struct {
		lo, hi float64
		want   string
	}{
		{0, 100, "[0 20 40 60 80 100]"},
		{0, 7, "[0 2 4 6 8]"},
		{0, 0, "[0 0.2 0.4 0.6 0.8 1]"},
		{-30, 70, "[-40 -20 0 20 40 60 80]"},
		{0, 0.3, "[0 0.1 0.2 0.3]"},
	} {
		got := niceTicks(tc.lo, tc.hi, 4)
		if s := fmt.Sprint(got); s != tc.want {
			t.Errorf("niceTicks(%g, %g) = %s, want %s", tc.lo, tc.hi, s, tc.want)
		}
		if got[0] > tc.lo || got[len(got)-1] < tc.hi {
			t.Errorf("niceTicks(%g, %g) = %v does not cover the range", tc.lo, tc.hi, got)
		}
	}
}

func TestTimelineMarksFailuresAndAnomalies(t *testing.T) {
	tl := Timeline{From: t0, To: t0.Add(4 * time.Hour), Spans: []Span{
		{Lane: "web-1", Start: t0.Add(time.Hour), End: t0.Add(2 * time.Hour), Status: meta.JobCompleted},
		{Lane: "db-1", Start: t0.Add(time.Hour), End: t0.Add(90 * time.Minute), Status: meta.JobFailed, Detail: "disk full"},
		{Lane: "db-1", Start: t0.Add(3 * time.Hour), Status: meta.JobRunning, Anomaly: "size dropped 90%"},
		{Lane: "mail", Start: t0, End: t0.Add(time.Hour), Status: meta.JobPartial, Detail: "3 files unreadable"},
	}}
	svg := string(tl.SVG())
	if n := strings.Count(svg, `class="job `); n != 4 {
		t.Errorf("%d bars, want 4", n)
	}
	if !strings.Contains(svg, "✕<title>partially failed: 3 files unreadable</title>") {
		t.Error("the partially failed job has no ✕ marker")
	}
	if !strings.Contains(svg, "✕<title>failed: disk full</title>") {
		t.Error("the failed job has no ✕ marker")
	}
	if !strings.Contains(svg, "⚠<title>anomaly: size dropped 90%</title>") {
		t.Error("the anomalous job has no ⚠ marker")
	}
	// Lanes are sorted: db-1 first. The running job's bar runs from 3/4 of the lane area (150..1268) to its end.
	if strings.Index(svg, ">db-1<") > strings.Index(svg, ">web-1<") {
		t.Error("lanes not sorted")
	}
	re := regexp.MustCompile(`<rect x="([0-9.]+)" y="[0-9.]+" width="([0-9.]+)" height="14" rx="2" fill="#1565c0"`)
	m := re.FindStringSubmatch(svg)
	if m == nil {
		t.Fatalf("no running bar: %s", svg)
	}
	if m[1] != "988.5" || m[2] != "279.5" {
		t.Errorf("running bar at x=%s width=%s, want 988.5 and 279.5 (to the window's end)", m[1], m[2])
	}
	if !strings.Contains(string(Timeline{From: t0, To: t0.Add(time.Hour)}.SVG()), "no jobs in this window") {
		t.Error("an empty timeline does not say so")
	}
}

func TestTimelineCapsLanes(t *testing.T) {
	tl := Timeline{From: t0, To: t0.Add(time.Hour)}
	for i := range 40 {
		tl.Spans = append(tl.Spans, Span{Lane: string(rune('A'+i%26)) + string(rune('a'+i/26)), Start: t0, End: t0.Add(time.Minute), Status: meta.JobCompleted})
	}
	svg := string(tl.SVG())
	if n := strings.Count(svg, `class="job `); n != maxLanes {
		t.Errorf("%d bars, want %d", n, maxLanes)
	}
	if !strings.Contains(svg, "and 10 more") {
		t.Error("hidden lanes not counted")
	}
}

func TestHealthBar(t *testing.T) {
	svg := string(HealthBar([]StateCount{{"healthy", 192}, {"degraded", 64}, {"unknown", 0}}))
	if !strings.Contains(svg, `width="480.0"`) || !strings.Contains(svg, `x="480.0" y="0" width="160.0"`) {
		t.Errorf("bar widths not proportional: %s", svg)
	}
	if strings.Contains(svg, "unknown") {
		t.Error("a zero count took room")
	}
	if !strings.Contains(svg, ">192 healthy<") {
		t.Error("label missing")
	}
}

func TestFormatBytes(t *testing.T) {
	for v, want := range map[float64]string{0: "0 B", 1023: "1023 B", 1536: "1.5 KiB", 20 << 20: "20 MiB", -3 << 30: "-3.0 GiB"} {
		if got := FormatBytes(v); got != want {
			t.Errorf("FormatBytes(%g) = %q, want %q", v, got, want)
		}
	}
}
