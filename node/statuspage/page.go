package statuspage

import (
	"bytes"
	_ "embed"
	"fmt"
	"html/template"
	"io"
	"strings"
	"time"
)

// pageSource is the page's template; it is immutable (embedded at build time).
//
//go:embed page.html.tmpl
var pageSource string

// Page renders Views. It is immutable after NewPage and safe for concurrent use.
type Page struct {
	tmpl *template.Template
}

// NewPage parses the page template.
func NewPage() (*Page, error) {
	t, err := template.New("page").Funcs(template.FuncMap{
		"bytes":      func(v int64) string { return FormatBytes(float64(v)) },
		"when":       func(t time.Time) string { return formatTime(t) },
		"join":       strings.Join,
		"dur":        formatDuration,
		"pct":        pct,
		"capacity":   CapacityChart,
		"capnote":    CapacityNote,
		"throughput": ThroughputChart,
		"healthbar":  HealthBar,
		"timeline":   func(s JobSection) template.HTML { return s.Timeline().SVG() },
		"up":         countUp,
	}).Parse(pageSource)
	if err != nil {
		return nil, fmt.Errorf("statuspage: template: %w", err)
	}
	return &Page{tmpl: t}, nil
}

// Render writes v as one HTML document. The output is rendered in full before anything
// is written, so a template error never leaves half a page.
func (p *Page) Render(w io.Writer, v View) error {
	var buf bytes.Buffer
	if err := p.tmpl.Execute(&buf, v); err != nil {
		return fmt.Errorf("statuspage: render: %w", err)
	}
	_, err := w.Write(buf.Bytes())
	return err
}

// CapacityChart draws used and available bytes over the view's samples.
func CapacityChart(v View) template.HTML {
	c := LineChart{Label: "capacity over time", Format: FormatBytes}
	used := Series{Name: "stored", Color: "#1565c0"}
	capa := Series{Name: "capacity", Color: "#9e9e9e"}
	for _, s := range v.History {
		used.Points = append(used.Points, Point{T: s.Time, V: float64(s.Used)})
		if s.Capacity > 0 {
			capa.Points = append(capa.Points, Point{T: s.Time, V: float64(s.Capacity)})
		}
	}
	c.Series = []Series{used}
	if showCapacity(v.History) {
		c.Series = append(c.Series, capa)
	}
	return c.SVG()
}

// showCapacity reports whether the capacity line belongs on the chart: when stored
// bytes reach a tenth of it. Below that the capacity line would flatten the stored one
// to the axis; the note under the chart gives the figure instead.
func showCapacity(ss []Sample) bool {
	for _, s := range ss {
		if s.Capacity > 0 && s.Used*10 >= s.Capacity {
			return true
		}
	}
	return false
}

// CapacityNote states the latest sample's stored bytes and capacity.
func CapacityNote(v View) string {
	if len(v.History) == 0 {
		return ""
	}
	s := v.History[len(v.History)-1]
	if s.Capacity <= 0 {
		return fmt.Sprintf("Stored %s; the stores report no capacity.", FormatBytes(float64(s.Used)))
	}
	note := fmt.Sprintf("Stored %s of %s (%s).", FormatBytes(float64(s.Used)), FormatBytes(float64(s.Capacity)), pct(s.Used, s.Capacity))
	if !showCapacity(v.History) {
		note += " The capacity line is left out below 10% use."
	}
	return note
}

// ThroughputChart draws the growth of stored bytes and the repair traffic per second.
func ThroughputChart(v View) template.HTML {
	c := LineChart{Label: "throughput", Format: FormatRate}
	stored := Series{Name: "stored bytes/s (net)", Color: "#2e7d32"}
	repair := Series{Name: "repair writes/s", Color: "#ef6c00"}
	for _, r := range Rates(v.History) {
		stored.Points = append(stored.Points, Point{T: r.Time, V: r.Stored})
		repair.Points = append(repair.Points, Point{T: r.Time, V: r.Repair})
	}
	c.Series = []Series{stored, repair}
	return c.SVG()
}

func formatTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format("2006-01-02 15:04:05Z")
}

func formatDuration(d time.Duration) string {
	switch {
	case d <= 0:
		return "-"
	case d < time.Second:
		return d.String()
	}
	return d.Round(time.Second).String()
}

func pct(part, whole int64) string {
	switch {
	case whole <= 0:
		return "-"
	case part > 0 && part*100 < whole:
		return "<1%"
	}
	return fmt.Sprintf("%.0f%%", 100*float64(part)/float64(whole))
}

func countUp(nodes []NodeRow) int {
	n := 0
	for _, r := range nodes {
		if r.Up {
			n++
		}
	}
	return n
}
