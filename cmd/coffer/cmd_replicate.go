package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/cofferhq/coffer/meta"
	"github.com/cofferhq/coffer/transport"
	"github.com/cofferhq/coffer/transport/pki"
)

func adminReplicateAddSpec() *cmdSpec {
	return &cmdSpec{
		name:  "admin replicate add",
		short: "replicate a vault of another cluster into this one (a second site)",
		long: `Creates a replication job on this (the TARGET) cluster: the vault --vault of
the SOURCE cluster, reached at --source (HOST:PORT of its meta servers,
comma-separated) and trusted through its CA certificate --source-ca, is copied
into a replica vault of the same name here. The job presents its own
certificate of the source (--cert, --key): role replication, scoped to the
vault, read-only. Make it this way: "coffer cert request --principal NAME
--key job-key.pem --csr job.csr" here, "coffer admin cert issue --role
replication --principal NAME --csr job.csr --vaults V --out job.pem" on the
source (or "cofferd ca sign --role replication --vaults V" on its CA host).
The key goes to this cluster's meta servers (kept in Raft, never shown
again); remove the local file afterwards.

The meta leader runs the job at --schedule (cron, UTC, as policy schedules;
none: only when asked with "coffer admin replicate run"): it copies the sealed
chunks this cluster lacks (never plaintext: no key is needed here), then the
snapshot records with their locks and holds (a compliance lock on the source is
one here, never shorter) and the vault's key wraps. Deletions are not
replicated: a snapshot forgotten on the source stays here until this cluster's
retention removes it. --limit-rate bounds the bytes copied per second (K, M, G
suffixes). Each run is a job ("coffer jobs --policy NAME", kind replication).
--name defaults to the vault's name. Admin only; audited.

With --json the job is printed as "coffer admin replicate list --json" prints
one.`,
		examples: []string{
			"coffer admin replicate add --source a1.example:7443,a2.example:7443 --source-ca site-a-ca.pem --vault web --cert job.pem --key job-key.pem --schedule '0 3 * * *' --limit-rate 50M",
		},
		new: func() command { return &replicateAddCmd{} },
	}
}

type replicateAddCmd struct {
	name, source, sourceCA, cert, key, schedule string
	limit                                       byteSize
}

func (c *replicateAddCmd) addFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.name, "name", "", "the job's `NAME` (default the vault's name)")
	fs.StringVar(&c.source, "source", "", "the source cluster's meta servers, `HOST:PORT`[,...] (required)")
	fs.StringVar(&c.sourceCA, "source-ca", "", "the source cluster's CA certificate `FILE` (PEM; required)")
	fs.StringVar(&c.cert, "cert", "", "the job's replication certificate on the source, `FILE` (PEM; required)")
	fs.StringVar(&c.key, "key", "", "the certificate's private key `FILE` (required)")
	fs.StringVar(&c.schedule, "schedule", "", "cron `EXPR` (UTC) of the runs (default: only replicate run)")
	fs.Var(&c.limit, "limit-rate", "copy at most `RATE` bytes per second (K, M, G suffixes; default no limit)")
}

