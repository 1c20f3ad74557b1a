package command

import (
	"reflect"
	"testing"
	"time"

	"github.com/cofferhq/coffer/meta"
)

// TestKeysRoundTrip: the key commands encode deterministically and decode to themselves.
func TestKeysRoundTrip(t *testing.T) {
	ks := meta.VaultKeys{Management: meta.KeyPlatform, Epoch: 2, RotateBy: 3, Revision: 4, Wraps: []meta.KeyWrap{
		{ID: "ab", Kind: meta.WrapPassphrase, Holder: "passphrase", Recipient: "age1x", Identity: []byte{1}, Keyring: []byte{2},
			Params: map[string]string{"k": "v"}, Created: time.Unix(5, 0).UTC(), CreatedBy: "ops", LastUsed: time.Unix(6, 0).UTC()},
	}}
	for _, b := range []Body{
		SetVaultKeys{Vault: "v1", Change: meta.KeysChange{Revision: 3, Keys: ks, Event: "rotate-key", Reason: "r"}, By: meta.Principal{Name: "ops", Role: meta.RoleAdmin}},
		TouchKeyWrap{Vault: "v1", ID: "ab", By: meta.Principal{Name: "h", Role: meta.RoleBackupAgent}},
	} {
		cmd := Command{Time: 7, Body: b}
		enc, err := Encode(cmd)
		if err != nil {
			t.Fatal(err)
		}
		again, _ := Encode(cmd)
		if string(again) != string(enc) {
			t.Fatalf("%s: not deterministic", b.Type())
		}
		got, err := NewCodec().Decode(enc)
		if err != nil || !reflect.DeepEqual(got, cmd) {
			t.Fatalf("%s: round trip: %v\n got %#v\nwant %#v", b.Type(), err, got, cmd)
		}
		if b.Type().String() == "" || b.Type() < 160 || b.Type() > 179 {
			t.Fatalf("%s: tag %d outside 160..179", b.Type(), b.Type())
		}
	}
}
