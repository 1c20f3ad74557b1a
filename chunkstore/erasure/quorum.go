package erasure

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/cofferhq/coffer/chunkstore"
)

// numClasses is the number of known error classes; class numClasses is "other".
const numClasses = 7

// classes returns the error classes ReduceQuorum recognises, in tie-break order.
func classes() [numClasses]error {
	return [numClasses]error{
		chunkstore.ErrNotFound,
		chunkstore.ErrCorrupt,
		chunkstore.ErrUnavailable,
		chunkstore.ErrInvalid,
		chunkstore.ErrClosed,
		context.Canceled,
		context.DeadlineExceeded,
	}
}

// maxListed bounds how many distinct failure messages ReduceQuorum's error quotes.
const maxListed = 4

func classOf(err error) int {
	for i, c := range classes() {
		if errors.Is(err, c) {
			return i
		}
	}
	return numClasses // other
}

// ReduceQuorum reduces the per-shard (or per-node) results of one operation, nil meaning
// success, to a single error. It returns nil if at least quorum entries are nil.
//
// Otherwise the error names the count ("3 of 6 shards failed, need 5 ok: ...") and quotes
// up to a few distinct failures. It wraps the first error of the most common class
// (classes: chunkstore.ErrNotFound, ErrCorrupt, ErrUnavailable, ErrInvalid, ErrClosed,
// context.Canceled, context.DeadlineExceeded, other; ties go to the earlier class) and
// also chunkstore.ErrUnavailable, unless every failure is of the same known class: then
// only that class is wrapped, so that all ErrNotFound reduces to ErrNotFound. errs is
// not retained.
func ReduceQuorum(errs []error, quorum int) error {
	ok := 0
	var counts [numClasses + 1]int
	var firsts [numClasses + 1]error
	for _, err := range errs {
		if err == nil {
			ok++
			continue
		}
		c := classOf(err)
		if counts[c] == 0 {
			firsts[c] = err
		}
		counts[c]++
	}
	if ok >= quorum {
		return nil
	}
	failed := len(errs) - ok
	if failed == 0 {
		return fmt.Errorf("erasure: %d of %d shards ok, need %d: %w", ok, len(errs), quorum, chunkstore.ErrUnavailable)
	}
	best := 0
	for c := range counts {
		if counts[c] > counts[best] {
			best = c
		}
	}
	rep := firsts[best]
	var also []string
	seen := map[string]bool{rep.Error(): true}
	for _, err := range errs {
		if err == nil || seen[err.Error()] {
			continue
		}
		seen[err.Error()] = true
		if len(also) == maxListed {
			also = append(also, "…")
			break
		}
		also = append(also, err.Error())
	}
	extra := ""
	if len(also) > 0 {
		extra = " (also: " + strings.Join(also, "; ") + ")"
	}
	head := fmt.Sprintf("erasure: %d of %d shards failed, need %d ok", failed, len(errs), quorum)
	if counts[best] == failed && best < numClasses || errors.Is(rep, chunkstore.ErrUnavailable) {
		// One known class throughout (or already unavailable): keep it alone.
		return fmt.Errorf("%s: %w%s", head, rep, extra)
	}
	return fmt.Errorf("%s: %w%s: %w", head, rep, extra, chunkstore.ErrUnavailable)
}
