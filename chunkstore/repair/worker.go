package repair

import (
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cofferhq/coffer/chunkstore"
	"github.com/cofferhq/coffer/chunkstore/chunk"
	"github.com/cofferhq/coffer/chunkstore/erasure"
	"github.com/cofferhq/coffer/chunkstore/nodestat"
	"github.com/cofferhq/coffer/placement"
)

// Defaults for zero Config fields.
const (
	DefaultConcurrentPGs = 4
	DefaultInterval      = time.Minute
	DefaultDeepInterval  = 7 * 24 * time.Hour
	// DefaultVerifyInterval is how long a PG whose shards did not change goes without
	// being listed again (Config.VerifyInterval).
	DefaultVerifyInterval = time.Hour
	// maxNamed bounds the unreadable stripes a Status lists by name.
	maxNamed = 100
	// suspectAge is how long a stripe must stay short of k shards before a repair
	// pass reports it unreadable (deep scrubs report at once).
	suspectAge = 30 * time.Second
	// abandonAge is how long a stripe must have been short of k shards, since this
	// worker first saw it so, before a pass that lists every node that could hold one
	// and finds it still short deletes what is left of it (dropPartial): far longer
	// than any put stays in flight. The first sighting survives passes that cannot list
	// every node (a node down) and passes while another node leads the PG.
	abandonAge = time.Minute
	// forgetAge bounds how long a short stripe that passes no longer see (its PG led
	// elsewhere, its holders unlisted) keeps its first sighting.
	forgetAge = time.Hour
)

// Config configures a Worker.
type Config struct {
	Self   placement.NodeID                             // this node (required)
	Map    func() *placement.Map                        // current map (required)
	Shards func(n placement.Node) chunkstore.ShardStore // a node's shard store (required)
	Codec  *erasure.Codec                               // nil: a new codec
	Logger *slog.Logger                                 // nil: discard
	Now    func() time.Time                             // required
	// BytesPerSecond bounds the shard bytes a worker writes (repair) and reads (deep
	// scrub); 0 is unlimited.
	BytesPerSecond int64
	// ConcurrentPGs bounds the PGs worked on at once; 0 means DefaultConcurrentPGs.
	ConcurrentPGs int
	// Interval is the time between passes when nothing changes; 0 means
	// DefaultInterval. A new map epoch starts a pass at once.
	Interval time.Duration
	// DeepInterval is the time between scheduled deep scrub passes, counted from the
	// worker's start or its last deep pass; 0 means DefaultDeepInterval, negative
	// disables the schedule (DeepScrub still runs one).
	DeepInterval time.Duration
	// VerifyInterval bounds how long a PG found whole goes without being listed again
	// while no node's change mark for it moves (see Pass); 0 means
	// DefaultVerifyInterval, negative never lists an unchanged PG again (until a
	// map change, a restart or a deep pass).
	VerifyInterval time.Duration
}

// Status is a worker's progress, shown by `coffer admin status` (nodestat.Repair, the
// type the node.Status answer carries).
type Status = nodestat.Repair

// Worker repairs the PGs its node leads. Safe for concurrent use.
type Worker struct {
	cfg   Config
	crc   *crc32.Table
	lim   *limiter
	kick  chan struct{}
	deepQ atomic.Bool

	rebuilt, copied, dropped, written, missing, corrupt atomic.Int64

	mu struct {
		sync.Mutex
		st     Status
		health map[uint32]placement.PGHealth
		// suspect holds stripes found with too few shards, with when they were first
		// found so. A repair pass reports a stripe unreadable only when it is still so
		// suspectAge later: a first sighting may be a write still in flight. A pass
		// that does not see a stripe keeps its entry (up to forgetAge) unless it listed
		// the stripe's PG on every node.
		suspect map[chunk.ID]time.Time
		// verified holds, by PG, the last listing that found the PG whole with
		// nothing to do: what a later pass may skip while nothing changed.
		verified map[uint32]pgVerified
	}
}

// nodeMark is one node's change mark of one PG (chunkstore.PGVersions).
type nodeMark struct{ inc, seq uint64 }

