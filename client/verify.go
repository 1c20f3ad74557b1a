package client

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/cofferhq/coffer/chunkstore/chunk"
	"github.com/cofferhq/coffer/client/tree"
	"github.com/cofferhq/coffer/meta"
)

// VerifyOptions says what VerifyChunks checks.
type VerifyOptions struct {
	// Full checks every chunk (trees and data) of every snapshot of the vault; otherwise
	// Sample data chunks (and the tree chunks) of each snapshot committed after Since.
	Full bool
	// Sample is the data chunks read per snapshot (0: meta.DefaultVerifySample).
	Sample int
	// Since, for a sampled check, skips snapshots committed at or before it (the
	// previous verify's report Through).
	Since time.Time
	// Seed picks the sample (deterministic for a given seed).
	Seed uint64
	// Tag, when set, limits the check to the snapshots carrying it (a policy's
	// "policy-NAME").
	Tag string
}

// VerifyChunks reads chunks of the vault's snapshots back through the chunk store as a
// restore does (shards fetched and decoded by the store, each chunk decrypted and
// authenticated against its ID) and reports the bad ones. Every tree chunk of a checked
// snapshot is read (the walk needs them); data chunks are all read (Full) or sampled.
// A chunk is read once per check however many snapshots share it. The report keeps the
// first meta.MaxVerifyFindings findings; Bad counts all. The error is for failures to
// list snapshots or a cancelled ctx, not for bad chunks (see the report's Bad).
func (a *Agent) VerifyChunks(ctx context.Context, opts VerifyOptions) (meta.VerifyReport, error) {
	rep := meta.VerifyReport{Full: opts.Full}
	if err := a.check(); err != nil {
		return rep, err
	}
	if opts.Sample < 0 {
		return rep, fmt.Errorf("client: verify sample %d chunks: must not be negative", opts.Sample)
	}
	sample := opts.Sample
	if sample == 0 {
		sample = meta.DefaultVerifySample
	}
	snaps, err := a.Snapshots(ctx)
	if err != nil {
		return rep, err
	}
	slices.SortFunc(snaps, func(x, y meta.Snapshot) int { return x.Time.Compare(y.Time) })
	rng := rand.New(rand.NewPCG(opts.Seed, 0x76657269667921))
	checked := map[chunk.ID]bool{}
	bad := func(snap meta.Snapshot, id chunk.ID, err error) {
		rep.Bad++
		if len(rep.Findings) < meta.MaxVerifyFindings {
			msg := err.Error()
			if len(msg) > 512 {
				msg = msg[:509] + "..."
			}
			rep.Findings = append(rep.Findings, meta.VerifyFinding{Snapshot: snap.ID.String(), Chunk: id.String(), Error: msg})
		}
	}
	// read fetches and opens chunk id once per check.
	read := func(snap meta.Snapshot, id chunk.ID) ([]byte, bool) {
		if checked[id] {
			return nil, true
		}
		checked[id] = true
		rep.Chunks++
		sealed, err := a.cfg.Chunks.Get(ctx, id)
		if err == nil {
			var plain []byte
			plain, err = a.keys.Open(nil, id, sealed)
			if err == nil {
				rep.Bytes += int64(len(plain))
				return plain, true
			}
		}
		if ctx.Err() == nil {
			bad(snap, id, fmt.Errorf("client: chunk %s: %w", id.Str(), err))
		}
		return nil, false
	}
	for _, snap := range snaps {
		if !opts.Full && !snap.Time.After(opts.Since) || opts.Tag != "" && !slices.Contains(snap.Tags, opts.Tag) {
			continue
		}
		if err := ctx.Err(); err != nil {
			return rep, err
		}
		rep.Snapshots++
		rep.Through = snap.Time.UTC().Format(time.RFC3339Nano)
		var data []chunk.ID
		seen := map[chunk.ID]bool{}
		stack := []chunk.ID{snap.Tree}
		for len(stack) > 0 {
			id := stack[len(stack)-1]
			stack = stack[:len(stack)-1]
			if seen[id] {
				continue
			}
			seen[id] = true
			_, ok := read(snap, id) // the store's copy, whatever the tree cache holds
			t, err := a.trees.Load(ctx, id)
			if err != nil {
				if ctx.Err() != nil {
					return rep, ctx.Err()
				}
				if ok {
					bad(snap, id, err)
				}
				continue
			}
			for _, n := range t.Nodes {
				if n.Type == tree.TypeDir && n.Subtree != nil {
					stack = append(stack, *n.Subtree)
				}
				for _, e := range n.Content {
					if !e.Hole && !seen[e.ID] {
						seen[e.ID] = true
						data = append(data, e.ID)
					}
				}
			}
		}
		if !opts.Full && len(data) > sample {
			rng.Shuffle(len(data), func(i, j int) { data[i], data[j] = data[j], data[i] })
			data = data[:sample]
		}
		for _, id := range data {
			read(snap, id)
		}
		if err := ctx.Err(); err != nil {
			return rep, err
		}
	}
	return rep, nil
}