func (c *replicateAddCmd) run(ctx context.Context, a *app, args []string) error {
	spec := adminReplicateAddSpec()
	if len(args) > 0 {
		return usagef(spec, "admin replicate add takes no arguments, got %q", args[0])
	}
	// --vault is the global flag (given here, not taken from the configuration).
	vault := a.g.vault
	if c.source == "" || c.sourceCA == "" || vault == "" || c.cert == "" || c.key == "" {
		return usagef(spec, "--source, --source-ca, --vault, --cert and --key are required")
	}
	r := meta.Replication{Name: c.name, Source: splitComma(c.source), Vault: meta.VaultID(vault), Schedule: c.schedule, LimitRate: int64(c.limit)}
	if r.Name == "" {
		r.Name = vault
	}
	var err error
	if r.SourceCA, err = os.ReadFile(c.sourceCA); err != nil {
		return plainf(err, "--source-ca: %v", err)
	}
	if r.Cert, err = os.ReadFile(c.cert); err != nil {
		return plainf(err, "--cert: %v", err)
	}
	if r.Key, err = os.ReadFile(c.key); err != nil {
		return plainf(err, "--key: %v", err)
	}
	id, err := pki.NewIdentity(r.SourceCA, r.Cert, r.Key)
	if err != nil {
		return plainf(err, "the certificate, key and source CA do not fit together: %v", err)
	}
	if id.Role() != transport.RoleReplication {
		return plainf(nil, "--cert has role %q: a replication job needs a certificate of role replication (coffer admin cert issue --role replication on the source)", id.Role())
	}
	if !vaultsContain(pki.VaultsOf(id.Leaf()), vault) {
		return plainf(nil, "--cert names vaults %v, not %s: the source would refuse every read", pki.VaultsOf(id.Leaf()), vault)
	}
	r.Principal, r.CertNotAfter = id.Principal(), id.Leaf().NotAfter.UTC()
	if err := meta.ValidateReplication(r); err != nil {
		return usagef(spec, "%v", errorMessage(err))
	}
	s, err := connect(ctx, a)
	if err != nil {
		return err
	}
	defer s.Close()
	out, err := s.meta.AddReplication(ctx, r)
	if err != nil {
		return retentionErr(err, "add replication %s", r.Name)
	}
	if a.g.json {
		return writeJSON(a.stdout, out)
	}
	when := "only when asked (coffer admin replicate run " + out.Name + ")"
	if out.Schedule != "" {
		when = "at " + out.Schedule + " (UTC)"
	}
	fmt.Fprintf(a.stdout, "replication %s: vault %s from %s into the replica vault %s here, %s\n",
		out.Name, out.Vault, strings.Join(out.Source, ","), out.Vault, when)
	return nil
}

func vaultsContain(vs []string, v string) bool {
	for _, x := range vs {
		if x == v {
			return true
		}
	}
	return false
}

func adminReplicateListSpec() *cmdSpec {
	return &cmdSpec{
		name:  "admin replicate list",
		short: "list the replication jobs and their progress",
		long: `Lists this cluster's replication jobs: name, vault, source, schedule, rate
limit, the last run (its job and status), the last success, and the totals
copied (sealed bytes, chunks, snapshots). Credentials are never shown.

With --json an array of {"name","source","principal","cert_not_after","vault",
"schedule"?,"limit_rate"?,"created","by","run_requested"?,"state":{
"cursor_time"?,"last_run"?,"last_job"?,"last_status"?,"last_error"?,
"last_success"?,"bytes","chunks","snapshots"}}.`,
		examples: []string{"coffer admin replicate list", "coffer admin replicate list --json"},
		new:      func() command { return &replicateListCmd{} },
	}
}

type replicateListCmd struct{}

func (c *replicateListCmd) addFlags(*flag.FlagSet) {}

