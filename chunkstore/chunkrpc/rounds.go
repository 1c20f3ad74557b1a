package chunkrpc

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/cofferhq/coffer/transport"
)

// RetryWindow is how long a call goes on asking the coordinators again, in rounds with a
// backoff between them (retryBackoff doubling to maxRetryBackoff), while every one of
// them fails in a way a later attempt may cure: unreachable or stalled, or answering
// Unavailable (a node not ready yet, a PG short of shard nodes while the cluster notices
// a failure). A round after the first skips suspects when there is anyone else to ask.
// SetRetryWindow changes it per client.
const RetryWindow = 20 * time.Second

const (
	retryBackoff    = 200 * time.Millisecond
	maxRetryBackoff = 2 * time.Second
)

// SetRetryWindow sets how long calls go on trying rounds of coordinators (RetryWindow by
// default); zero makes every call try each coordinator once.
func (cl *Client) SetRetryWindow(d time.Duration) {
	cl.mu.Lock()
	cl.mu.window = max(d, 0)
	cl.mu.Unlock()
}

func (cl *Client) retryWindow() time.Duration {
	cl.mu.RLock()
	defer cl.mu.RUnlock()
	return cl.mu.window
}

// attempt is one failed call to one coordinator.
type attempt struct {
	addr string
	err  error
}

// answered reports whether err is an answer of the coordinator (it was alive), rather
// than a failure to reach it.
func answered(err error) bool {
	var te *transport.Error
	return errors.As(err, &te)
}

// AllFailedError is the error of a call that every coordinator failed, for as many
// rounds as RetryWindow allowed. It names the real cause first: the answer of a live
// coordinator (the last round's first) when there is one, not the timeout of a dead
// one, and then counts the other failures. errors.Is and errors.As see that cause.
type AllFailedError struct {
	Method string
	// Tried is how many coordinators were asked, Rounds in how many rounds.
	Tried, Rounds int
	// Cause is the failure reported first; Others lists the rest, one per coordinator.
	Cause  error
	Others []string
}

func (e *AllFailedError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "chunkrpc: %s: no coordinator could serve it (%d asked", e.Method, e.Tried)
	if e.Rounds > 1 {
		fmt.Fprintf(&b, ", %d rounds", e.Rounds)
	}
	fmt.Fprintf(&b, "): %v", e.Cause)
	if len(e.Others) > 0 {
		fmt.Fprintf(&b, " (others: %s)", strings.Join(e.Others, "; "))
	}
	return b.String()
}

// Unwrap returns the cause.
func (e *AllFailedError) Unwrap() error { return e.Cause }

// allFailed builds the error of a call whose last round failed with atts (in the order
// tried), rounds rounds in all.
func allFailed(method string, rounds int, atts []attempt) error {
	if len(atts) == 0 {
		return nil
	}
	if len(atts) == 1 && rounds == 1 {
		return atts[0].err
	}
	main := 0
	for i, a := range atts {
		if answered(a.err) {
			main = i
			break
		}
	}
	e := &AllFailedError{Method: method, Tried: len(atts), Rounds: rounds, Cause: atts[main].err}
	for i, a := range atts {
		if i != main {
			e.Others = append(e.Others, a.addr+": "+short(a.err))
		}
	}
	return e
}

// short is a one-phrase account of a failed attempt for AllFailedError.Others.
func short(err error) string {
	var te *transport.Error
	switch {
	case errors.As(err, &te):
		msg := te.Msg
		if len(msg) > 120 {
			msg = msg[:120] + "…"
		}
		return msg
	case errors.Is(err, transport.ErrUnreachable):
		if strings.Contains(err.Error(), "stalled") {
			return "stalled (no answer to a liveness probe)"
		}
		return "unreachable"
	default:
		return err.Error()
	}
}
