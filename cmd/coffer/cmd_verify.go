package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/cofferhq/coffer/client"
	"github.com/cofferhq/coffer/client/agent"
	"github.com/cofferhq/coffer/meta"
	"github.com/cofferhq/coffer/transport"
)

// maxCheckOutput bounds the check command's output kept in the report.
const maxCheckOutput = 64 << 10

func verifySpec() *cmdSpec {
	return &cmdSpec{
		name:  "verify",
		args:  "SNAP",
		short: "restore a snapshot into a sandbox and run a check there",
		long: `Restores the snapshot into a fresh sandbox directory (created under --sandbox,
default the system temporary directory), checking every chunk, then runs the
--check command (with "sh -c", working directory the sandbox, COFFER_SANDBOX
and COFFER_SNAPSHOT in its environment) and writes a report as JSON and
markdown (verify-SNAPID-TIME.json/.md in --report-dir, default the current
directory). The sandbox is removed whatever happens: restore failure, failing
check, or interruption. The check's output (its first 64 KiB) goes into the
report. The restore is refused, before anything is written, when the snapshot
expands to more than --max-entries entries (as for restore).

With --record the verification is also a job in the cluster ("coffer jobs"), as
a manual backup is: kind verify, trigger manual, the snapshot's ID, a report
(snapshots 1, bytes restored) and status completed, or failed with the reason
(the restore's error, or the check's exit status and last line of output);
a failed one raises a verify-failed alert. It needs a backup-agent or admin
certificate (an admin's job is recorded under the machine's host name).

Exit status 0 when the restore and the check succeed, 1 otherwise (the report
says which failed). With --json the report is printed too: snapshot_id,
started, duration_s, restore (files, dirs, bytes, error), check (command,
exit_code, output, error), ok, report_json, report_md.`,
		examples: []string{
			"coffer verify latest --check 'pg_restore --list db.dump > /dev/null'",
			"coffer verify 4f2a9c1e --report-dir /var/log/coffer",
			"coffer verify latest --record --check './selftest.sh'",
		},
		new: func() command { return &verifyCmd{} },
	}
}

// verifyCmd restores into a sandbox and runs a check.
type verifyCmd struct {
	check      string
	sandbox    string
	reportDir  string
	maxEntries maxEntriesFlag
	record     bool
}

func (c *verifyCmd) addFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.check, "check", "", "run `CMD` (sh -c) in the restored sandbox")
	fs.StringVar(&c.sandbox, "sandbox", "", "create the sandbox under `DIR` (default: the temporary directory)")
	fs.StringVar(&c.reportDir, "report-dir", ".", "write the JSON and markdown report into `DIR`")
	c.maxEntries.add(fs)
	fs.BoolVar(&c.record, "record", false, "record the verification as a job of kind verify (trigger manual) in the cluster")
}

// verifyReport is the report `coffer verify` writes (and prints with --json).
type verifyReport struct {
	SnapshotID string        `json:"snapshot_id"`
	Started    time.Time     `json:"started"`
	DurationS  float64       `json:"duration_s"`
	Restore    verifyRestore `json:"restore"`
	Check      *verifyCheck  `json:"check"` // null without --check
	OK         bool          `json:"ok"`
	ReportJSON string        `json:"report_json"`
	ReportMD   string        `json:"report_md"`
}

type verifyRestore struct {
	Files int64  `json:"files"`
	Dirs  int64  `json:"dirs"`
	Bytes int64  `json:"bytes"`
	Error string `json:"error,omitempty"`
}

type verifyCheck struct {
	Command  string `json:"command"`
	ExitCode int    `json:"exit_code"`
	Output   string `json:"output"`
	Error    string `json:"error,omitempty"`
}