// pgVerified is a PG listing that found the PG whole: the placement it was judged
// under, the change mark every listed node had for the PG before it was listed, when,
// and the health it reported.
type pgVerified struct {
	place  string
	marks  map[placement.NodeID]nodeMark
	at     time.Time
	health placement.PGHealth
}

// placeKey is what a PG's verdict depends on in the map besides the shards: the PG
// count and profile, the desired owners with their states, and the reason it cannot be
// whole.
func placeKey(m *placement.Map, pw *pgWork) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d/%d+%d/%s", m.PGCount, m.Profile.K, m.Profile.M, pw.reason)
	for _, d := range pw.desired {
		fmt.Fprintf(&b, "/%s:%s", d.ID, d.State)
	}
	return b.String()
}

// New returns a worker. Errors wrap chunkstore.ErrInvalid.
func New(cfg Config) (*Worker, error) {
	if cfg.Self == "" || cfg.Map == nil || cfg.Shards == nil || cfg.Now == nil {
		return nil, fmt.Errorf("repair: config needs Self, Map, Shards and Now: %w", chunkstore.ErrInvalid)
	}
	if cfg.Codec == nil {
		cfg.Codec = erasure.NewCodec()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.ConcurrentPGs <= 0 {
		cfg.ConcurrentPGs = DefaultConcurrentPGs
	}
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultInterval
	}
	if cfg.DeepInterval == 0 {
		cfg.DeepInterval = DefaultDeepInterval
	}
	if cfg.VerifyInterval == 0 {
		cfg.VerifyInterval = DefaultVerifyInterval
	}
	w := &Worker{cfg: cfg, crc: crc32.MakeTable(crc32.Castagnoli), kick: make(chan struct{}, 1),
		lim: &limiter{rate: cfg.BytesPerSecond, now: cfg.Now}}
	w.mu.st.Node = cfg.Self
	w.mu.health = map[uint32]placement.PGHealth{}
	return w, nil
}

// Kick starts a pass soon (coalesced with any pending one).
func (w *Worker) Kick() {
	select {
	case w.kick <- struct{}{}:
	default:
	}
}

// DeepScrub makes the next pass a deep one and starts it soon.
func (w *Worker) DeepScrub() {
	w.deepQ.Store(true)
	w.Kick()
}

// Run runs passes until ctx is done: every Interval, when the map epoch changes, and
// when kicked; a pass is a deep scrub every DeepInterval and after DeepScrub.
func (w *Worker) Run(ctx context.Context) {
	var lastEpoch uint64
	poll := time.NewTicker(min(w.cfg.Interval, time.Second))
	defer poll.Stop()
	lastPass, lastDeep := time.Time{}, w.cfg.Now()
	for {
		m := w.cfg.Map()
		due := m != nil && (m.Epoch != lastEpoch || w.cfg.Now().Sub(lastPass) >= w.cfg.Interval)
		select {
		case <-w.kick:
			due = m != nil
		default:
		}
		if due {
			lastEpoch, lastPass = m.Epoch, w.cfg.Now()
			deep := w.deepQ.Swap(false) || (w.cfg.DeepInterval > 0 && lastPass.Sub(lastDeep) >= w.cfg.DeepInterval)
			if deep {
				lastDeep = lastPass
			}
			if _, err := w.Pass(ctx, deep); err != nil && ctx.Err() == nil {
				w.cfg.Logger.Warn("repair pass", "err", err)
			}
			continue
		}
		select {
		case <-ctx.Done():
			return
		case <-w.kick:
			w.Kick() // handled at the top of the loop
		case <-poll.C:
		}
	}
}

// Status returns a copy of the worker's progress.
func (w *Worker) Status() Status {
	w.mu.Lock()
	st := w.mu.st
	st.Unreadable = slices.Clone(st.Unreadable)
	w.mu.Unlock()
	st.ShardsRebuilt, st.ShardsCopied, st.ShardsDropped = w.rebuilt.Load(), w.copied.Load(), w.dropped.Load()
	st.BytesWritten, st.FoundMissing, st.FoundCorrupt = w.written.Load(), w.missing.Load(), w.corrupt.Load()
	return st
}