func (c *replicateListCmd) run(ctx context.Context, a *app, args []string) error {
	if len(args) > 0 {
		return usagef(adminReplicateListSpec(), "admin replicate list takes no arguments, got %q", args[0])
	}
	s, err := connect(ctx, a)
	if err != nil {
		return err
	}
	defer s.Close()
	jobs, err := s.meta.ListReplications(ctx)
	if err != nil {
		return retentionErr(err, "list replications")
	}
	if a.g.json {
		if jobs == nil {
			jobs = []meta.Replication{}
		}
		return writeJSON(a.stdout, jobs)
	}
	if len(jobs) == 0 {
		fmt.Fprintln(a.stdout, "no replication jobs")
		return nil
	}
	tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tVAULT\tSOURCE\tSCHEDULE\tLIMIT\tLAST RUN\tSTATUS\tLAST SUCCESS\tCOPIED\tSNAPSHOTS")
	for _, j := range jobs {
		sched, limit := j.Schedule, "-"
		if sched == "" {
			sched = "on request"
		}
		if j.LimitRate > 0 {
			limit = formatBytes(j.LimitRate) + "/s"
		}
		status := j.State.LastStatus
		if status == "" {
			status = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s in %d chunks\t%d\n", j.Name, j.Vault, strings.Join(j.Source, ","), sched, limit,
			timeOrDash(a, j.State.LastRun), status, timeOrDash(a, j.State.LastSuccess), formatBytes(j.State.Bytes), j.State.Chunks, j.State.Snapshots)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, j := range jobs {
		if j.State.LastError != "" {
			fmt.Fprintf(a.stdout, "%s: last run %s failed: %s\n", j.Name, j.State.LastJob, j.State.LastError)
		}
	}
	return nil
}

func adminReplicateRunSpec() *cmdSpec {
	return &cmdSpec{
		name:  "admin replicate run",
		args:  "NAME",
		short: "run a replication job now",
		long: `Asks this cluster's meta leader to run replication job NAME now (it starts
within a second, unless a run of the job is in progress). Follow it with
"coffer jobs --policy NAME" or "coffer admin replicate list". A run resumes
where an interrupted one stopped: chunks that arrived are not sent again.
Admin only; audited.`,
		examples: []string{"coffer admin replicate run web"},
		new:      func() command { return &replicateRunCmd{} },
	}
}

type replicateRunCmd struct{}

func (c *replicateRunCmd) addFlags(*flag.FlagSet) {}

func (c *replicateRunCmd) run(ctx context.Context, a *app, args []string) error {
	if len(args) != 1 {
		return usagef(adminReplicateRunSpec(), "admin replicate run takes one job name, got %d arguments", len(args))
	}
	s, err := connect(ctx, a)
	if err != nil {
		return err
	}
	defer s.Close()
	r, err := s.meta.RunReplication(ctx, args[0])
	if err != nil {
		if errors.Is(err, meta.ErrNotFound) {
			return plainf(err, "no replication job %s (coffer admin replicate list)", args[0])
		}
		return retentionErr(err, "run replication %s", args[0])
	}
	if a.g.json {
		return writeJSON(a.stdout, r)
	}
	fmt.Fprintf(a.stdout, "replication %s: run requested; follow it with coffer jobs --policy %s\n", r.Name, r.Name)
	return nil
}

func adminReplicateRemoveSpec() *cmdSpec {
	return &cmdSpec{
		name:  "admin replicate remove",
		args:  "NAME",
		short: "delete a replication job (the replica vault stays)",
		long: `Deletes replication job NAME and its credentials from this cluster. Its replica
vault and snapshots stay, restorable with the vault's passphrase, under this
cluster's retention. Revoke the job's certificate on the source too ("coffer
admin cert revoke --principal NAME" there). Admin only; audited.`,
		examples: []string{"coffer admin replicate remove web"},
		new:      func() command { return &replicateRemoveCmd{} },
	}
}

type replicateRemoveCmd struct{}

func (c *replicateRemoveCmd) addFlags(*flag.FlagSet) {}

func (c *replicateRemoveCmd) run(ctx context.Context, a *app, args []string) error {
	if len(args) != 1 {
		return usagef(adminReplicateRemoveSpec(), "admin replicate remove takes one job name, got %d arguments", len(args))
	}
	s, err := connect(ctx, a)
	if err != nil {
		return err
	}
	defer s.Close()
	if err := s.meta.RemoveReplication(ctx, args[0]); err != nil {
		if errors.Is(err, meta.ErrNotFound) {
			return plainf(err, "no replication job %s (coffer admin replicate list)", args[0])
		}
		return retentionErr(err, "remove replication %s", args[0])
	}
	if a.g.json {
		return writeJSON(a.stdout, map[string]string{"removed": args[0]})
	}
	fmt.Fprintf(a.stdout, "replication %s removed; its replica vault stays\n", args[0])
	return nil
}
