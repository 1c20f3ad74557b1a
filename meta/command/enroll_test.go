package command

import (
	"reflect"
	"testing"
	"time"

	"github.com/cofferhq/coffer/meta"
)

func TestEnrollCommandsRoundTripAndTags(t *testing.T) {
	admin := meta.Principal{Name: "ops", Role: meta.RoleAdmin}
	for _, b := range []Body{
		CreateEnrollToken{Hash: "ab12", Vault: "v1", Name: "web01", TTL: int64(time.Hour), By: admin},
		ConsumeEnrollToken{Hash: "ab12", Name: "web01", Serial: "7f3", From: "127.0.0.1:5000"},
		RevokeCert{Revocation: meta.Revocation{Serial: "7f3", Reason: "host sold"}, By: admin},
		RevokeCert{Revocation: meta.Revocation{Principal: "web01"}, By: admin},
		RevokeEnrollToken{ID: "3f09c2a1d4e5b6c7", Reason: "pasted in a ticket", By: admin},
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
	for typ, v := range map[Type]uint16{TypeCreateEnrollToken: 68, TypeConsumeEnrollToken: 69, TypeRevokeCert: 70, TypeRevokeEnrollToken: 71} {
		if uint16(typ) != v {
			t.Errorf("%s = %d, want %d (tags are append-only)", typ, typ, v)
		}
	}
}