// Health returns the reports of the PGs this worker led in its last pass, by PG.
func (w *Worker) Health() []placement.PGHealth {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make([]placement.PGHealth, 0, len(w.mu.health))
	for _, h := range w.mu.health {
		out = append(out, h)
	}
	slices.SortFunc(out, func(a, b placement.PGHealth) int { return int(a.PG) - int(b.PG) })
	return out
}

// holding is one stored copy of a shard.
type holding struct {
	node placement.Node
	meta chunkstore.ShardMeta
}

// stripe is every known copy of every shard of one chunk.
type stripe struct {
	id       chunk.ID
	shards   [][]holding // by shard index
	shardLen uint32
}

// pgWork is one led PG.
type pgWork struct {
	pg      uint32
	desired []placement.Node
	stripes []*stripe
	risk    int // fewest healthy shards over its stripes before the pass
	reason  string
}

// pgReason says why PG pg, placed on desired (short: PlaceBest's reason), cannot be
// whole under m, or "": the positions the map cannot place, or owners that are down.
// Shards of a down owner wait (on the owner, or on a substitute for writes made while
// it was down) until it returns or is out; with no spare node left to take them even
// then, the reason is "cannot place".
func pgReason(m *placement.Map, pg uint32, desired []placement.Node, short string) string {
	if short != "" {
		return short
	}
	var down []string
	for _, d := range desired {
		if d.ID != "" && d.State != placement.StateActive {
			down = append(down, string(d.ID))
		}
	}
	if len(down) == 0 {
		return ""
	}
	slices.Sort(down)
	if len(m.Spares(pg, desired, len(down))) < len(down) {
		live, doms := 0, map[string]bool{}
		for _, nd := range m.Nodes {
			if nd.State == placement.StateActive {
				live++
				dom := "node:" + string(nd.ID)
				if nd.Domain != "" {
					dom = "domain:" + nd.Domain
				}
				doms[dom] = true
			}
		}
		return fmt.Sprintf("%s (down: %s)", strings.Replace(placement.ShortReason(len(desired), live, len(doms)), "eligible", "live", 1),
			strings.Join(down, ", "))
	}
	return "owner down: " + strings.Join(down, ", ") + " (its shards return when it does, or are rebuilt once it is out)"
}

// PassSummary is the counts of one completed pass (nodestat.Pass, the type admin status
// shows).
type PassSummary = nodestat.Pass

// PassResult summarises one pass.
type PassResult struct {
	// PGs and Stripes count what the pass listed and checked; Unchanged the led PGs it
	// did not list because nothing changed since a listing found them whole (their
	// health is that listing's).
	PGs, Stripes, Unchanged  int
	Rebuilt, Copied, Dropped int64
	Missing, Corrupt         int64
	Unreadable               []string
	// Abandoned counts the partial stripes deleted (dropPartial): chunks of puts that
	// failed with fewer than k shards stored.
	Abandoned int64
}

