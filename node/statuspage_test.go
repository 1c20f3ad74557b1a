package node_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"image/png"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cofferhq/coffer/client"
	"github.com/cofferhq/coffer/meta"
	"github.com/cofferhq/coffer/node"
	"github.com/cofferhq/coffer/node/nodetest"
	"github.com/cofferhq/coffer/node/statuspage"
	"github.com/cofferhq/coffer/transport"
	"github.com/cofferhq/coffer/transport/pki"
)

// skipBrowserEnv, when set to anything, skips the tests that need Chromium (and says so).
// Without it a missing Chromium fails the test: CI installs it (.ci/run).
const skipBrowserEnv = "COFFER_SKIP_BROWSER"

// chromium returns the path of the Chromium binary, or fails (skips only on request).
func chromium(t *testing.T) string {
	t.Helper()
	if os.Getenv(skipBrowserEnv) != "" {
		t.Skipf("%s is set: skipping the headless Chromium test of the status page", skipBrowserEnv)
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Fatalf("no Chromium found: install it (apt-get install -y chromium; .ci/run does) or set %s=1 to skip this test", skipBrowserEnv)
	return ""
}

// headless runs Chromium headless on url with extra flags and returns its stdout.
func headless(t *testing.T, bin, url string, flags ...string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	args := append([]string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
		"--hide-scrollbars", "--user-data-dir=" + t.TempDir()}, flags...)
	cmd := exec.CommandContext(ctx, bin, append(args, url)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("chromium %v: %v\n%s", flags, err, stderr.String())
	}
	return stdout.Bytes()
}

