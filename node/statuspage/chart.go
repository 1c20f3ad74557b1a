package statuspage

import (
	"fmt"
	"html"
	"html/template"
	"math"
	"sort"
	"strings"
	"time"

	"github.com/cofferhq/coffer/meta"
)

// Chart geometry (SVG user units).
const (
	chartWidth   = 640
	chartHeight  = 200
	marginLeft   = 72 // y labels
	marginRight  = 12
	marginTop    = 22 // legend
	marginBottom = 22 // x labels
)

// Point is one value at one time. A NaN value is a gap: the line breaks there.
type Point struct {
	T time.Time
	V float64
}

// Series is one line of a chart.
type Series struct {
	Name   string
	Color  string // an SVG colour (#rrggbb); chosen by the chart's palette when empty
	Points []Point
}

// LineChart is a time-series chart drawn as SVG.
type LineChart struct {
	// Label names the chart for screen readers (the SVG's aria-label).
	Label string
	// Format renders a y value for the axis (bytes, bytes per second); %g when nil.
	Format func(float64) string
	// From and To bound the x axis; zero values take the data's first and last times.
	From, To time.Time
	Series   []Series
}

// palette colours series that name none, in order.
func palette(i int) string {
	colors := [...]string{"#1565c0", "#2e7d32", "#ef6c00", "#6a1b9a", "#00838f", "#ad1457"}
	return colors[i%len(colors)]
}

// f1 formats a coordinate with one decimal, so equal input gives equal SVG bytes.
func f1(v float64) string { return fmt.Sprintf("%.1f", v) }

// SVG draws the chart. Equal charts give byte-identical output (no clock, no map order).
// A chart without a single finite point says "no samples yet" instead of drawing axes.
func (c LineChart) SVG() template.HTML {
	format := c.Format
	if format == nil {
		format = func(v float64) string { return fmt.Sprintf("%g", v) }
	}
	from, to := c.From, c.To
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, s := range c.Series {
		for _, p := range s.Points {
			if math.IsNaN(p.V) || math.IsInf(p.V, 0) {
				continue
			}
			lo, hi = math.Min(lo, p.V), math.Max(hi, p.V)
			if c.From.IsZero() && (from.IsZero() || p.T.Before(from)) {
				from = p.T
			}
			if c.To.IsZero() && (to.IsZero() || p.T.After(to)) {
				to = p.T
			}
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 %d %d" role="img" aria-label="%s">`,
		chartWidth, chartHeight, html.EscapeString(c.Label))
	if math.IsInf(lo, 1) {
		fmt.Fprintf(&b, `<rect x="0.5" y="0.5" width="%d" height="%d" fill="none" stroke="#ccc"/>`, chartWidth-1, chartHeight-1)
		fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="middle" class="empty">no samples yet</text></svg>`, chartWidth/2, chartHeight/2)
		return template.HTML(b.String())
	}
	lo = math.Min(lo, 0) // the y axis starts at zero unless values go below it
	ticks := niceTicks(lo, hi, 4)
	lo, hi = ticks[0], ticks[len(ticks)-1]
	if !to.After(from) {
		to = from.Add(time.Minute) // one instant: give the axis some width
	}
	x0, x1 := float64(marginLeft), float64(chartWidth-marginRight)
	y0, y1 := float64(chartHeight-marginBottom), float64(marginTop)
	span := to.Sub(from).Seconds()
	xOf := func(t time.Time) float64 { return x0 + (x1-x0)*t.Sub(from).Seconds()/span }
	yOf := func(v float64) float64 { return y0 - (y0-y1)*(v-lo)/(hi-lo) }

	for _, v := range ticks {
		y := yOf(v)
		fmt.Fprintf(&b, `<line x1="%s" y1="%s" x2="%s" y2="%s" class="grid"/>`, f1(x0), f1(y), f1(x1), f1(y))
		fmt.Fprintf(&b, `<text x="%s" y="%s" text-anchor="end" class="tick">%s</text>`, f1(x0-6), f1(y+4), html.EscapeString(format(v)))
	}
	layout := "15:04"
	switch {
	case span > 24*3600:
		layout = "Jan 2 15:04"
	case span < 3600:
		layout = "15:04:05"
	}
	for i := range 4 {
		t := from.Add(time.Duration(float64(to.Sub(from)) * float64(i) / 3))
		anchor := "middle"
		switch i {
		case 0:
			anchor = "start"
		case 3:
			anchor = "end"
		}
		fmt.Fprintf(&b, `<text x="%s" y="%d" text-anchor="%s" class="tick">%s</text>`, f1(xOf(t)), chartHeight-6, anchor, t.UTC().Format(layout))
	}
	fmt.Fprintf(&b, `<line x1="%s" y1="%s" x2="%s" y2="%s" class="axis"/>`, f1(x0), f1(y0), f1(x1), f1(y0))

	lx := x0
	for i, s := range c.Series {
		color := s.Color
		if color == "" {
			color = palette(i)
		}
		color = html.EscapeString(color)
		fmt.Fprintf(&b, `<rect x="%s" y="6" width="10" height="10" fill="%s"/>`, f1(lx), color)
		fmt.Fprintf(&b, `<text x="%s" y="15" class="legend">%s</text>`, f1(lx+14), html.EscapeString(s.Name))
		lx += 24 + 7*float64(len([]rune(s.Name)))
		for _, seg := range segments(s.Points) {
			pts := make([]string, len(seg))
			for j, p := range seg {
				pts[j] = f1(xOf(p.T)) + "," + f1(yOf(p.V))
			}
			if len(seg) == 1 {
				fmt.Fprintf(&b, `<circle cx="%s" cy="%s" r="2.5" fill="%s"/>`, f1(xOf(seg[0].T)), f1(yOf(seg[0].V)), color)
				continue
			}
			fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>`, color, strings.Join(pts, " "))
		}
	}
	b.WriteString(`</svg>`)
	return template.HTML(b.String())
}

