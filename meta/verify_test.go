package meta

import (
	"errors"
	"strings"
	"testing"
)

func TestValidateVerify(t *testing.T) {
	good := []VerifySchedule{{Schedule: "0 3 * * *", Sample: 8}, {Full: "0 4 * * 0"}, {Schedule: "@daily", Full: "@weekly"}}
	for _, v := range good {
		if err := ValidateVerifySchedule(v); err != nil {
			t.Errorf("%+v: %v", v, err)
		}
	}
	bad := map[string]VerifySchedule{
		"no sampled":  {Sample: 3},
		"cron":        {Schedule: "every day"},
		"negative":    {Schedule: "@daily", Sample: -1},
		"full cron":   {Schedule: "@daily", Full: "sometimes"},
		"huge sample": {Schedule: "@daily", Sample: 1<<20 + 1},
	}
	for name, v := range bad {
		if err := ValidateVerifySchedule(v); err == nil {
			t.Errorf("%s: %+v accepted", name, v)
		}
	}
	p := BackupPolicy{Name: "nightly", Schedule: "@daily", Paths: []string{"/etc"}, Hosts: []string{"web01"}, Verify: &VerifySchedule{Schedule: "nope"}}
	if err := ValidateBackupPolicy(p); err == nil || !strings.Contains(err.Error(), "verify schedule") {
		t.Errorf("policy with a bad verify schedule: %v", err)
	}

	many := VerifyReport{Bad: MaxVerifyFindings + 1, Findings: make([]VerifyFinding, MaxVerifyFindings+1)}
	if err := ValidateJobReport(JobReport{ID: "j1", Final: true, Status: JobFailed, Report: &many}); !errors.Is(err, ErrInvalid) {
		t.Errorf("report with %d findings: %v, want ErrInvalid", len(many.Findings), err)
	}
	ok := VerifyReport{Snapshots: 1, Chunks: 4, Bad: 1, Findings: []VerifyFinding{{Chunk: "ab", Error: "corrupt"}}}
	if err := ValidateJobReport(JobReport{ID: "j1", Final: true, Status: JobFailed, Report: &ok}); err != nil {
		t.Errorf("good report: %v", err)
	}
	if err := ValidateJobReport(JobReport{ID: "j1", Report: &ok}); !errors.Is(err, ErrInvalid) {
		t.Errorf("report on a progress report: %v, want ErrInvalid", err)
	}
	undercount := VerifyReport{Bad: 0, Findings: []VerifyFinding{{Chunk: "ab"}}}
	if err := ValidateVerifyReport(undercount); !errors.Is(err, ErrInvalid) {
		t.Errorf("findings above Bad: %v", err)
	}
}

// TestValidatePolicyCompression: a policy names one of PolicyCompressions or none.
func TestValidatePolicyCompression(t *testing.T) {
	p := BackupPolicy{Name: "nightly", Schedule: "@daily", Paths: []string{"/etc"}, Hosts: []string{"web01"}}
	for _, c := range append([]string{""}, PolicyCompressions...) {
		p.Compression = c
		if err := ValidateBackupPolicy(p); err != nil {
			t.Errorf("compression %q: %v", c, err)
		}
	}
	for _, c := range []string{"zstd", "AUTO", "lz4"} {
		p.Compression = c
		if err := ValidateBackupPolicy(p); !errors.Is(err, ErrInvalid) {
			t.Errorf("compression %q: %v, want ErrInvalid", c, err)
		}
	}
}
