package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestCLIRetentionAndVerify drives lock, forget, admin audit and verify through the CLI
// against a cluster: a compliance lock refuses forget (audited), a dry-run policy names
// the rule keeping each snapshot, verify reports a passing and a failing check and
// removes its sandbox both times.
func TestCLIRetentionAndVerify(t *testing.T) {
	env, dir := cliVault(t, "retention test passphrase")
	src := filepath.Join(dir, "src")
	if err := os.MkdirAll(src, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "db.dump"), []byte("PGDMP dump"), 0o644); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for range 2 {
		code, out, stderr := cli(t, env, "--json", "backup", src)
		if code != exitOK {
			t.Fatalf("backup: exit %d: %s", code, stderr)
		}
		ids = append(ids, lastJSON(t, out)["snapshot_id"].(string))
	}
	if code, out, stderr := cli(t, env, "lock", ids[0][:8], "--mode", "compliance", "--for", "1d"); code != exitOK || !strings.Contains(out, "compliance-locked until") {
		t.Fatalf("lock: exit %d: %s %s", code, out, stderr)
	}
	code, _, stderr := cli(t, env, "forget", ids[0][:8], "--bypass-governance", "--reason", "try")
	if code != exitFailure || !strings.Contains(stderr, "compliance-locked") {
		t.Fatalf("forget of a compliance-locked snapshot: exit %d: %s", code, stderr)
	}
	code, out, stderr := cli(t, env, "forget", "--keep-last", "1", "--dry-run")
	if code != exitOK || !strings.Contains(out, "last") || !strings.Contains(out, "compliance-locked until") || !strings.Contains(out, "would remove 0 snapshots") {
		t.Fatalf("forget --dry-run: exit %d:\n%s%s", code, out, stderr)
	}
	code, out, stderr = cli(t, env, "--json", "admin", "audit")
	if code != exitOK || !strings.Contains(out, `"outcome":"refused"`) || !strings.Contains(out, `"principal":"dev-admin"`) {
		t.Fatalf("admin audit: exit %d: %s %s", code, out, stderr)
	}

	sandboxes, reports := filepath.Join(dir, "sandboxes"), filepath.Join(dir, "reports")
	for _, d := range []string{sandboxes, reports} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	check := `test "$(cat "$(find . -name db.dump)")" = "PGDMP dump"`
	code, out, stderr = cli(t, env, "--json", "verify", "latest", "--record", "--check", check, "--sandbox", sandboxes, "--report-dir", reports)
	rep := lastJSON(t, out)
	if code != exitOK || rep["ok"] != true {
		t.Fatalf("verify with a passing check: exit %d: %s %s", code, out, stderr)
	}
	if _, err := os.Stat(rep["report_md"].(string)); err != nil {
		t.Fatalf("markdown report: %v", err)
	}
	code, out, _ = cli(t, env, "--json", "verify", "latest", "--record", "--check", "echo broken; exit 3", "--sandbox", sandboxes, "--report-dir", reports)
	rep = lastJSON(t, out)
	ch, _ := rep["check"].(map[string]any)
	if code != exitFailure || rep["ok"] != false || ch["exit_code"] != 3.0 || !strings.Contains(ch["output"].(string), "broken") {
		t.Fatalf("verify with a failing check: exit %d: %v", code, rep)
	}
	md, err := os.ReadFile(rep["report_md"].(string))
	if err != nil || !strings.Contains(string(md), "FAILED") {
		t.Fatalf("markdown report of the failure: %q %v", md, err)
	}
	if left, _ := os.ReadDir(sandboxes); len(left) != 0 {
		t.Fatalf("sandboxes left behind: %v", left)
	}

	// verify --record: both verifications are jobs beside the two manual backups.
	var backups, passed, failed int
	for _, j := range cliJobs(t, env) {
		switch {
		case j.Kind == "backup" && j.Trigger == "manual" && j.Status == "completed":
			backups++
		case j.Kind == "verify" && j.Trigger == "manual" && j.Status == "completed":
			passed++
			if j.Snapshot != ids[1] || j.Report == nil || j.Report.Snapshots != 1 || j.Report.Bytes != int64(len("PGDMP dump")) {
				t.Errorf("recorded passing verify %+v (report %+v)", j, j.Report)
			}
		case j.Kind == "verify" && j.Trigger == "manual" && j.Status == "failed":
			failed++
			if !strings.Contains(j.Error, "exited 3") || !strings.Contains(j.Error, "broken") {
				t.Errorf("recorded failing verify's error %q", j.Error)
			}
		}
	}
	if backups != 2 || passed != 1 || failed != 1 {
		t.Fatalf("jobs: %d manual backups, %d passed and %d failed verifies; want 2, 1, 1", backups, passed, failed)
	}
}