func (c *verifyCmd) run(ctx context.Context, a *app, args []string) (err error) {
	if len(args) != 1 {
		return usagef(verifySpec(), "verify takes one snapshot, got %d arguments", len(args))
	}
	limit, err := c.maxEntries.apply(verifySpec())
	if err != nil {
		return err
	}
	var sess *session
	ag, snap, done, err := openSnapshot(ctx, a, args[0], limit, func(s *session) { sess = s })
	if err != nil {
		return err
	}
	defer done()
	var job *meta.Job
	if c.record {
		if job, err = startVerifyJob(ctx, sess); err != nil {
			return err
		}
	}
	rep := verifyReport{SnapshotID: snap.ID.String(), Started: a.now().UTC()}
	start := time.Now()
	sandbox, err := os.MkdirTemp(c.sandbox, "coffer-verify-")
	if err != nil {
		return fmt.Errorf("verify: create sandbox: %w", err)
	}
	defer func() {
		if rerr := os.RemoveAll(sandbox); rerr != nil && err == nil {
			err = fmt.Errorf("verify: remove sandbox %s: %w", sandbox, rerr)
		}
	}()
	res, rerr := ag.Restore(ctx, snap, client.RestoreOptions{Target: sandbox})
	rep.Restore = verifyRestore{Files: res.Files, Dirs: res.Dirs, Bytes: res.Bytes}
	if rerr != nil {
		rep.Restore.Error = rerr.Error()
	}
	if rerr == nil && c.check != "" {
		rep.Check = runCheck(ctx, c.check, sandbox, snap.ID.String())
	}
	rep.OK = rerr == nil && (rep.Check == nil || (rep.Check.ExitCode == 0 && rep.Check.Error == ""))
	rep.DurationS = time.Since(start).Seconds()
	werr := writeVerifyReport(c.reportDir, &rep)
	if job != nil {
		if err := finishVerifyJob(ctx, a, sess, job, snap, rep, werr); err != nil {
			return err
		}
	}
	if werr != nil {
		return werr
	}
	if a.g.json {
		if err := writeJSON(a.stdout, rep); err != nil {
			return err
		}
	} else {
		status := "ok"
		if !rep.OK {
			status = "FAILED"
		}
		fmt.Fprintf(a.stdout, "verify %s: %s (restored %d files, %s); report %s\n", snap.ID.Str(), status, rep.Restore.Files, formatBytes(rep.Restore.Bytes), rep.ReportMD)
	}
	switch {
	case rerr != nil:
		return fmt.Errorf("verify %s: restore: %w", snap.ID.Str(), rerr)
	case !rep.OK:
		return plainf(errors.New("check failed"), "verify %s: check %q failed (exit %d%s); see %s", snap.ID.Str(), c.check, rep.Check.ExitCode, errSuffix(rep.Check.Error), rep.ReportMD)
	}
	return nil
}

func errSuffix(s string) string {
	if s == "" {
		return ""
	}
	return ": " + s
}

// runCheck runs cmd with sh -c in dir and records its exit code and output.
func runCheck(ctx context.Context, cmd, dir, snapID string) *verifyCheck {
	ch := &verifyCheck{Command: cmd}
	x := exec.CommandContext(ctx, "sh", "-c", cmd)
	x.Dir = dir
	x.Env = append(os.Environ(), "COFFER_SANDBOX="+dir, "COFFER_SNAPSHOT="+snapID)
	var out bytes.Buffer
	x.Stdout, x.Stderr = &out, &out
	err := x.Run()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		ch.ExitCode = ee.ExitCode()
	case err != nil:
		ch.ExitCode, ch.Error = -1, err.Error()
	}
	o := out.Bytes()
	if len(o) > maxCheckOutput {
		o = o[:maxCheckOutput]
	}
	ch.Output = string(o)
	return ch
}