// Pass runs one repair pass (a deep scrub when deep) over the PGs this node leads under
// the current map, and returns what it did.
func (w *Worker) Pass(ctx context.Context, deep bool) (PassResult, error) {
	start := w.cfg.Now()
	m := w.cfg.Map()
	if m == nil {
		return PassResult{}, fmt.Errorf("repair: no cluster map: %w", chunkstore.ErrUnavailable)
	}
	n, k := m.Profile.N(), m.Profile.K
	work := map[uint32]*pgWork{}
	for pg := range m.PGCount {
		// A map with too few eligible nodes places what it can (the rest of the
		// positions are empty): repair still rebuilds and moves those, and the PG
		// reports why it cannot be whole.
		desired, short, err := m.PlaceBest(pg, n)
		if err != nil {
			return PassResult{}, fmt.Errorf("repair: place pg %d at epoch %d: %w", pg, m.Epoch, err)
		}
		for _, d := range desired {
			if d.State == placement.StateActive {
				if d.ID == w.cfg.Self {
					work[pg] = &pgWork{pg: pg, desired: desired, reason: pgReason(m, pg, desired, short)}
				}
				break
			}
		}
	}
	w.mu.Lock()
	w.mu.st.Running, w.mu.st.Deep, w.mu.st.Epoch, w.mu.st.PGsLed, w.mu.st.PGsDone = true, deep, m.Epoch, len(work), 0
	w.mu.Unlock()
	peers := &peerLog{}
	defer func() {
		w.mu.Lock()
		w.mu.st.Running = false
		w.mu.Unlock()
	}()

	// Which PGs need listing: every led PG but those whose listing last found them
	// whole, under the same placement, with every listed node's change mark for them
	// unchanged since (read before that listing, so a write during it moved a mark).
	// Marks are read before this pass's listings for the same reason. whole: every
	// node that may hold a shard was listed (none down, none failed), so a stripe found
	// short of k shards is short everywhere.
	var listed []placement.Node
	marks := map[placement.NodeID]chunkstore.PGVersions{}
	failed := map[placement.NodeID]bool{}
	var listErrs []error
	whole := true
	for _, nd := range m.Nodes {
		if nd.State == placement.StateDecommissioned || len(work) == 0 {
			continue
		}
		if nd.State == placement.StateDown {
			whole = false
			continue
		}
		st := w.cfg.Shards(nd)
		if st == nil {
			whole = false
			continue
		}
		listed = append(listed, nd)
		if pl, ok := st.(chunkstore.PGLister); ok {
			v, err := pl.PGVersions(ctx, m.PGCount)
			if err == nil && len(v.Seqs) == 0 {
				err = fmt.Errorf("no change marks: %w", chunkstore.ErrCorrupt)
			}
			if err != nil {
				if ctx.Err() != nil {
					return PassResult{}, fmt.Errorf("repair: %w", ctx.Err())
				}
				failed[nd.ID] = true // not listed either: it holds nothing this pass
				whole = false
				listErrs = append(listErrs, fmt.Errorf("list shards of %s: %w", nd.ID, err))
				peers.fail(nd.ID, "list", err)
				continue
			}
			marks[nd.ID] = v
		}
	}
	w.mu.Lock()
	prevVerified := w.mu.verified
	w.mu.Unlock()
	unchanged := map[uint32]pgVerified{}
	var stale []uint32 // unchanged, but listed longer than VerifyInterval ago
	for pg, pw := range work {
		pv, ok := prevVerified[pg]
		if !ok || deep || pv.place != placeKey(m, pw) || len(pv.marks) != len(listed)-len(failed) {
			continue
		}
		same := true
		for _, nd := range listed {
			if failed[nd.ID] {
				continue
			}
			v, ok := marks[nd.ID]
			if !ok || pv.marks[nd.ID] != (nodeMark{v.Incarnation, v.Of(pg)}) {
				same = false
				break
			}
		}
		if !same {
			continue
		}
		unchanged[pg] = pv
		if w.cfg.VerifyInterval > 0 && start.Sub(pv.at) >= w.cfg.VerifyInterval {
			stale = append(stale, pg)
		}
	}
	// Stale PGs are listed again a few per pass, oldest first, so that every PG is
	// listed about every VerifyInterval without all of them coming due at once.
	slices.SortFunc(stale, func(a, b uint32) int {
		if c := unchanged[a].at.Compare(unchanged[b].at); c != 0 {
			return c
		}
		return int(a) - int(b)
	})
	budget := max(1, int((int64(len(work))*int64(w.cfg.Interval)+int64(w.cfg.VerifyInterval)-1)/max(int64(w.cfg.VerifyInterval), 1)))
	for _, pg := range stale[:min(budget, len(stale))] {
		delete(unchanged, pg)
	}

	// List what every reachable node holds for the led PGs to check: one listing per PG
	// on a node that lists by PG (its cost grows with those PGs' shards), the whole
	// index on one that does not.
	byID := map[chunk.ID]*stripe{}
	for _, nd := range listed {
		if failed[nd.ID] {
			continue
		}
		st := w.cfg.Shards(nd)
		add := func(si chunkstore.ShardInfo) error {
			pg := m.PG(si.Key.ID)
			pw := work[pg]
			if pw == nil || int(si.Key.Index) >= n {
				return nil
			}
			if _, skip := unchanged[pg]; skip {
				return nil
			}
			s := byID[si.Key.ID]
			if s == nil {
				s = &stripe{id: si.Key.ID, shards: make([][]holding, n)}
				byID[si.Key.ID] = s
				pw.stripes = append(pw.stripes, s)
			}
			s.shards[si.Key.Index] = append(s.shards[si.Key.Index], holding{node: nd, meta: si.Meta})
			s.shardLen = max(s.shardLen, si.Len)
			return nil
		}
		var err error
		if pl, ok := st.(chunkstore.PGLister); ok {
			for pg := range work {
				if _, skip := unchanged[pg]; skip || err != nil {
					continue
				}
				err = pl.EnumeratePG(ctx, m.PGCount, pg, nil, add)
			}
		} else if len(unchanged) < len(work) {
			err = st.EnumerateShards(ctx, nil, add)
		}
		if err != nil {
			if ctx.Err() != nil {
				return PassResult{}, fmt.Errorf("repair: %w", ctx.Err())
			}
			failed[nd.ID] = true
			listErrs = append(listErrs, fmt.Errorf("list shards of %s: %w", nd.ID, err))
			peers.fail(nd.ID, "list", err)
			whole = false
		}
	}

	// Riskiest PGs first.
	pgs := make([]*pgWork, 0, len(work))
	for _, pw := range work {
		if _, skip := unchanged[pw.pg]; skip {
			continue
		}
		pw.risk = n
		for _, s := range pw.stripes {
			pw.risk = min(pw.risk, healthy(pw.desired, s))
		}
		pgs = append(pgs, pw)
	}
	slices.SortFunc(pgs, func(a, b *pgWork) int {
		if a.risk != b.risk {
			return a.risk - b.risk
		}
		return int(a.pg) - int(b.pg)
	})

	w.mu.Lock()
	prevSuspect := w.mu.suspect
	w.mu.Unlock()
	suspect := map[chunk.ID]time.Time{}
	var res PassResult
	var resMu sync.Mutex
	health := make(map[uint32]placement.PGHealth, len(work))
	verified := make(map[uint32]pgVerified, len(work))
	for pg, pv := range unchanged {
		h := pv.health
		h.Epoch = m.Epoch // the same placement, and nothing changed: still so now
		health[pg] = h
		verified[pg] = pv
		res.Unchanged++
	}
	w.mu.Lock()
	w.mu.st.PGsDone = res.Unchanged
	w.mu.Unlock()
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(w.cfg.ConcurrentPGs, max(len(pgs), 1)) {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= len(pgs) || ctx.Err() != nil {
					return
				}
				pw := pgs[i]
				// An empty PG counts the positions a new stripe would fill: with a
				// position the map cannot place or an owner down, it is degraded too.
				placeable := placement.StripeHealthy(pw.desired, allHeld(n))
				h := placement.PGHealth{PG: pw.pg, Epoch: m.Epoch, Reporter: w.cfg.Self, N: n, MinHealthy: placeable, Reason: pw.reason}
				var named []string
				var pr PassResult
				var full []placement.NodeID // owners whose disk refused a shard
				w.recheck(ctx, pw)
				for _, s := range pw.stripes {
					if ctx.Err() != nil {
						return
					}
					o := w.fixStripe(ctx, m.Epoch, pw.desired, k, s, deep, peers)
					unreadable := false
					if o.unreadable != "" {
						first, seen := prevSuspect[s.id]
						if !seen {
							first = start
						}
						// A stripe short of k shards everywhere for abandonAge is what a
						// failed put left: nothing can read it, and it only keeps its PG
						// unreadable. Its shards go (a later put of the chunk writes a
						// whole stripe again).
						if seen && whole && start.Sub(first) >= abandonAge && w.dropPartial(ctx, m, k, s, peers) {
							pr.Abandoned++
							continue
						}
						resMu.Lock()
						suspect[s.id] = first
						resMu.Unlock()
						if deep || start.Sub(first) >= suspectAge {
							unreadable = true
							named = append(named, fmt.Sprintf("pg %d: %s", pw.pg, o.unreadable))
						}
					}
					for _, id := range o.full {
						if !slices.Contains(full, id) {
							full = append(full, id)
						}
					}
					h.Stripes++
					h.Bytes += int64(s.shardLen) * int64(n)
					h.MinHealthy = min(h.MinHealthy, o.healthy)
					if o.healthy < n {
						h.Degraded++
					}
					if unreadable {
						h.Unreadable++
					}
					if o.corrupt > 0 {
						pr.Corrupt += int64(o.corrupt)
					}
					if o.stray > 0 {
						h.Misplaced += o.stray
					}
					pr.Rebuilt += int64(o.rebuilt)
					pr.Copied += int64(o.copied)
					pr.Dropped += int64(o.dropped)
					pr.Missing += int64(o.missing)
				}
				if len(full) > 0 && h.Reason == "" {
					slices.Sort(full)
					names := make([]string, len(full))
					for i, id := range full {
						names[i] = string(id)
					}
					h.Reason = "owner disk full: " + strings.Join(names, ", ") + " (its shards wait on substitutes until it has space)"
				}
				resMu.Lock()
				health[pw.pg] = h
				if fine := h.Degraded == 0 && h.Unreadable == 0 && h.Misplaced == 0 && h.Reason == "" &&
					pr.Rebuilt+pr.Copied+pr.Dropped+pr.Missing+pr.Corrupt+pr.Abandoned == 0; fine {
					if pv, ok := w.verifiedOf(m, pw, listed, marks, failed, start, h); ok {
						verified[pw.pg] = pv
					}
				}
				res.PGs++
				res.Stripes += h.Stripes
				res.Rebuilt += pr.Rebuilt
				res.Copied += pr.Copied
				res.Dropped += pr.Dropped
				res.Missing += pr.Missing
				res.Corrupt += pr.Corrupt
				res.Abandoned += pr.Abandoned
				res.Unreadable = append(res.Unreadable, named...)
				resMu.Unlock()
				w.mu.Lock()
				w.mu.st.PGsDone++
				w.mu.Unlock()
			}
		})
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return res, fmt.Errorf("repair: %w", err)
	}
	// A short stripe this pass did not list keeps its first sighting unless the pass
	// listed its PG on every node (then it is gone): a node down or the PG led by
	// another node for a while must not restart the abandonAge clock.
	for id, first := range prevSuspect {
		if _, ok := byID[id]; ok || start.Sub(first) >= forgetAge {
			continue
		}
		if pg := m.PG(id); whole && work[pg] != nil {
			if _, skip := unchanged[pg]; !skip {
				continue
			}
		}
		suspect[id] = first
	}
	slices.Sort(res.Unreadable)
	w.mu.Lock()
	w.mu.health = health
	w.mu.suspect = suspect
	w.mu.verified = verified
	w.mu.st.Last = PassSummary{Deep: deep, Epoch: m.Epoch, Stripes: res.Stripes, Rebuilt: res.Rebuilt, Copied: res.Copied,
		Dropped: res.Dropped, Missing: res.Missing, Corrupt: res.Corrupt, Unreadable: len(res.Unreadable)}
	w.mu.st.Passes++
	if deep {
		w.mu.st.DeepPasses++
		w.mu.st.LastDeep = w.mu.st.Last
	}
	w.mu.st.Unreadable = res.Unreadable[:min(len(res.Unreadable), maxNamed)]
	w.mu.st.LastPass = w.cfg.Now().Sub(start).Round(time.Millisecond).String()
	w.mu.st.LastError = ""
	if len(listErrs) > 0 {
		w.mu.st.LastError = errors.Join(listErrs...).Error()
	}
	w.mu.Unlock()
	peers.log(w.cfg.Logger, m.Epoch)
	for _, u := range res.Unreadable {
		w.cfg.Logger.Error("repair: stripe unreadable", "stripe", u)
	}
	if res.Abandoned > 0 {
		w.cfg.Logger.Info("repair: deleted partial stripes of failed puts (short of k shards on every node)",
			"epoch", m.Epoch, "stripes", res.Abandoned)
	}
	if res.Rebuilt+res.Copied+res.Dropped > 0 {
		w.cfg.Logger.Info("repair pass", "epoch", m.Epoch, "deep", deep, "pgs", res.PGs, "stripes", res.Stripes,
			"rebuilt", res.Rebuilt, "copied", res.Copied, "dropped", res.Dropped, "took", w.cfg.Now().Sub(start))
	}
	return res, nil
}