// segments splits points at gaps (NaN or infinite values) into runs to draw as lines.
func segments(ps []Point) [][]Point {
	var out [][]Point
	var cur []Point
	for _, p := range ps {
		if math.IsNaN(p.V) || math.IsInf(p.V, 0) {
			if len(cur) > 0 {
				out = append(out, cur)
			}
			cur = nil
			continue
		}
		cur = append(cur, p)
	}
	if len(cur) > 0 {
		out = append(out, cur)
	}
	return out
}

// niceTicks returns about n+1 evenly spaced round values (steps of 1, 2 or 5 times a
// power of ten) from at or below lo to at or above hi.
func niceTicks(lo, hi float64, n int) []float64 {
	if hi <= lo {
		hi = lo + 1
	}
	raw := (hi - lo) / float64(n)
	exp := math.Floor(math.Log10(raw))
	mag := math.Pow(10, exp)
	mult := 10.0
	for _, m := range []float64{1, 2, 5} {
		if m*mag >= 0.75*raw { // a step a little below raw gives one tick more, never too many
			mult = m
			break
		}
	}
	// value(k) = k·mult·10^exp, computed so that round values print as such (3·0.1 is
	// 0.30000000000000004; 3·1/10 is 0.3).
	value := func(k float64) float64 {
		if exp < 0 {
			return k * mult / math.Pow(10, -exp)
		}
		return k * mult * mag
	}
	step := mult * mag
	var out []float64
	for k := math.Floor(lo / step); ; k++ {
		v := value(k)
		out = append(out, v)
		if v >= hi-step*1e-9 {
			break
		}
	}
	return out
}

// Span is one job on the timeline.
type Span struct {
	Lane   string // the row: the job's name (vault, host, schedule)
	Start  time.Time
	End    time.Time // zero while running
	Status string    // meta.JobRunning, JobCompleted, JobPartial, JobFailed; others are grey
	// Anomaly, when not empty, is why the job's figures look wrong (an anomaly flag); the
	// bar gets a warning marker with this text as its tooltip.
	Anomaly string
	// Detail is the bar's tooltip (size, duration, error).
	Detail string
}

// Timeline is the job timeline chart.
type Timeline struct {
	From, To time.Time
	Spans    []Span
}

