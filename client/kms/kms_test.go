package kms_test

import (
	"bytes"
	"context"
	"errors"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/cofferhq/coffer/client/kms"
	"github.com/cofferhq/coffer/client/kms/kmstest"
	vault "github.com/hashicorp/vault/api"
)

// TestMain runs the fake KMS plugin when the test binary is executed as one.
func TestMain(m *testing.M) {
	if os.Getenv(kmstest.EnvPlugin) == "1" {
		os.Exit(kmstest.PluginMain(os.Stdin, os.Stdout))
	}
	os.Exit(m.Run())
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// backend is a KMS under test and what its administrator can do to a key.
type backend struct {
	client kms.Client
	// disable makes the key version w was wrapped under unusable; enable undoes it.
	disable, enable func(t *testing.T, w kms.Wrapped)
}

// pluginBackend is the fake plugin, run as this test binary.
func pluginBackend(t *testing.T) (backend, *kmstest.Store) {
	st, err := kmstest.NewStore(t.TempDir(), "coffer-key")
	if err != nil {
		t.Fatal(err)
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	p := &kms.Plugin{Name: "test", Path: exe, Env: append(os.Environ(), kmstest.EnvPlugin+"=1", kmstest.EnvState+"="+st.Path)}
	return backend{
		client:  p,
		disable: func(t *testing.T, w kms.Wrapped) { must(t, st.SetDisabled(w.KeyID, true)) },
		enable:  func(t *testing.T, w kms.Wrapped) { must(t, st.SetDisabled(w.KeyID, false)) },
	}, st
}

// transitBackend is the built-in Transit client against the fake server. Disabling
// rotates the key once more and raises min_decryption_version above w's version (Vault
// refuses a minimum above the latest version); enabling lowers it again.
func transitBackend(t *testing.T) (backend, *kmstest.Transit) {
	ft, err := kmstest.NewTransit("s.test-token", "coffer-key")
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(ft)
	t.Cleanup(srv.Close)
	tc, err := kms.NewTransit(kms.TransitConfig{Address: srv.URL, Token: "s.test-token"})
	if err != nil {
		t.Fatal(err)
	}
	admin := func(t *testing.T, path string, data map[string]any) {
		vc := vault.DefaultConfig()
		vc.Address = srv.URL
		c, err := vault.NewClient(vc)
		must(t, err)
		c.SetToken("s.test-token")
		_, err = c.Logical().Write(path, data)
		must(t, err)
	}
	return backend{
		client: tc,
		disable: func(t *testing.T, w kms.Wrapped) {
			admin(t, "transit/keys/"+w.KeyID+"/rotate", nil)
			admin(t, "transit/keys/"+w.KeyID+"/config", map[string]any{"min_decryption_version": mustAtoi(t, w.KeyVersion) + 1})
		},
		enable: func(t *testing.T, w kms.Wrapped) {
			admin(t, "transit/keys/"+w.KeyID+"/config", map[string]any{"min_decryption_version": mustAtoi(t, w.KeyVersion)})
		},
	}, ft
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func mustAtoi(t *testing.T, s string) int {
	t.Helper()
	n := 0
	for _, c := range s {
		if c < '0' || c > '9' {
			t.Fatalf("version %q is not a number", s)
		}
		n = n*10 + int(c-'0')
	}
	return n
}

// conformance: wrap, unwrap, rotate (the old version still unwraps, a new wrap uses the
// new version), disable (unwrap fails with ErrKeyDisabled naming the key), enable
// (unwrap works again), an unknown key (ErrKeyNotFound).
func conformance(t *testing.T, b backend) {
	ctx := ctxT(t)
	secret := []byte("AGE-SECRET-KEY-1 the identity a KMS wrap protects")
	w1, err := b.client.Wrap(ctx, "v1", "coffer-key", secret)
	must(t, err)
	if w1.KeyID != "coffer-key" || w1.KeyVersion != "1" || bytes.Contains(w1.Ciphertext, secret) {
		t.Fatalf("wrap: %+v", w1)
	}
	got, err := b.client.Unwrap(ctx, "v1", w1)
	if err != nil || !bytes.Equal(got, secret) {
		t.Fatalf("unwrap: %q, %v", got, err)
	}
	v, err := b.client.Rotate(ctx, "v1", "coffer-key")
	if err != nil || v != "2" {
		t.Fatalf("rotate: %q, %v", v, err)
	}
	w2, err := b.client.Wrap(ctx, "v1", "coffer-key", secret)
	if err != nil || w2.KeyVersion != "2" {
		t.Fatalf("wrap after rotate: %+v, %v", w2, err)
	}
	for _, w := range []kms.Wrapped{w1, w2} {
		if got, err := b.client.Unwrap(ctx, "v1", w); err != nil || !bytes.Equal(got, secret) {
			t.Fatalf("unwrap of version %s after rotate: %q, %v", w.KeyVersion, got, err)
		}
	}
	b.disable(t, w2)
	_, err = b.client.Unwrap(ctx, "v1", w2)
	var ke *kms.Error
	if !errors.Is(err, kms.ErrKeyDisabled) || !errors.As(err, &ke) || !strings.Contains(err.Error(), `"coffer-key"`) {
		t.Fatalf("unwrap of a disabled key: %v", err)
	}
	t.Logf("disabled: %v", err)
	b.enable(t, w2)
	if got, err := b.client.Unwrap(ctx, "v1", w2); err != nil || !bytes.Equal(got, secret) {
		t.Fatalf("unwrap after enabling: %q, %v", got, err)
	}
	if _, err := b.client.Wrap(ctx, "v1", "no-such-key", secret); !errors.Is(err, kms.ErrKeyNotFound) {
		t.Fatalf("wrap with an unknown key: %v", err)
	}
	bad := w2
	bad.Ciphertext = append([]byte(nil), w2.Ciphertext...)
	bad.Ciphertext[len(bad.Ciphertext)-3] ^= 1
	if _, err := b.client.Unwrap(ctx, "v1", bad); err == nil || errors.Is(err, kms.ErrKeyDisabled) {
		t.Fatalf("unwrap of a damaged ciphertext: %v", err)
	}
}

func TestPluginConformance(t *testing.T) {
	b, st := pluginBackend(t)
	conformance(t, b)
	if st.Calls(kms.OpUnwrap) < 4 {
		t.Fatalf("the plugin ran %d unwraps", st.Calls(kms.OpUnwrap))
	}
	// The context is bound: another vault's unwrap of the same ciphertext fails.
	ctx := ctxT(t)
	w, err := b.client.Wrap(ctx, "v1", "coffer-key", []byte("x"))
	must(t, err)
	if _, err := b.client.Unwrap(ctx, "v2", w); !errors.Is(err, kms.ErrInvalid) {
		t.Fatalf("unwrap for another vault: %v", err)
	}
}

func TestTransitConformance(t *testing.T) {
	b, ft := transitBackend(t)
	conformance(t, b)
	if ft.Calls("decrypt") < 5 || ft.Calls("rotate") < 1 {
		t.Fatalf("transit calls: decrypt %d, rotate %d", ft.Calls("decrypt"), ft.Calls("rotate"))
	}
	// A wrong token is denied.
	srv := httptest.NewServer(ft)
	defer srv.Close()
	tc, err := kms.NewTransit(kms.TransitConfig{Address: srv.URL, Token: "wrong"})
	must(t, err)
	if _, err := tc.Wrap(ctxT(t), "v1", "coffer-key", []byte("x")); !errors.Is(err, kms.ErrDenied) {
		t.Fatalf("wrong token: %v", err)
	}
	// Key names are path elements.
	if _, err := tc.Wrap(ctxT(t), "v1", "../sys/seal", []byte("x")); !errors.Is(err, kms.ErrInvalid) {
		t.Fatalf("a key name with ..: %v", err)
	}
}

// TestPluginFailures: a plugin that exits non-zero, prints garbage, or hangs is reported
// (ErrUnavailable / ErrInvalid), and a missing plugin is named.
func TestPluginFailures(t *testing.T) {
	ctx := ctxT(t)
	dir := t.TempDir()
	script := func(name, body string) string {
		p := dir + "/" + name
		must(t, os.WriteFile(p, []byte("#!/bin/sh\n"+body+"\n"), 0o755))
		return p
	}
	cases := []struct {
		body string
		want error
		text string
	}{
		{"echo 'vault sealed' >&2; exit 3", kms.ErrUnavailable, "vault sealed"},
		{"echo 'not json'", kms.ErrInvalid, "plugin response"},
		{`echo '{"protocol":1,"error":{"code":"key_disabled","message":"disabled by ops"}}'`, kms.ErrKeyDisabled, "disabled by ops"},
		{`echo '{"protocol":1,"error":{"code":"weird","message":"x"}}'`, kms.ErrInvalid, "unknown error code"},
		{`echo '{"protocol":1,"key_id":"other","key_version":"1","ciphertext":"eA=="}'`, kms.ErrInvalid, "key_id"},
		{`echo '{"protocol":2}'`, kms.ErrInvalid, "protocol 2"},
	}
	for i, c := range cases {
		p := &kms.Plugin{Name: "t", Path: script("p"+string(rune('a'+i)), "cat >/dev/null; "+c.body)}
		_, err := p.Wrap(ctx, "v", "k1", []byte("x"))
		if !errors.Is(err, c.want) || !strings.Contains(err.Error(), c.text) {
			t.Errorf("%s: %v, want %v with %q", c.body, err, c.want, c.text)
		}
	}
	p := &kms.Plugin{Name: "slow", Path: script("slow", "exec sleep 30"), Timeout: 200 * time.Millisecond}
	if _, err := p.Wrap(ctx, "v", "k1", []byte("x")); !errors.Is(err, kms.ErrUnavailable) {
		t.Errorf("hanging plugin: %v", err)
	}
	r := &kms.Resolver{}
	if _, err := r.Client("no-such-plugin-here"); !errors.Is(err, kms.ErrUnavailable) || !strings.Contains(err.Error(), "coffer-kms-no-such-plugin-here") {
		t.Errorf("missing plugin: %v", err)
	}
	if _, err := r.Client("../bin/sh"); !errors.Is(err, kms.ErrInvalid) {
		t.Errorf("a path as plugin name: %v", err)
	}
}

// FuzzDecodeResponse: the decoder of plugin output never panics, and whatever it accepts
// fits the request's op and the protocol's bounds.
func FuzzDecodeResponse(f *testing.F) {
	f.Add("wrap", []byte(`{"protocol":1,"key_id":"k","key_version":"1","ciphertext":"eHl6"}`))
	f.Add("unwrap", []byte(`{"protocol":1,"plaintext":"eHl6"}`))
	f.Add("rotate", []byte(`{"protocol":1,"key_id":"k","key_version":"2"}`))
	f.Add("unwrap", []byte(`{"protocol":1,"error":{"code":"key_disabled","message":"off"}}`))
	f.Add("wrap", []byte(`{"protocol":1} {}`))
	f.Fuzz(func(t *testing.T, op string, b []byte) {
		req := kms.Request{Protocol: kms.Protocol, Op: op, KeyID: "k", KeyVersion: "1"}
		r, err := kms.DecodeResponse(req, b)
		if err != nil {
			return
		}
		switch op {
		case kms.OpWrap:
			if r.KeyID != "k" || len(r.Ciphertext) == 0 || len(r.Ciphertext) > kms.MaxCiphertext || kms.ValidateKeyVersion(r.KeyVersion) != nil {
				t.Fatalf("accepted wrap response %+v", r)
			}
		case kms.OpUnwrap:
			if len(r.Plaintext) == 0 || len(r.Plaintext) > kms.MaxPlaintext {
				t.Fatalf("accepted unwrap response %+v", r)
			}
		case kms.OpRotate:
			if r.KeyID != "k" || kms.ValidateKeyVersion(r.KeyVersion) != nil {
				t.Fatalf("accepted rotate response %+v", r)
			}
		default:
			t.Fatalf("accepted a response to op %q", op)
		}
	})
}

// FuzzDecodeRequest: the decoder plugins written in Go use never panics.
func FuzzDecodeRequest(f *testing.F) {
	f.Add([]byte(`{"protocol":1,"op":"wrap","key_id":"k","plaintext":"eHl6","context":{"vault":"v"}}`))
	f.Add([]byte(`{"protocol":1,"op":"unwrap","key_id":"k","key_version":"1","ciphertext":"eHl6"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		if r, err := kms.DecodeRequest(b); err == nil && kms.ValidateKeyID(r.KeyID) != nil {
			t.Fatalf("accepted %+v", r)
		}
	})
}
