package command

import (
	"reflect"
	"testing"
	"time"

	"github.com/cofferhq/coffer/meta"
)

func TestPKICommandsRoundTripAndTags(t *testing.T) {
	admin := meta.Principal{Name: "ops", Role: meta.RoleAdmin}
	now := time.Date(2026, 12, 6, 0, 0, 0, 0, time.UTC)
	for _, b := range []Body{
		CreateNodeToken{Hash: "ab12", Role: "chunk", ID: "chunk-7", Domain: "rack2", TTL: int64(time.Hour), By: admin, Taken: []string{"meta-1"}},
		ConsumeNodeToken{Hash: "ab12", ID: "chunk-7", Role: "chunk", Serial: "7f3", From: "10.0.0.7:5000"},
		RecordCert{Cert: meta.IssuedCert{Serial: "7f3", Principal: "chunk-7", Role: "node", NotBefore: now, NotAfter: now.Add(time.Hour),
			Issuer: "meta-1", How: meta.IssuedByJoin, By: "token ab12", At: now}},
	} {
		cmd := Command{Time: 42, Body: b}
		enc, err := Encode(cmd)
		if err != nil {
			t.Fatalf("%s: %v", b.Type(), err)
		}
		got, err := Decode(enc)
		if err != nil || !reflect.DeepEqual(got, cmd) {
			t.Fatalf("%s: round trip %#v %v", b.Type(), got, err)
		}
	}
	for typ, v := range map[Type]uint16{TypeCreateNodeToken: 100, TypeConsumeNodeToken: 101, TypeRecordCert: 102} {
		if uint16(typ) != v {
			t.Errorf("%s = %d, want %d (tags are append-only)", typ, typ, v)
		}
	}
}