// Timeline geometry: twice a chart's width, as the page gives it the whole row.
const (
	timelineWidth = 2 * chartWidth
	laneHeight    = 24
	laneLabel     = 150
	maxLanes      = 30
)

func statusColor(status string) string {
	switch status {
	case meta.JobRunning:
		return "#1565c0"
	case meta.JobCompleted:
		return "#2e7d32"
	case meta.JobPartial:
		return "#ef6c00"
	case meta.JobFailed:
		return "#c62828"
	}
	return "#9e9e9e"
}

// SVG draws the timeline: one lane per Lane (sorted, at most 30; the rest are counted in
// a note), bars from start to end (running jobs to To), failed failed jobs red and orange with a ✕ marker, anomalies with a ⚠ marker. Deterministic like LineChart.SVG.
func (tl Timeline) SVG() template.HTML {
	var lanes []string
	seen := map[string]bool{}
	for _, s := range tl.Spans {
		if !seen[s.Lane] {
			seen[s.Lane] = true
			lanes = append(lanes, s.Lane)
		}
	}
	sort.Strings(lanes)
	hidden := 0
	if len(lanes) > maxLanes {
		hidden = len(lanes) - maxLanes
		lanes = lanes[:maxLanes]
	}
	height := marginTop + marginBottom + laneHeight*max(len(lanes), 1)
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" class="chart timeline" viewBox="0 0 %d %d" role="img" aria-label="job timeline">`, timelineWidth, height)
	if len(lanes) == 0 || !tl.To.After(tl.From) {
		fmt.Fprintf(&b, `<rect x="0.5" y="0.5" width="%d" height="%d" fill="none" stroke="#ccc"/>`, timelineWidth-1, height-1)
		fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="middle" class="empty">no jobs in this window</text></svg>`, timelineWidth/2, height/2+4)
		return template.HTML(b.String())
	}
	x0, x1 := float64(laneLabel), float64(timelineWidth-marginRight)
	span := tl.To.Sub(tl.From).Seconds()
	xOf := func(t time.Time) float64 {
		v := x0 + (x1-x0)*t.Sub(tl.From).Seconds()/span
		return math.Max(x0, math.Min(x1, v))
	}
	row := map[string]int{}
	for i, l := range lanes {
		row[l] = i
		y := float64(marginTop + i*laneHeight)
		if i%2 == 0 {
			fmt.Fprintf(&b, `<rect x="0" y="%s" width="%d" height="%d" class="lane"/>`, f1(y), timelineWidth, laneHeight)
		}
		fmt.Fprintf(&b, `<text x="4" y="%s" class="tick">%s</text>`, f1(y+16), html.EscapeString(ellipsis(l, 22)))
	}
	// Legend.
	lx := x0
	for _, st := range []string{meta.JobCompleted, meta.JobRunning, meta.JobPartial, meta.JobFailed} {
		fmt.Fprintf(&b, `<rect x="%s" y="6" width="10" height="10" fill="%s"/><text x="%s" y="15" class="legend">%s</text>`,
			f1(lx), statusColor(st), f1(lx+14), st)
		lx += 24 + 6.5*float64(len(st))
	}
	fmt.Fprintf(&b, `<text x="%s" y="15" class="legend"><tspan class="anomaly">⚠</tspan> anomaly</text>`, f1(lx))
	for _, s := range tl.Spans {
		i, ok := row[s.Lane]
		if !ok {
			continue
		}
		end := s.End
		if end.IsZero() {
			end = tl.To
		}
		if end.Before(tl.From) || s.Start.After(tl.To) {
			continue
		}
		xa, xb := xOf(s.Start), xOf(end)
		w := math.Max(xb-xa, 3)
		y := float64(marginTop + i*laneHeight)
		tip := s.Status
		if s.Detail != "" {
			tip += ": " + s.Detail
		}
		fmt.Fprintf(&b, `<rect x="%s" y="%s" width="%s" height="%d" rx="2" fill="%s" class="job %s"><title>%s</title></rect>`,
			f1(xa), f1(y+5), f1(w), laneHeight-10, statusColor(s.Status), html.EscapeString(s.Status), html.EscapeString(s.Lane+" — "+tip))
		if s.Status == meta.JobFailed || s.Status == meta.JobPartial {
			fmt.Fprintf(&b, `<text x="%s" y="%s" text-anchor="middle" class="failmark">✕<title>%s</title></text>`,
				f1(xa+w), f1(y+17), html.EscapeString(s.Status+": "+s.Detail))
		}
		if s.Anomaly != "" {
			fmt.Fprintf(&b, `<text x="%s" y="%s" text-anchor="middle" class="anomaly">⚠<title>%s</title></text>`,
				f1(xa+w/2), f1(y+17), html.EscapeString("anomaly: "+s.Anomaly))
		}
	}
	yb := float64(height - 6)
	fmt.Fprintf(&b, `<text x="%s" y="%s" class="tick">%s</text>`, f1(x0), f1(yb), tl.From.UTC().Format("Jan 2 15:04"))
	fmt.Fprintf(&b, `<text x="%s" y="%s" text-anchor="end" class="tick">%s</text>`, f1(x1), f1(yb), tl.To.UTC().Format("Jan 2 15:04"))
	if hidden > 0 {
		fmt.Fprintf(&b, `<text x="%d" y="%s" text-anchor="middle" class="tick">and %d more</text>`, timelineWidth/2, f1(yb), hidden)
	}
	b.WriteString(`</svg>`)
	return template.HTML(b.String())
}

// ellipsis shortens s to n runes.
func ellipsis(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n-1]) + "…"
}

// StateCount is the number of PGs in one state.
type StateCount struct {
	State string
	N     int
}

// pgStateColor colours PG states, healthy green through unreadable dark red.
func pgStateColor(state string) string {
	switch state {
	case "healthy":
		return "#2e7d32"
	case "backfilling":
		return "#1565c0"
	case "degraded":
		return "#ef6c00"
	case "inconsistent":
		return "#ad1457"
	case "unreadable":
		return "#b71c1c"
	}
	return "#9e9e9e"
}

// HealthBar draws PG counts as one stacked bar, in the order given; zero counts take no
// room. Deterministic like LineChart.SVG.
func HealthBar(counts []StateCount) template.HTML {
	total := 0
	for _, c := range counts {
		total += c.N
	}
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" class="chart bar" viewBox="0 0 %d 28" role="img" aria-label="PG health">`, chartWidth)
	if total == 0 {
		b.WriteString(`<rect x="0.5" y="0.5" width="639" height="27" fill="none" stroke="#ccc"/><text x="320" y="18" text-anchor="middle" class="empty">no PGs</text></svg>`)
		return template.HTML(b.String())
	}
	x := 0.0
	for _, c := range counts {
		if c.N <= 0 {
			continue
		}
		w := float64(chartWidth) * float64(c.N) / float64(total)
		fmt.Fprintf(&b, `<rect x="%s" y="0" width="%s" height="28" fill="%s"><title>%d %s</title></rect>`,
			f1(x), f1(w), pgStateColor(c.State), c.N, html.EscapeString(c.State))
		if w >= 70 {
			fmt.Fprintf(&b, `<text x="%s" y="18" text-anchor="middle" class="barlabel">%d %s</text>`, f1(x+w/2), c.N, html.EscapeString(c.State))
		}
		x += w
	}
	b.WriteString(`</svg>`)
	return template.HTML(b.String())
}

// FormatBytes renders a byte count with a binary unit ("1.5 GiB").
func FormatBytes(v float64) string {
	neg := v < 0
	v = math.Abs(v)
	units := []string{"B", "KiB", "MiB", "GiB", "TiB", "PiB"}
	i := 0
	for v >= 1024 && i < len(units)-1 {
		v /= 1024
		i++
	}
	s := fmt.Sprintf("%.0f %s", v, units[i])
	if i > 0 && v < 10 {
		s = fmt.Sprintf("%.1f %s", v, units[i])
	}
	if neg && v != 0 {
		s = "-" + s
	}
	return s
}

// FormatRate renders bytes per second ("1.5 MiB/s").
func FormatRate(v float64) string { return FormatBytes(v) + "/s" }
