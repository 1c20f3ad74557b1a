package fsm

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/cofferhq/coffer/meta"
	"github.com/cofferhq/coffer/meta/command"
)

// TestEnrollNameSquatting: the enrollee cannot pick its name. A token must name its
// agent; a name bound to another live token, already enrolled (until its certificates are
// revoked) or a node's ID cannot be bound again; an enrollment asking for another name
// than its token's, or using a token that names none (made before names were bound), is
// refused and changes nothing.
func TestEnrollNameSquatting(t *testing.T) {
	f := open(t, t.TempDir())
	const sec = int64(time.Second)
	idx := uint64(0)
	stamp := 100 * sec
	apply := func(b command.Body) Result {
		t.Helper()
		idx++
		stamp += sec / 10
		return result(t, f.Apply(entry(t, idx, stamp, b)))
	}
	hash := func(i int) string { return meta.EnrollTokenHash(fmt.Sprintf("coffer-enroll-test-%d", i)) }
	create := func(i int, name string) Result {
		t.Helper()
		return apply(command.CreateEnrollToken{Hash: hash(i), Vault: "a", Name: name, TTL: int64(time.Hour), By: admin})
	}
	consume := func(i int, name, serial string) Result {
		t.Helper()
		return apply(command.ConsumeEnrollToken{Hash: hash(i), Name: name, Serial: serial})
	}
	state := func(i int) meta.EnrollToken {
		t.Helper()
		tok, err := f.EnrollToken(hash(i))
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	apply(vault("a"))
	apply(cmap(1)) // node n1

	if r := create(1, "db01"); r.Err != nil {
		t.Fatal(r.Err)
	}
	// A token must name its agent.
	if r := create(2, ""); !errors.Is(r.Err, meta.ErrInvalid) || !strings.Contains(r.Err.Error(), "--name") {
		t.Fatalf("token without a name: %v, want ErrInvalid asking for --name", r.Err)
	}
	if _, err := f.EnrollToken(hash(2)); !errors.Is(err, meta.ErrNotFound) {
		t.Fatalf("refused token stored: %v", err)
	}
	// A token from before names were bound names none: it enrolls nobody, whatever name
	// the enrollee asks for.
	legacy := meta.EnrollToken{ID: meta.EnrollTokenID(hash(3)), Hash: hash(3), Vault: "a", Created: time.Unix(0, stamp), Expires: time.Unix(0, stamp+int64(time.Hour)), By: "ops"}
	putRecord(t, f, enrollTokenKey(hash(3)), legacy)
	for _, name := range []string{"db01", "fresh"} {
		if r := consume(3, name, "s3"); !errors.Is(r.Err, meta.ErrDenied) {
			t.Fatalf("legacy unnamed token asking for %q: %v, want ErrDenied", name, r.Err)
		}
	}
	if tok := state(3); tok.Used {
		t.Fatalf("refused enrollment used the legacy token: %+v", tok)
	}
	// A name bound to another live token cannot be bound again.
	if r := create(4, "db01"); !errors.Is(r.Err, meta.ErrExists) || !strings.Contains(r.Err.Error(), meta.EnrollTokenID(hash(1))) {
		t.Fatalf("second token for db01: %v, want ErrExists naming token %s", r.Err, meta.EnrollTokenID(hash(1)))
	}
	// An enrollee holding another token cannot take db01.
	if r := create(5, "web02"); r.Err != nil {
		t.Fatal(r.Err)
	}
	if r := consume(5, "db01", "s5"); !errors.Is(r.Err, meta.ErrDenied) || !strings.Contains(r.Err.Error(), "web02") {
		t.Fatalf("token for web02 asking for db01: %v, want ErrDenied naming web02", r.Err)
	}
	if tok := state(5); tok.Used || tok.State(f.Now()) != meta.TokenLive {
		t.Fatalf("refused enrollment changed the token: %+v", tok)
	}
	if tok := state(1); tok.Used || tok.State(f.Now()) != meta.TokenLive {
		t.Fatalf("db01's token after the squatting attempts: %+v, want live", tok)
	}
	// db01's own token enrolls it.
	if r := consume(1, "", "s1"); r.Err != nil || r.Value.(meta.EnrollToken).Principal != "db01" {
		t.Fatalf("db01's enrollment: %+v", r)
	}
	// The name is used now: no other token takes it.
	for _, i := range []int{3, 5} {
		if r := consume(i, "db01", fmt.Sprintf("t%d", i)); !errors.Is(r.Err, meta.ErrDenied) {
			t.Fatalf("token %d asking for the enrolled db01: %v, want ErrDenied", i, r.Err)
		}
		if tok := state(i); tok.Used {
			t.Fatalf("refused enrollment used token %d: %+v", i, tok)
		}
	}
	// An enrolled name is not bound again while its certificate stands, nor is a node ID.
	if r := create(6, "db01"); !errors.Is(r.Err, meta.ErrExists) || !strings.Contains(r.Err.Error(), "cert revoke --principal db01") {
		t.Fatalf("token for enrolled db01: %v, want ErrExists pointing at cert revoke", r.Err)
	}
	if r := create(7, "n1"); !errors.Is(r.Err, meta.ErrExists) || !strings.Contains(r.Err.Error(), "node") {
		t.Fatalf("token named after node n1: %v, want ErrExists", r.Err)
	}
	// Once db01's certificates are revoked, an admin may bind the name to a new host.
	if r := apply(command.RevokeCert{Revocation: meta.Revocation{Principal: "db01", Reason: "host rebuilt"}, By: admin}); r.Err != nil {
		t.Fatal(r.Err)
	}
	if r := create(8, "db01"); r.Err != nil {
		t.Fatalf("token for db01 after its revocation: %v", r.Err)
	}
	es, _ := f.AuditLog(0, 0)
	refused := 0
	for _, e := range es {
		if e.Outcome == meta.AuditRefused {
			refused++
		}
	}
	if refused != 9 {
		t.Fatalf("%d refusals audited, want 9", refused)
	}
}

// putRecord writes v under key directly, as an older binary would have.
func putRecord(t *testing.T, f *FSM, key string, v any) {
	t.Helper()
	h, err := f.acquire()
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = h.unref() }()
	b := h.db.NewIndexedBatch()
	defer b.Close()
	if err := f.put(b, key, v); err != nil {
		t.Fatal(err)
	}
	if err := b.Commit(nil); err != nil {
		t.Fatal(err)
	}
}
