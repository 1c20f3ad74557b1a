package command

import (
	"bytes"
	"reflect"
	"testing"
	"time"

	"github.com/cofferhq/coffer/meta"
)

func TestOpsRoundTrip(t *testing.T) {
	admin := meta.Principal{Name: "ops", Role: meta.RoleAdmin}
	for _, b := range []Body{
		ApplyRetention{Vault: "v1"},
		RetentionRound{},
		SetAlertSink{Sink: meta.AlertSink{Name: "pager", Kind: meta.SinkWebhook, URL: "https://h/x", Kinds: []meta.AlertKind{meta.AlertAnomaly}}, By: admin},
		RemoveAlertSink{Name: "pager", By: admin},
		RaiseAlert{Alert: meta.Alert{Key: "node-down/n1", Kind: meta.AlertNodeDown, Severity: meta.SeverityCritical, Subject: "n1", Message: "down",
			Details: map[string]string{"node": "n1"}, Raised: time.Unix(5, 0).UTC()}},
		ResolveAlert{Key: "node-down/n1"},
		AlertAttempt{Seq: 7, Sink: "pager", Error: "503"},
		AlertAttempt{Seq: 7, Sink: "pager", OK: true},
		FlagJob{ID: "j0000000000000007", Anomaly: "bytes added 41x the mean"},
		ApplyVaultRetention{Vault: "v1"},
		CompactAlerts{Retain: int64(90 * 24 * time.Hour)},
	} {
		cmd := Command{Time: 1700000000123456789, Body: b}
		enc, err := Encode(cmd)
		if err != nil {
			t.Fatalf("%s: %v", b.Type(), err)
		}
		if again, _ := Encode(cmd); !bytes.Equal(enc, again) {
			t.Fatalf("%s: encoding is not deterministic", b.Type())
		}
		got, err := Decode(enc)
		if err != nil {
			t.Fatalf("%s: %v", b.Type(), err)
		}
		if !reflect.DeepEqual(got, cmd) {
			t.Fatalf("%s: round trip\n got %#v\nwant %#v", b.Type(), got, cmd)
		}
		if name := b.Type().String(); name == "" || name[0] == 'T' && name[:5] == "Type(" {
			t.Errorf("tag %d has no name", b.Type())
		}
	}
}