// verifiedOf returns the record of a listing of pw that found it whole, if every listed
// node that answered gave change marks (one that does not implement
// chunkstore.PGLister leaves nothing to compare with, and the PG is listed again). Nodes
// that failed to answer are left out of the record: a later pass where one answers
// again lists the PG again.
func (w *Worker) verifiedOf(m *placement.Map, pw *pgWork, listed []placement.Node, marks map[placement.NodeID]chunkstore.PGVersions,
	failed map[placement.NodeID]bool, at time.Time, h placement.PGHealth) (pgVerified, bool) {
	pv := pgVerified{place: placeKey(m, pw), marks: make(map[placement.NodeID]nodeMark, len(listed)), at: at, health: h}
	for _, nd := range listed {
		if failed[nd.ID] {
			continue // unreachable: its copies count as absent, which the health shows
		}
		v, ok := marks[nd.ID]
		if !ok {
			return pgVerified{}, false
		}
		pv.marks[nd.ID] = nodeMark{v.Incarnation, v.Of(pw.pg)}
	}
	return pv, true
}

// recheck asks each active desired owner of pw, in one HasShards call per node, for the
// shards the listing did not find it holding, and records those it now holds (with the
// stripe's majority metadata). A pass lists node after node while backups keep writing,
// so a stripe written during the listing shows up on the nodes listed after its write
// and not on those listed before; without a second look the pass would rebuild shards
// that had already arrived. A node that does not answer is left as the listing found it.
func (w *Worker) recheck(ctx context.Context, pw *pgWork) {
	type ask struct {
		s *stripe
		i int
	}
	asks := map[placement.NodeID][]ask{}
	for _, s := range pw.stripes {
		for i, d := range pw.desired {
			if d.State == placement.StateActive && !holds(s.shards[i], d.ID) {
				asks[d.ID] = append(asks[d.ID], ask{s, i})
			}
		}
	}
	for i, d := range pw.desired {
		as := asks[d.ID]
		if len(as) == 0 || ctx.Err() != nil {
			continue
		}
		delete(asks, d.ID) // a node at several positions is asked once
		st := w.cfg.Shards(pw.desired[i])
		if st == nil {
			continue
		}
		keys := make([]chunkstore.ShardKey, len(as))
		for j, a := range as {
			keys[j] = chunkstore.ShardKey{ID: a.s.id, Index: uint8(a.i)}
		}
		has, err := st.HasShards(ctx, keys)
		if err != nil || len(has) != len(keys) {
			continue
		}
		for j, a := range as {
			if has[j] {
				a.s.shards[a.i] = append(a.s.shards[a.i], holding{node: d, meta: majorityMeta(a.s)})
			}
		}
	}
}

// allHeld returns n true values.
func allHeld(n int) []bool {
	out := make([]bool, n)
	for i := range out {
		out[i] = true
	}
	return out
}

// healthy counts the positions whose active desired owner holds the shard.
func healthy(desired []placement.Node, s *stripe) int {
	held := make([]bool, len(desired))
	for i, d := range desired {
		held[i] = holds(s.shards[i], d.ID)
	}
	return placement.StripeHealthy(desired, held)
}

func holds(hs []holding, id placement.NodeID) bool {
	for _, h := range hs {
		if h.node.ID == id {
			return true
		}
	}
	return false
}

func crcOf(w *Worker, data []byte) uint32 { return crc32.Checksum(data, w.crc) }
