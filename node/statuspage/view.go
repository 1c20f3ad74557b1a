package statuspage

import (
	"time"

	"github.com/cofferhq/coffer/meta"
	"github.com/cofferhq/coffer/placement"
)

// View is everything the page shows. The node gathers it per request; a section that
// could not be read carries its error instead of its data (the rest still renders).
type View struct {
	Node      string    // the serving node's ID
	Generated time.Time // when the view was gathered (the node's clock)
	Raft      meta.RaftStatus
	RaftError string
	MapEpoch  uint64
	PGCount   uint32
	Profile   string // "k+m"
	Nodes     []NodeRow
	NodeError string
	PGs       PGSection
	History   []Sample
	// SampleEvery is how often the serving node samples capacity (for the charts' note).
	SampleEvery time.Duration
	Jobs        JobSection
	Alerts      AlertSection
	Audit       AuditSection
}

// NodeRow is one node as `coffer admin status` shows it.
type NodeRow struct {
	ID       string
	Addr     string
	Roles    []string
	Domain   string
	Up       bool   // answered node.Status
	MapState string // its state in the cluster map ("" for meta-only nodes)
	Shards   int64
	Bytes    int64
	Capacity int64
	Damaged  int64 // damaged segment records found since the node started
	Error    string
	// Repair is the chunk node's repair progress (nil for meta-only or down nodes).
	RepairRunning bool
	RepairBytes   int64
	FoundCorrupt  int64
	FoundMissing  int64
}

// PGSection is the PG health counts and the unhealthy PGs.
type PGSection struct {
	Counts []StateCount // in PGStates order, every state present (zero counts included)
	// Problems lists PGs that are not healthy, by PG number, at most MaxProblems.
	Problems []PGProblem
	// More counts the unhealthy PGs beyond Problems.
	More  int
	Error string
}

// PGProblem is one unhealthy PG.
type PGProblem struct {
	PG       uint32
	State    string
	Health   placement.PGHealth
	Reporter string
}

// MaxProblems bounds the unhealthy PGs listed on the page.
const MaxProblems = 50

// PGStates lists PG states from good to bad, the order the page shows them in.
func PGStates() []string {
	return []string{"healthy", "backfilling", "unverified", "degraded", "inconsistent", "unreadable", "unknown"}
}

// SummarisePGs counts each of the map's PGs by state, as `coffer admin pgs` does: a PG
// of which no report has arrived is "unknown"; a healthy report placed by an older epoch
// is "unverified" (placement.PGHealth.StateAt).
func SummarisePGs(m placement.Map, reports []placement.PGHealth) PGSection {
	byPG := map[uint32]placement.PGHealth{}
	for _, r := range reports {
		byPG[r.PG] = r
	}
	counts := map[string]int{}
	var sec PGSection
	for pg := range m.PGCount {
		r, ok := byPG[pg]
		state := "unknown"
		if ok {
			state = r.StateAt(m.Epoch)
		}
		counts[state]++
		if state == "healthy" {
			continue
		}
		if len(sec.Problems) >= MaxProblems {
			sec.More++
			continue
		}
		if !ok {
			r = placement.PGHealth{PG: pg}
		}
		desc := state
		if ok {
			desc = r.DescribeAt(m.Epoch)
		}
		sec.Problems = append(sec.Problems, PGProblem{PG: pg, State: desc, Health: r, Reporter: string(r.Reporter)})
	}
	for _, st := range PGStates() {
		sec.Counts = append(sec.Counts, StateCount{State: st, N: counts[st]})
	}
	return sec
}

// Job is one backup or restore job as the timeline and the job table show it.
type Job struct {
	ID     string
	Name   string // vault, host or schedule: the timeline's lane
	Kind   string // backup, restore, verify, …
	Status string // meta.JobRunning, JobCompleted, JobPartial, JobFailed
	Start  time.Time
	End    time.Time // zero while running
	Bytes  int64
	Error  string
	// Anomaly, when not empty, says why the job's figures look wrong.
	Anomaly string
}

// JobSection is the job timeline's data. Note says why it is empty when the cluster
// keeps no job records (an older cluster, or none run yet).
type JobSection struct {
	From, To time.Time // the timeline's window
	Jobs     []Job
	Note     string
	Error    string
}

// Timeline returns the section's jobs as a timeline chart.
func (s JobSection) Timeline() Timeline {
	tl := Timeline{From: s.From, To: s.To}
	for _, j := range s.Jobs {
		detail := j.Kind
		if j.Bytes > 0 {
			detail += ", " + FormatBytes(float64(j.Bytes))
		}
		if j.Error != "" {
			detail += ", " + j.Error
		}
		tl.Spans = append(tl.Spans, Span{Lane: j.Name, Start: j.Start, End: j.End, Status: j.Status, Anomaly: j.Anomaly, Detail: detail})
	}
	return tl
}

// Alert is one alert raised by the cluster.
type Alert struct {
	Time     time.Time
	Severity string // critical, warning, info
	Name     string
	Message  string
	Resolved bool
}

// AlertSection lists alerts, newest first.
type AlertSection struct {
	Alerts []Alert
	Note   string
	Error  string
}

// AuditSection lists the newest audit entries, newest first.
type AuditSection struct {
	Entries []meta.AuditEntry
	Note    string
	Error   string
}
