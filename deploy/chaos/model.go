package chaos

import (
	"fmt"
	"math"
	"sort"
	"strings"
	"time"

	"github.com/anishathalye/porcupine"
)

// The linearizability model of a vault's snapshot list: a set of snapshot IDs. A commit
// (a backup) adds its snapshot; a listing returns the whole set. No operation of the
// workload removes a snapshot, so a snapshot that no listing ever shows was never
// committed.

// OpKind is commit or list.
type OpKind string

// The operations of the history.
const (
	OpCommit OpKind = "commit"
	OpList   OpKind = "list"
)

// Op is one operation of the history, as the workload saw it. Start and End are offsets
// from the run's start. For a commit, ID is the acknowledged snapshot; Indeterminate marks
// a backup that failed (exited non-zero) but whose snapshot a listing shows: it took
// effect at some point after Start, perhaps after End. For a list, Listed holds the IDs.
type Op struct {
	Client        int
	Kind          OpKind
	ID            string
	Listed        []string
	Indeterminate bool
	Start, End    time.Duration
}

type commitInput struct{ id string }
type listInput struct{}
type listOutput struct{ ids string } // sorted, comma-joined

// setState is the model's state: the sorted, comma-joined snapshot IDs (comparable).
type setState string

func (s setState) add(id string) setState {
	if s == "" {
		return setState(id)
	}
	ids := strings.Split(string(s), ",")
	i := sort.SearchStrings(ids, id)
	if i < len(ids) && ids[i] == id {
		return s
	}
	ids = append(ids[:i], append([]string{id}, ids[i:]...)...)
	return setState(strings.Join(ids, ","))
}

func short(id string) string {
	if len(id) > 8 {
		return id[:8]
	}
	return id
}

// SnapshotSetModel is the porcupine model of a vault's snapshot list.
func SnapshotSetModel() porcupine.Model {
	return porcupine.Model{
		Init: func() interface{} { return setState("") },
		Step: func(state, input, output interface{}) (bool, interface{}) {
			s := state.(setState)
			switch in := input.(type) {
			case commitInput:
				return true, s.add(in.id)
			case listInput:
				return string(s) == output.(listOutput).ids, s
			}
			return false, s
		},
		DescribeOperation: func(input, output interface{}) string {
			switch in := input.(type) {
			case commitInput:
				return "commit " + short(in.id)
			case listInput:
				ids := strings.Split(output.(listOutput).ids, ",")
				if output.(listOutput).ids == "" {
					ids = nil
				}
				return fmt.Sprintf("list -> %d snapshots", len(ids))
			}
			return "?"
		},
		DescribeState: func(state interface{}) string {
			s := string(state.(setState))
			if s == "" {
				return "{}"
			}
			return fmt.Sprintf("%d snapshots", strings.Count(s, ",")+1)
		},
	}
}

// Operations turns the workload's ops into porcupine's history. An indeterminate commit
// never returns (Return = MaxInt64): it may take effect at any time after its call.
func Operations(ops []Op) []porcupine.Operation {
	out := make([]porcupine.Operation, 0, len(ops))
	for _, o := range ops {
		po := porcupine.Operation{ClientId: o.Client, Call: int64(o.Start), Return: int64(o.End)}
		switch o.Kind {
		case OpCommit:
			po.Input, po.Output = commitInput{id: o.ID}, nil
			if o.Indeterminate {
				po.Return = math.MaxInt64
			}
		case OpList:
			ids := append([]string(nil), o.Listed...)
			sort.Strings(ids)
			po.Input, po.Output = listInput{}, listOutput{ids: strings.Join(ids, ",")}
		}
		out = append(out, po)
	}
	return out
}

// CheckLinearizable checks ops against SnapshotSetModel within timeout; the result is
// porcupine.Ok, Illegal or Unknown (timed out), with the info for a visualization.
func CheckLinearizable(ops []Op, timeout time.Duration) (porcupine.CheckResult, porcupine.LinearizationInfo) {
	return porcupine.CheckOperationsVerbose(SnapshotSetModel(), Operations(ops), timeout)
}
