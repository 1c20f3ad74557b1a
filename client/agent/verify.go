package agent

import (
	"context"
	"errors"
	"math/rand/v2"

	"github.com/cofferhq/coffer/client"
	"github.com/cofferhq/coffer/meta"
)

// ChunkVerifier runs a policy's verify schedules with the agent library: chunks of the
// policy's snapshots (tagged "policy-NAME") read back through the chunk store,
// decrypted and checked against their IDs (client.Agent.VerifyChunks). A sampled check
// covers the snapshots committed since this host's last completed verify of the policy.
type ChunkVerifier struct {
	Agent *client.Agent   // an open vault
	Jobs  meta.JobService // the cluster: where the last verify is looked up
}

// Verify implements Verifier.
func (v ChunkVerifier) Verify(ctx context.Context, p meta.BackupPolicy, full bool) (Outcome, error) {
	opts := client.VerifyOptions{Full: full, Tag: "policy-" + p.Name, Seed: rand.Uint64()}
	if !full {
		if p.Verify != nil {
			opts.Sample = p.Verify.Sample
		}
		since, err := client.LastVerified(ctx, v.Jobs, "", p.Name)
		if err != nil {
			return Outcome{}, err
		}
		opts.Since = since
	}
	rep, err := v.Agent.VerifyChunks(ctx, opts)
	end := client.VerifyJobEnd(rep, err)
	out := Outcome{Status: end.Status, Stats: end.Stats, Report: end.Report}
	switch {
	case err != nil:
		return out, err // the check could not run: may be transient
	case end.Status != meta.JobCompleted:
		return out, errors.New(end.Error) // bad chunks
	}
	return out, nil
}