// RunVerifyJob runs VerifyChunks as a job of kind verify: started with start (its Kind
// set to meta.JobVerify), reported final with the report on the job record, status
// failed when any chunk is bad or the check could not run. For a sampled check with no
// opts.Since, the snapshots since the host and policy's last completed verify job are
// checked (LastVerified). It returns the ended job.
func (a *Agent) RunVerifyJob(ctx context.Context, jobs meta.JobService, start meta.JobStart, opts VerifyOptions) (meta.Job, error) {
	start.Kind = meta.JobVerify
	if start.Vault == "" {
		start.Vault = a.vault.ID
	}
	if !opts.Full && opts.Since.IsZero() {
		since, err := LastVerified(ctx, jobs, start.Host, start.Policy)
		if err != nil {
			return meta.Job{}, err
		}
		opts.Since = since
	}
	j, err := jobs.StartJob(ctx, start)
	if err != nil {
		return meta.Job{}, fmt.Errorf("client: start verify job: %w", err)
	}
	rep, verr := a.VerifyChunks(ctx, opts)
	r := VerifyJobEnd(rep, verr)
	r.ID = j.ID
	// The report goes in even when ctx ended, so the job does not stay running.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
	defer cancel()
	ended, err := jobs.ReportJob(rctx, r)
	if err != nil {
		return j, fmt.Errorf("client: report verify job %s: %w", j.ID, err)
	}
	return ended, verr
}

// VerifyJobEnd is the final report of a verify job that found rep (verr: the check
// could not run): completed, or failed when a chunk is bad or the check did not run;
// the report is on it either way.
func VerifyJobEnd(rep meta.VerifyReport, verr error) meta.JobReport {
	r := meta.JobReport{Final: true, Status: meta.JobCompleted, Report: &rep, Stats: meta.JobStats{BytesRead: rep.Bytes}}
	switch {
	case verr != nil:
		r.Status, r.Error = meta.JobFailed, verr.Error()
	case rep.Bad > 0:
		first := "?"
		if len(rep.Findings) > 0 {
			first = fmt.Sprintf("chunk %s: %s", shortID(rep.Findings[0].Chunk), rep.Findings[0].Error)
		}
		r.Status, r.Error = meta.JobFailed, fmt.Sprintf("%d of %d chunks bad (first: %s)", rep.Bad, rep.Chunks, first)
	}
	return r
}

func shortID(hex string) string {
	if len(hex) > 16 {
		return hex[:16]
	}
	return hex
}

// LastVerified is the Through of the newest completed verify job of host and policy
// ("" host: the caller's own jobs as the service filters them), zero when there is none.
func LastVerified(ctx context.Context, jobs meta.JobService, host, policy string) (time.Time, error) {
	list, err := jobs.ListJobs(ctx, meta.JobFilter{Host: host, Policy: policy})
	if err != nil {
		return time.Time{}, fmt.Errorf("client: list verify jobs: %w", err)
	}
	var last time.Time
	for _, j := range list {
		if j.Kind != meta.JobVerify || j.Status != meta.JobCompleted || j.Report == nil || j.Report.Through == "" {
			continue
		}
		if t, err := time.Parse(time.RFC3339Nano, j.Report.Through); err == nil && t.After(last) {
			last = t
		}
	}
	return last, nil
}