// get fetches url with client c and returns status and body.
func get(t *testing.T, c *http.Client, url string) (int, string) {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

var samplesRe = regexp.MustCompile(`(\d+) samples`)

// TestStatusPageInBrowser runs a cluster with some data, waits until the first meta node's
// status page has a few capacity samples, and loads it in headless Chromium: the rendered
// DOM names every node, shows the PG counts the meta group reports and the job timeline,
// and a screenshot is saved (its path is logged; COFFER_STATUS_SCREENSHOT copies it).
func TestStatusPageInBrowser(t *testing.T) {
	bin := chromium(t)
	c := nodetest.New(t, nodetest.Opts{Meta: 1, Chunk: 6, PGCount: 32, StatusSample: 300 * time.Millisecond})
	url := c.StatusURL()
	if !strings.HasPrefix(url, "http://127.0.0.1:") {
		t.Fatalf("dev status URL %q, want a loopback http URL", url)
	}

	// Data: a vault (an audit entry) and a backup (stored bytes).
	src := filepath.Join(t.TempDir(), "src")
	nodetest.MakeTree(t, src, nodetest.TreeOpts{Seed: 5, BigFile: 2 << 20})
	cfg := c.Connect(t)
	if _, err := client.InitVault(ctxT(t, time.Minute), cfg, "default", passphrase); err != nil {
		t.Fatalf("init: %v", err)
	}
	a, err := client.Open(ctxT(t, time.Minute), cfg, "default", passphrase)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if _, err := a.Backup(ctxT(t, 5*time.Minute), client.BackupOptions{Paths: []string{src}}); err != nil {
		t.Fatalf("backup: %v", err)
	}

	// Job records as agents report them (web01 completed, db01 failed, mail01 partially
	// failed, files01 still running) and an anomaly alert naming web01's job.
	ms := c.WaitLeader(t).Meta()
	jobs := map[string]string{"web01": meta.JobCompleted, "db01": meta.JobFailed, "mail01": meta.JobPartial, "files01": meta.JobRunning}
	var webJob string
	for _, host := range []string{"web01", "db01", "mail01", "files01"} {
		actx := meta.WithPrincipal(ctxT(t, 30*time.Second), meta.Principal{Name: host, Role: meta.RoleBackupAgent})
		j, err := ms.StartJob(actx, meta.JobStart{Policy: "", Vault: "default", Trigger: meta.TriggerManual, Version: "test"})
		if err != nil {
			t.Fatalf("start job on %s: %v", host, err)
		}
		if host == "web01" {
			webJob = j.ID
		}
		if jobs[host] == meta.JobRunning {
			continue
		}
		r := meta.JobReport{ID: j.ID, Final: true, Status: jobs[host], Stats: meta.JobStats{BytesAdded: 3 << 20}}
		if jobs[host] != meta.JobCompleted {
			r.Error = "pre-hook exited 1"
		}
		if _, err := ms.ReportJob(actx, r); err != nil {
			t.Fatalf("report job on %s: %v", host, err)
		}
	}
	if _, err := ms.RaiseAlert(ctxT(t, 30*time.Second), meta.Alert{Key: "anomaly/" + webJob, Kind: meta.AlertAnomaly, Severity: meta.SeverityWarning,
		Subject: "web01", Message: "bytes added 41x the mean", Details: map[string]string{"job": webJob}}); err != nil {
		t.Fatalf("anomaly alert: %v", err)
	}

	// An alert, as `coffer admin alert test` raises one.
	if _, err := c.WaitLeader(t).Meta().TestAlert(ctxT(t, 30*time.Second), "status page browser test"); err != nil {
		t.Fatalf("test alert: %v", err)
	}

	// Wait (polling, 60 s at most) for samples taken after the backup, and PG reports.
	deadline := time.Now().Add(60 * time.Second)
	var body string
	for {
		code, b := get(t, http.DefaultClient, url)
		if code != http.StatusOK {
			t.Fatalf("GET %s: %d %s", url, code, b)
		}
		body = b
		m := samplesRe.FindStringSubmatch(body)
		n := 0
		if m != nil {
			n, _ = strconv.Atoi(m[1])
		}
		if n >= 5 && !strings.Contains(body, `pg-unknown">32<`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("status page not ready after 60 s (%d samples):\n%s", n, body)
		}
		time.Sleep(200 * time.Millisecond) // polling interval, not synchronisation
	}

	dom := string(headless(t, bin, url, "--dump-dom", "--virtual-time-budget=2000"))
	// The timeline: a bar per job, ✕ on the failed and partially failed ones, ⚠ on web01's.
	if n := len(regexp.MustCompile(`<rect[^>]*class="job `).FindAllString(dom, -1)); n != 4 {
		t.Errorf("the timeline draws %d job bars, want 4", n)
	}
	for _, want := range []string{"✕<title>failed: ", "✕<title>partially failed: ", "⚠<title>anomaly: bytes added 41x the mean</title>"} {
		if !strings.Contains(dom, want) {
			t.Errorf("the timeline lacks %q", want)
		}
	}
	for _, want := range []string{"meta-1", "chunk-1", "chunk-6", `id="pgs"`, `id="jobs"`, "Job timeline",
		"job timeline", "status page browser test", `id="capacity"`, `id="throughput"`, `id="audit"`, "vault create", "7 of 7 nodes up"} {
		if !strings.Contains(dom, want) {
			t.Errorf("rendered page lacks %q", want)
		}
	}
	// The PG counts match what the meta group reports right now (give it a few tries:
	// reports change while repair settles).
	leader := c.WaitLeader(t)
	reps, err := leader.Meta().PGHealth(ctxT(t, 10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	sum := statuspage.SummarisePGs(*leader.Map(), reps)
	total := 0
	for _, sc := range sum.Counts {
		m := regexp.MustCompile(`pg-` + sc.State + `">(\d+)<`).FindStringSubmatch(dom)
		if m == nil {
			t.Errorf("rendered page has no count of %s PGs", sc.State)
			continue
		}
		got, _ := strconv.Atoi(m[1])
		total += got
		if sc.State == "healthy" && got == 0 {
			t.Errorf("no healthy PG shown; the meta group reports %+v", sum.Counts)
		}
	}
	if total != 32 {
		t.Errorf("the page's PG counts add up to %d, want 32", total)
	}
	if !regexp.MustCompile(`<polyline[^>]+points="[^"]+"`).MatchString(dom) {
		t.Error("the capacity chart draws no line")
	}

	shot := filepath.Join(t.TempDir(), "statuspage.png")
	headless(t, bin, url, "--screenshot="+shot, "--window-size=1400,2000", "--virtual-time-budget=2000")
	f, err := os.ReadFile(shot)
	if err != nil {
		t.Fatalf("no screenshot: %v", err)
	}
	img, err := png.Decode(bytes.NewReader(f))
	if err != nil {
		t.Fatalf("screenshot is no PNG: %v", err)
	}
	if b := img.Bounds(); b.Dx() != 1400 || b.Dy() != 2000 {
		t.Errorf("screenshot is %v, want 1400x2000", b)
	}
	t.Logf("status page screenshot: %s (%d bytes)", shot, len(f))
	if keep := os.Getenv("COFFER_STATUS_SCREENSHOT"); keep != "" {
		if err := os.WriteFile(keep, f, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("screenshot copied to %s", keep)
	}
}

// TestStatusPageHTTPSAdminOnly serves the page over HTTPS (status_listen without
// status_loopback) on a chunk node: an admin certificate sees it; agent and
// restore-operator certificates are refused 403; a client without a certificate does
// not get past the TLS handshake.
func TestStatusPageHTTPSAdminOnly(t *testing.T) {
	c := nodetest.New(t, nodetest.Opts{Meta: 1, Chunk: 6, PGCount: 16})
	const id = "chunk-6"
	if err := c.Stop(id); err != nil {
		t.Fatal(err)
	}
	yaml := filepath.Join(c.Dir, "nodes", id, "node.yaml")
	cfg, err := node.LoadConfig(yaml)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(yaml)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(yaml, append(raw, []byte("status_listen: 127.0.0.1:0\n")...), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := c.Restart(id); err != nil {
		t.Fatal(err)
	}
	c.WaitReady()
	url := "https://" + c.Node(id).StatusAddr() + "/"
	caPEM, err := os.ReadFile(cfg.TLS.CA)
	if err != nil {
		t.Fatal(err)
	}
	caKey, err := os.ReadFile(filepath.Join(c.Dir, "pki", "ca-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	ca, err := pki.LoadCA(caPEM, caKey)
	if err != nil {
		t.Fatal(err)
	}
	clientFor := func(role transport.Role) *http.Client {
		cert, key, err := ca.Issue(pki.IssueRequest{CommonName: "page-" + string(role), Role: role}, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		ident, err := pki.NewIdentity(caPEM, cert, key)
		if err != nil {
			t.Fatal(err)
		}
		return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: ident.ClientTLS("http/1.1")}}
	}

	// The node serves others only once it holds a current revocation list: poll.
	admin := clientFor(transport.RoleAdmin)
	deadline := time.Now().Add(30 * time.Second)
	for {
		code, body := get(t, admin, url)
		if code == http.StatusOK {
			for _, want := range []string{"chunk-1", "meta-1", `id="pgs"`, "The audit log is kept by the meta servers"} {
				if !strings.Contains(body, want) {
					t.Errorf("admin's page lacks %q", want)
				}
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("admin: %d %s", code, body)
		}
		time.Sleep(200 * time.Millisecond) // polling interval, not synchronisation
	}
	for _, role := range []transport.Role{transport.RoleAgent, transport.RoleRestore} {
		code, body := get(t, clientFor(role), url)
		if code != http.StatusForbidden || !strings.Contains(body, string(role)) || strings.Contains(body, "chunk-1") {
			t.Errorf("%s certificate: %d %q, want 403 naming the role and no page", role, code, body)
		}
	}
	noCert := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}} // the server is not what is tested
	if _, err := noCert.Get(url); err == nil {
		t.Error("a client without a certificate got an answer")
	} else {
		t.Logf("no certificate: %v", err)
	}
	// The plain listener, for comparison, is not what this node serves: http:// fails.
	if resp, err := http.Get("http://" + c.Node(id).StatusAddr() + "/"); err == nil {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Errorf("plain HTTP on the HTTPS listener served the page (%d bytes)", len(b))
		}
	}
}
