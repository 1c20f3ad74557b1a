package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cofferhq/coffer/client/kms/kmstest"
	"github.com/cofferhq/coffer/node/nodetest"
)

// execMainEnv, set to 1 in a child process's environment, makes the test binary run
// coffer's main instead of the tests (TestMain): a real `coffer agent run` process that a
// test can kill.
const execMainEnv = "COFFER_TEST_EXEC_MAIN"

// With kmstest.EnvPlugin=1 the test binary is the fake KMS plugin (TestCLIKMSAndEscrow).
func TestMain(m *testing.M) {
	if os.Getenv(execMainEnv) == "1" {
		main()
		return
	}
	if os.Getenv(kmstest.EnvPlugin) == "1" {
		os.Exit(kmstest.PluginMain(os.Stdin, os.Stdout))
	}
	os.Exit(m.Run())
}

// cliJobs runs `coffer --json jobs ARGS` and decodes the array.
func cliJobs(t *testing.T, env map[string]string, args ...string) []jobJSON {
	t.Helper()
	code, out, stderr := cli(t, env, append([]string{"--json", "jobs"}, args...)...)
	if code != exitOK {
		t.Fatalf("jobs %v: exit %d: %s", args, code, stderr)
	}
	var jobs []jobJSON
	if err := json.Unmarshal([]byte(out), &jobs); err != nil {
		t.Fatalf("jobs --json: %v\n%s", err, out)
	}
	return jobs
}

// TestCLIAgentRunJobs is issue 15's agent acceptance through the CLI, with a real
// `coffer agent run` process: a policy scheduled every minute ("* * * * *") gives two
// completed jobs in under 3 minutes; a policy whose pre-hook fails gives a failed job
// with the hook's message; the agent is then killed (SIGKILL) while a third policy's
// job runs, and the meta leader marks that job failed; `coffer jobs --json` shows all of
// them, `--failed` the two failures, and `coffer admin agents --json` the agent.
func TestCLIAgentRunJobs(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a cluster and waits for two minutes of schedule")
	}
	h := newAgentHost(t, nodetest.Opts{JobTimeout: 3 * time.Second}, "agent jobs passphrase",
		[]string{"minutely", "--schedule", "* * * * *"},
		[]string{"hookfail", "--schedule", "*/5 * * * * *", "--pre-hook", "echo 'disk /mnt/data is not mounted' >&2; exit 3"},
		[]string{"stuck", "--schedule", "*/5 * * * * *", "--pre-hook", "sleep 600"})
	adminEnv, agentEnv := h.adminEnv, h.agentEnv

	// The agent: this test binary running coffer's main, in its own process group (the
	// hook's sleep dies with it).
	cmd := exec.Command(os.Args[0], "agent", "run", "--max-jitter", "0", "--poll", "1s", "--heartbeat", "1s")
	cmd.Env = append(os.Environ(), execMainEnv+"=1")
	for k, v := range agentEnv {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	logs := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = logs, logs
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	started := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	killed := false
	kill := func() {
		if !killed {
			killed = true
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			_ = cmd.Wait()
		}
	}
	defer kill()

	var jobs []jobJSON
	for {
		jobs = cliJobs(t, adminEnv, "--host", "web01")
		completed, hookFailed, stuck := 0, 0, 0
		for _, j := range jobs {
			switch {
			case j.Policy == "minutely" && j.Status == "completed":
				completed++
			case j.Policy == "hookfail" && j.Status == "failed":
				hookFailed++
			case j.Policy == "stuck" && j.Status == "running":
				stuck++
			}
		}
		if completed >= 2 && hookFailed >= 1 && stuck == 1 {
			break
		}
		if time.Since(started) > 3*time.Minute {
			t.Fatalf("after 3 min: %d completed minutely jobs, %d failed hookfail jobs, %d running stuck jobs: %+v\nagent log:\n%s",
				completed, hookFailed, stuck, jobs, logs.String())
		}
		time.Sleep(time.Second) // poll interval
	}
	t.Logf("two completed minutely jobs after %v", time.Since(started).Round(time.Second))
	kill()
	var stuckID string
	for _, j := range jobs {
		if j.Policy == "stuck" && j.Status == "running" {
			stuckID = j.ID
		}
	}

	// The leader marks the killed agent's job failed once it is silent for the timeout.
	deadline := time.Now().Add(2 * time.Minute)
	for {
		jobs = cliJobs(t, adminEnv)
		var st jobJSON
		for _, j := range jobs {
			if j.ID == stuckID {
				st = j
			}
		}
		if st.Status == "failed" {
			if !strings.Contains(st.Error, "no heartbeat") {
				t.Fatalf("killed agent's job %+v: error does not say it went silent", st)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("killed agent's job %s is still %q", stuckID, st.Status)
		}
		time.Sleep(500 * time.Millisecond)
	}

	// coffer jobs --json shows all of them, with their figures and reasons.
	seen := map[string]bool{}
	for _, j := range jobs {
		switch {
		case j.Policy == "minutely" && j.Status == "completed":
			seen["completed"] = true
			if j.Snapshot == "" || j.Trigger != "schedule" || j.Kind != "backup" || j.Stats.Files() != 1 || j.DurationS <= 0 {
				t.Errorf("completed job %+v", j)
			}
		case j.Policy == "hookfail" && j.Status == "failed":
			seen["hook"] = true
			if !strings.Contains(j.Error, "pre-hook") || !strings.Contains(j.Error, "disk /mnt/data is not mounted") || j.Snapshot != "" {
				t.Errorf("failed hook job's error %q lacks the hook's message", j.Error)
			}
		case j.ID == stuckID:
			seen["killed"] = true
		}
	}
	if len(seen) != 3 {
		t.Fatalf("coffer jobs --json shows %v of completed, hook and killed: %+v", seen, jobs)
	}
	for _, j := range cliJobs(t, adminEnv, "--failed") {
		if j.Status != "failed" && j.Status != "partially failed" {
			t.Errorf("jobs --failed lists %s %s", j.ID, j.Status)
		}
	}
	if own := cliJobs(t, agentEnv); len(own) == 0 {
		t.Error("the agent sees none of its own jobs")
	}
	code, out, stderr := cli(t, adminEnv, "--json", "admin", "agents")
	var agents []map[string]any
	if code != exitOK || json.Unmarshal([]byte(out), &agents) != nil || len(agents) != 1 || agents[0]["host"] != "web01" {
		t.Fatalf("admin agents: exit %d: %s %s", code, out, stderr)
	}
}