// writeVerifyReport writes rep as JSON and markdown into dir and records their paths.
func writeVerifyReport(dir string, rep *verifyReport) error {
	base := filepath.Join(dir, fmt.Sprintf("verify-%s-%s", shortHex(rep.SnapshotID), rep.Started.Format("20060102T150405Z")))
	rep.ReportJSON, rep.ReportMD = base+".json", base+".md"
	var js bytes.Buffer
	if err := writeJSON(&js, rep); err != nil {
		return err
	}
	var md strings.Builder
	status := "passed"
	if !rep.OK {
		status = "FAILED"
	}
	fmt.Fprintf(&md, "# Restore verification of snapshot %s: %s\n\n", shortHex(rep.SnapshotID), status)
	fmt.Fprintf(&md, "- snapshot: `%s`\n- started: %s\n- duration: %.1f s\n", rep.SnapshotID, rep.Started.Format(time.RFC3339), rep.DurationS)
	fmt.Fprintf(&md, "- restore: %d files, %d dirs, %d bytes", rep.Restore.Files, rep.Restore.Dirs, rep.Restore.Bytes)
	if rep.Restore.Error != "" {
		fmt.Fprintf(&md, ", **failed**: %s", rep.Restore.Error)
	}
	md.WriteString("\n")
	if ch := rep.Check; ch != nil {
		fmt.Fprintf(&md, "- check: `%s` exited %d%s\n\n```\n%s\n```\n", ch.Command, ch.ExitCode, errSuffix(ch.Error), strings.TrimRight(ch.Output, "\n"))
	} else {
		md.WriteString("- check: none\n")
	}
	if err := os.WriteFile(rep.ReportJSON, js.Bytes(), 0o644); err != nil {
		return fmt.Errorf("verify: write report: %w", err)
	}
	if err := os.WriteFile(rep.ReportMD, []byte(md.String()), 0o644); err != nil {
		return fmt.Errorf("verify: write report: %w", err)
	}
	return nil
}

// startVerifyJob opens the job of `verify --record` (kind verify, trigger manual). Unlike
// a manual backup's job, a failure to record is an error: --record asked for it.
func startVerifyJob(ctx context.Context, s *session) (*meta.Job, error) {
	st := meta.JobStart{Kind: meta.JobVerify, Trigger: meta.TriggerManual, Vault: s.vault, Version: version}
	if s.role != transport.RoleAgent {
		st.Host = s.agent.Host // an admin verifies as the machine's host name
		if err := meta.ValidateAgentName(st.Host); err != nil {
			return nil, plainf(err, "verify --record: this machine's host name %q cannot name a job: %v", st.Host, err)
		}
	}
	j, err := s.meta.StartJob(ctx, st)
	if err != nil {
		return nil, fmt.Errorf("verify --record: %w", err)
	}
	return &j, nil
}

// finishVerifyJob records the end of `verify --record`'s job: completed when the restore
// and the check passed, failed otherwise (the reason as the error), with a report of
// the one snapshot restored (every chunk of it read) and the snapshot's ID.
func finishVerifyJob(ctx context.Context, a *app, s *session, j *meta.Job, snap meta.Snapshot, rep verifyReport, werr error) error {
	vr := meta.VerifyReport{Full: true, Snapshots: 1, Bytes: rep.Restore.Bytes}
	r := meta.JobReport{ID: j.ID, Final: true, Attempts: 1, Status: meta.JobCompleted, Snapshot: snap.ID.String(), Report: &vr,
		Stats: meta.JobStats{BytesRead: rep.Restore.Bytes}}
	switch {
	case rep.Restore.Error != "":
		r.Status, r.Error = meta.JobFailed, "restore: "+rep.Restore.Error
	case !rep.OK:
		r.Status, r.Error = meta.JobFailed, fmt.Sprintf("check %q exited %d%s: %s", rep.Check.Command, rep.Check.ExitCode, errSuffix(rep.Check.Error), lastLine(rep.Check.Output))
	case werr != nil:
		r.Status, r.Error = meta.JobPartial, werr.Error()
	}
	if _, err := agent.Report(context.WithoutCancel(ctx), s.meta, r, time.Second); err != nil {
		return fmt.Errorf("verify --record: job %s: %w", j.ID, err)
	}
	if !a.g.json && !a.g.quiet {
		fmt.Fprintf(a.stderr, "recorded as job %s (%s)\n", j.ID, r.Status)
	}
	return nil
}

// lastLine is the last non-empty line of s, at most 512 bytes.
func lastLine(s string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	l := strings.TrimSpace(lines[len(lines)-1])
	if len(l) > 512 {
		l = l[len(l)-512:]
	}
	return l
}
