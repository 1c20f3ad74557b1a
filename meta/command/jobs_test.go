package command

import (
	"bytes"
	"reflect"
	"testing"
	"time"

	"github.com/cofferhq/coffer/meta"
)

func TestJobCommandsRoundTrip(t *testing.T) {
	admin := meta.Principal{Name: "ops", Role: meta.RoleAdmin}
	agent := meta.Principal{Name: "web1", Role: meta.RoleBackupAgent, Vaults: []meta.VaultID{"v1"}}
	bodies := []Body{
		PutPolicy{Policy: meta.BackupPolicy{Name: "nightly", Schedule: "0 2 * * *", Paths: []string{"/etc"}, Excludes: []string{"*.tmp"},
			PreHook: "true", Retention: &meta.Policy{Last: 3}, Lock: &meta.PolicyLock{Mode: meta.Governance, For: time.Hour},
			Hosts: []string{"web1"}, Labels: map[string]string{"env": "prod"}}, Create: true, By: admin},
		DeletePolicy{Name: "nightly", By: admin},
		StartJob{Start: meta.JobStart{Policy: "nightly", Trigger: meta.TriggerSchedule, Scheduled: time.Unix(100, 0).UTC(), Version: "v1"}, By: agent},
		ReportJob{Report: meta.JobReport{ID: "j0000000000000001", Final: true, Status: meta.JobFailed, Error: "pre-hook failed",
			Stats: meta.JobStats{FilesNew: 3, BytesAdded: 10}}, By: agent},
		Heartbeat{Heartbeat: meta.Heartbeat{Hostname: "web1.example", Version: "dev", Running: []string{"j01"},
			NextRuns: []meta.NextRun{{Policy: "nightly", At: time.Unix(200, 0).UTC()}}}, By: agent},
		ExpireJobs{IDs: []string{"j01"}, Timeout: int64(time.Minute)},
		CompactJobs{Retain: int64(90 * 24 * time.Hour)},
	}
	for _, b := range bodies {
		cmd := Command{Time: 1700000000123456789, Body: b}
		enc, err := Encode(cmd)
		if err != nil {
			t.Fatalf("%s: %v", b.Type(), err)
		}
		again, _ := Encode(cmd)
		if !bytes.Equal(enc, again) {
			t.Fatalf("%s: encoding is not deterministic", b.Type())
		}
		got, err := Decode(enc)
		if err != nil {
			t.Fatalf("%s: %v", b.Type(), err)
		}
		if !reflect.DeepEqual(got, cmd) {
			t.Fatalf("%s: round trip\n got %#v\nwant %#v", b.Type(), got, cmd)
		}
		if got := b.Type().String(); got == "" || got[0] == 'T' && got[:5] == "Type(" {
			t.Fatalf("%T has no name: %s", b, got)
		}
	}
}
