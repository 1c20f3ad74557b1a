// Package metatest is the conformance suite of the meta.Service contract: RunService
// holds an implementation to what meta.Service's doc comments state (vaults, snapshots
// and the commit check, the cluster map, and the error each refusal wraps), and, when it
// has one, its meta.RetentionService (locks, holds, deletes, forget).
// meta/memmeta, meta/metarpc over loopback QUIC and a three-server meta/server cluster
// run it.
//
// The suite is one file longer than the project's usual 600 lines on purpose: each case
// states one clause of the contract, in the order meta.Service documents them, so the file
// reads as the contract's test plan.
package metatest

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cofferhq/coffer/chunkstore/chunk"
	"github.com/cofferhq/coffer/chunkstore/reflist"
	"github.com/cofferhq/coffer/meta"
	"github.com/cofferhq/coffer/placement"
)

// Fixture is one implementation under test, shared by every case of one RunService.
type Fixture struct {
	// As returns the service as seen by principal p: its requests carry p's authority
	// (meta.WithPrincipal in process, p's certificate over the network). The suite asks
	// for admins, scoped backup agents and restore operators, and nodes.
	As func(p meta.Principal) meta.Service
	// Put stores a chunk where the implementation's commit check reads it. The store
	// must not check that id hashes to data (the suite plants a forged reference list).
	Put func(ctx context.Context, id chunk.ID, data []byte) error
	// Retention returns the implementation's meta.RetentionService as p sees it, on the
	// state As serves; nil when it has none (the retention cases are then skipped).
	Retention func(p meta.Principal) meta.RetentionService
}

// admin is the principal most cases act as.
func admin() meta.Principal { return meta.Principal{Name: "metatest-admin", Role: meta.RoleAdmin} }

func node() meta.Principal { return meta.Principal{Name: "metatest-node", Role: meta.RoleNode} }

func agent(vaults ...meta.VaultID) meta.Principal {
	return meta.Principal{Name: "metatest-agent", Role: meta.RoleBackupAgent, Vaults: vaults}
}

func restorer(vaults ...meta.VaultID) meta.Principal {
	return meta.Principal{Name: "metatest-restore", Role: meta.RoleRestoreOperator, Vaults: vaults}
}

// WithPrincipal returns svc with p placed in every call's context (meta.WithPrincipal):
// Fixture.As for an implementation that authorizes the context's principal.
func WithPrincipal(svc meta.Service, p meta.Principal) meta.Service {
	return &asPrincipal{svc: svc, p: p}
}

type asPrincipal struct {
	svc meta.Service
	p   meta.Principal
}

func (a *asPrincipal) ctx(ctx context.Context) context.Context { return meta.WithPrincipal(ctx, a.p) }

func (a *asPrincipal) CreateVault(ctx context.Context, v meta.Vault) (meta.Vault, error) {
	return a.svc.CreateVault(a.ctx(ctx), v)
}
func (a *asPrincipal) GetVault(ctx context.Context, id meta.VaultID) (meta.Vault, error) {
	return a.svc.GetVault(a.ctx(ctx), id)
}
func (a *asPrincipal) ListVaults(ctx context.Context) ([]meta.Vault, error) {
	return a.svc.ListVaults(a.ctx(ctx))
}
func (a *asPrincipal) CommitSnapshot(ctx context.Context, s meta.Snapshot) (meta.Snapshot, error) {
	return a.svc.CommitSnapshot(a.ctx(ctx), s)
}
func (a *asPrincipal) ListSnapshots(ctx context.Context, v meta.VaultID) ([]meta.Snapshot, error) {
	return a.svc.ListSnapshots(a.ctx(ctx), v)
}
func (a *asPrincipal) GetSnapshot(ctx context.Context, v meta.VaultID, id meta.SnapshotID) (meta.Snapshot, error) {
	return a.svc.GetSnapshot(a.ctx(ctx), v, id)
}
func (a *asPrincipal) ClusterMap(ctx context.Context) (placement.Map, error) {
	return a.svc.ClusterMap(a.ctx(ctx))
}
func (a *asPrincipal) SetClusterMap(ctx context.Context, m placement.Map) error {
	return a.svc.SetClusterMap(a.ctx(ctx), m)
}
func (a *asPrincipal) RaftStatus(ctx context.Context) (meta.RaftStatus, error) {
	return a.svc.RaftStatus(a.ctx(ctx))
}

// env is one case's view of the fixture.
type env struct {
	t  *testing.T
	f  Fixture
	mu sync.Mutex // guards services
	sv map[string]meta.Service
}

func (e *env) as(p meta.Principal) meta.Service {
	e.mu.Lock()
	defer e.mu.Unlock()
	key := fmt.Sprintf("%s %v", p, p.Vaults)
	if s, ok := e.sv[key]; ok {
		return s
	}
	s := e.f.As(p)
	e.sv[key] = s
	return s
}

func (e *env) admin() meta.Service { return e.as(admin()) }

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func randID(t *testing.T) chunk.ID {
	var id chunk.ID
	if _, err := rand.Read(id[:]); err != nil {
		t.Fatal(err)
	}
	return id
}

// vaultID returns a vault ID unique to the running case.
func vaultID(t *testing.T, n string) meta.VaultID {
	name := strings.NewReplacer("/", ".", " ", "_").Replace(t.Name())
	return meta.VaultID(fmt.Sprintf("%s.%s", name, n))
}

func newVault(id meta.VaultID) meta.Vault {
	return meta.Vault{ID: id, KeyWraps: [][]byte{{1, 2, 3}, {4}}, Chunker: "fastcdc-v1-1M"}
}

// vault creates a vault as admin.
func (e *env) vault(n string) meta.VaultID {
	e.t.Helper()
	id := vaultID(e.t, n)
	if _, err := e.admin().CreateVault(ctxT(e.t), newVault(id)); err != nil {
		e.t.Fatalf("create vault %s: %v", id, err)
	}
	return id
}

// stored stores n data chunks, a tree and their reference list, and returns a snapshot of
// vault to commit. skip > 0 leaves that many data chunks unstored.
func (e *env) stored(vault meta.VaultID, n, skip int) meta.Snapshot {
	e.t.Helper()
	ctx := ctxT(e.t)
	ids := make([]chunk.ID, 0, n+1)
	for i := range n + 1 {
		data := []byte(fmt.Sprintf("chunk %d %x", i, randID(e.t)))
		id := chunk.ID(sha256.Sum256(data))
		ids = append(ids, id)
		if i >= skip {
			e.put(ctx, id, data)
		}
	}
	tree := ids[n] // the last one stands for the root tree
	var refs []chunk.ID
	for _, r := range reflist.Encode(ids) {
		e.put(ctx, r.ID, r.Data)
		refs = append(refs, r.ID)
	}
	return meta.Snapshot{ID: randID(e.t), Vault: vault, Host: "host", Paths: []string{"/home", "/etc"},
		Tags: []string{"daily"}, Start: time.Unix(1_700_000_000, 0).UTC(), Tree: tree, Refs: refs,
		Stats: meta.SnapshotStats{FilesNew: int64(n), BytesAdded: 42, Status: "completed"}}
}

func (e *env) put(ctx context.Context, id chunk.ID, data []byte) {
	e.t.Helper()
	if err := e.f.Put(ctx, id, data); err != nil {
		e.t.Fatalf("put chunk %s: %v", id.Str(), err)
	}
}

func (e *env) commit(s meta.Snapshot) meta.Snapshot {
	e.t.Helper()
	got, err := e.admin().CommitSnapshot(ctxT(e.t), s)
	if err != nil {
		e.t.Fatalf("commit %s: %v", s.ID.Str(), err)
	}
	return got
}

// absent fails unless snapshot id of vault is not recorded.
func (e *env) absent(vault meta.VaultID, id meta.SnapshotID) {
	e.t.Helper()
	if _, err := e.admin().GetSnapshot(ctxT(e.t), vault, id); !errors.Is(err, meta.ErrNotFound) {
		e.t.Fatalf("refused snapshot %s: GetSnapshot = %v, want ErrNotFound (nothing recorded)", id.Str(), err)
	}
}

func wantErr(t *testing.T, what string, err, want error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Errorf("%s: %v, want %v", what, err, want)
	}
}

// RunService runs the conformance cases against the implementation newFixture returns
// (called once; the cases share it, each in vaults of its own).
func RunService(t *testing.T, newFixture func(t *testing.T) Fixture) {
	f := newFixture(t)
	for _, c := range cases() {
		t.Run(c.name, func(t *testing.T) {
			c.run(&env{t: t, f: f, sv: make(map[string]meta.Service)})
		})
	}
}

// cases are the suite's cases, in the order they run.
func cases() []struct {
	name string
	run  func(e *env)
} {
	return []struct {
		name string
		run  func(e *env)
	}{
		{"CreateVault", testCreateVault},
		{"CreateVaultExists", testCreateVaultExists},
		{"CreateVaultInvalid", testCreateVaultInvalid},
		{"GetVaultNotFound", testGetVaultNotFound},
		{"ListVaultsSorted", testListVaultsSorted},
		{"VaultScope", testVaultScope},
		{"Commit", testCommit},
		{"CommitExists", testCommitExists},
		{"CommitMissingChunks", testCommitMissingChunks},
		{"CommitInvalid", testCommitInvalid},
		{"CommitUnknownVault", testCommitUnknownVault},
		{"CommitDenied", testCommitDenied},
		{"CommitLockAndHold", testCommitLockAndHold},
		{"ListSnapshots", testListSnapshots},
		{"GetSnapshotNotFound", testGetSnapshotNotFound},
		{"ClusterMap", testClusterMap},
		{"RaftStatus", testRaftStatus},
		{"ConcurrentCommits", testConcurrentCommits},
		{"SetLock", testSetLock},
		{"HoldAndDelete", testHoldAndDelete},
		{"Forget", testForget},
	}
}

// testCreateVault: the created vault carries a creation time, the requested fields and,
// asked for no profile, a valid one chosen by the service; GetVault returns the same.
func testCreateVault(e *env) {
	ctx := ctxT(e.t)
	want := newVault(vaultID(e.t, "a"))
	v, err := e.admin().CreateVault(ctx, want)
	if err != nil {
		e.t.Fatal(err)
	}
	if v.ID != want.ID || v.Created.IsZero() || v.Chunker != want.Chunker || !slices.EqualFunc(v.KeyWraps, want.KeyWraps, slices.Equal) {
		e.t.Fatalf("created %+v, want %+v with a creation time", v, want)
	}
	if err := meta.ValidateProfile(v.Profile); err != nil {
		e.t.Fatalf("created vault has profile %+v: %v", v.Profile, err)
	}
	got, err := e.admin().GetVault(ctx, want.ID)
	if err != nil {
		e.t.Fatal(err)
	}
	if got.ID != v.ID || !got.Created.Equal(v.Created) || got.Profile != v.Profile || got.Chunker != v.Chunker || !slices.EqualFunc(got.KeyWraps, v.KeyWraps, slices.Equal) {
		e.t.Fatalf("GetVault = %+v, want %+v", got, v)
	}
	explicit := newVault(vaultID(e.t, "b"))
	explicit.Profile = placement.Profile{K: 2, M: 1}
	if v, err := e.admin().CreateVault(ctx, explicit); err != nil || v.Profile != explicit.Profile {
		e.t.Fatalf("vault with profile 2+1: %+v %v", v, err)
	}
}

// testCreateVaultExists: a taken ID is ErrExists and the first vault is unchanged.
func testCreateVaultExists(e *env) {
	ctx := ctxT(e.t)
	id := e.vault("a")
	again := newVault(id)
	again.KeyWraps = [][]byte{{9, 9}}
	if _, err := e.admin().CreateVault(ctx, again); !errors.Is(err, meta.ErrExists) {
		e.t.Fatalf("second CreateVault %s: %v, want ErrExists", id, err)
	}
	if v, err := e.admin().GetVault(ctx, id); err != nil || !slices.EqualFunc(v.KeyWraps, newVault(id).KeyWraps, slices.Equal) {
		e.t.Fatalf("after the refused create: %+v %v, want the first vault", v, err)
	}
}

// testCreateVaultInvalid: each malformed vault is ErrInvalid and nothing is created.
func testCreateVaultInvalid(e *env) {
	ctx := ctxT(e.t)
	bad := func(n string, edit func(*meta.Vault)) (string, meta.Vault) {
		v := newVault(vaultID(e.t, n))
		edit(&v)
		return n, v
	}
	for _, c := range []func() (string, meta.Vault){
		func() (string, meta.Vault) { return bad("empty-id", func(v *meta.Vault) { v.ID = "" }) },
		func() (string, meta.Vault) { return bad("slash", func(v *meta.Vault) { v.ID += "/x" }) },
		func() (string, meta.Vault) { return bad("dot", func(v *meta.Vault) { v.ID = "." + v.ID }) },
		func() (string, meta.Vault) {
			return bad("long", func(v *meta.Vault) { v.ID = meta.VaultID(strings.Repeat("x", meta.MaxVaultIDLen+1)) })
		},
		func() (string, meta.Vault) { return bad("no-wraps", func(v *meta.Vault) { v.KeyWraps = nil }) },
		func() (string, meta.Vault) {
			return bad("empty-wrap", func(v *meta.Vault) { v.KeyWraps = [][]byte{{1}, {}} })
		},
		func() (string, meta.Vault) {
			return bad("profile", func(v *meta.Vault) { v.Profile = placement.Profile{K: 0, M: 2} })
		},
		func() (string, meta.Vault) {
			return bad("retention", func(v *meta.Vault) { v.Retention = &meta.VaultPolicy{MaxAgentLock: time.Hour} })
		},
		func() (string, meta.Vault) {
			return bad("deleted", func(v *meta.Vault) { v.Deleted = &meta.VaultDeletion{At: time.Unix(1, 0), By: "x"} })
		},
	} {
		name, v := c()
		_, err := e.admin().CreateVault(ctx, v)
		wantErr(e.t, "CreateVault "+name, err, meta.ErrInvalid)
		if meta.ValidateVaultID(v.ID) == nil {
			if _, err := e.admin().GetVault(ctx, v.ID); !errors.Is(err, meta.ErrNotFound) {
				e.t.Errorf("refused vault %s (%s) exists: %v", v.ID, name, err)
			}
		}
	}
}

// testGetVaultNotFound: an unknown vault is ErrNotFound.
func testGetVaultNotFound(e *env) {
	_, err := e.admin().GetVault(ctxT(e.t), vaultID(e.t, "none"))
	wantErr(e.t, "GetVault of an unknown vault", err, meta.ErrNotFound)
}

// testListVaultsSorted: ListVaults holds every vault, sorted by ID.
func testListVaultsSorted(e *env) {
	made := []meta.VaultID{e.vault("c"), e.vault("a"), e.vault("b")}
	vs, err := e.admin().ListVaults(ctxT(e.t))
	if err != nil {
		e.t.Fatal(err)
	}
	var ids []meta.VaultID
	for _, v := range vs {
		ids = append(ids, v.ID)
	}
	if !slices.IsSorted(ids) {
		e.t.Errorf("ListVaults not sorted by ID: %v", ids)
	}
	for _, id := range made {
		if !slices.Contains(ids, id) {
			e.t.Errorf("ListVaults lacks %s: %v", id, ids)
		}
	}
}

// testVaultScope: a scoped principal reads and lists only its vaults (ErrDenied beyond
// them); a node reads vaults without their key wraps; a restore operator and a node
// create nothing.
func testVaultScope(e *env) {
	ctx := ctxT(e.t)
	mine, other := e.vault("mine"), e.vault("other")
	for _, p := range []meta.Principal{agent(mine), restorer(mine)} {
		svc := e.as(p)
		if _, err := svc.GetVault(ctx, mine); err != nil {
			e.t.Errorf("%s: GetVault of its vault: %v", p, err)
		}
		_, err := svc.GetVault(ctx, other)
		wantErr(e.t, fmt.Sprintf("%s: GetVault of another vault", p), err, meta.ErrDenied)
		vs, err := svc.ListVaults(ctx)
		if err != nil || len(vs) != 1 || vs[0].ID != mine {
			e.t.Errorf("%s: ListVaults = %v %v, want only %s", p, vs, err, mine)
		}
	}
	// Key wraps go to admins and the vault's agents and restore operators, never to nodes.
	if v, err := e.as(agent(mine)).GetVault(ctx, mine); err != nil || len(v.KeyWraps) == 0 {
		e.t.Errorf("agent reading its vault: %d key wraps, %v; want them", len(v.KeyWraps), err)
	}
	if v, err := e.as(node()).GetVault(ctx, mine); err != nil || v.ID != mine || len(v.KeyWraps) != 0 {
		e.t.Errorf("node reading a vault: %+v %v, want the record without key wraps", v, err)
	}
	if vs, err := e.as(node()).ListVaults(ctx); err != nil || !slices.ContainsFunc(vs, func(v meta.Vault) bool { return v.ID == mine }) ||
		slices.ContainsFunc(vs, func(v meta.Vault) bool { return len(v.KeyWraps) != 0 }) {
		e.t.Errorf("node listing vaults: %v; want every vault, no key wraps", err)
	}
	_, err := e.as(agent(mine)).CreateVault(ctx, newVault(vaultID(e.t, "elsewhere")))
	wantErr(e.t, "agent creating a vault outside its scope", err, meta.ErrDenied)
	if _, err := e.as(agent(vaultID(e.t, "own"))).CreateVault(ctx, newVault(vaultID(e.t, "own"))); err != nil {
		e.t.Errorf("agent creating its own vault: %v", err)
	}
	_, err = e.as(restorer(vaultID(e.t, "r"))).CreateVault(ctx, newVault(vaultID(e.t, "r")))
	wantErr(e.t, "restore operator creating a vault", err, meta.ErrDenied)
	_, err = e.as(node()).CreateVault(ctx, newVault(vaultID(e.t, "n")))
	wantErr(e.t, "node creating a vault", err, meta.ErrDenied)
	for _, n := range []string{"elsewhere", "r", "n"} {
		if _, err := e.admin().GetVault(ctx, vaultID(e.t, n)); !errors.Is(err, meta.ErrNotFound) {
			e.t.Errorf("refused vault %s exists: %v", n, err)
		}
	}
}

func sameSnapshot(a, b meta.Snapshot) bool {
	return a.ID == b.ID && a.Vault == b.Vault && a.Time.Equal(b.Time) && a.Start.Equal(b.Start) &&
		a.Host == b.Host && slices.Equal(a.Paths, b.Paths) && slices.Equal(a.Tags, b.Tags) &&
		a.Tree == b.Tree && slices.Equal(a.Refs, b.Refs) && a.Stats == b.Stats &&
		(a.Parent == nil) == (b.Parent == nil) && (a.Parent == nil || *a.Parent == *b.Parent) &&
		(a.Lock == nil) == (b.Lock == nil) && (a.Lock == nil || a.Lock.Mode == b.Lock.Mode && a.Lock.Until.Equal(b.Lock.Until)) &&
		a.LegalHold == b.LegalHold
}

// testCommit: a snapshot whose chunks are stored commits with a commit time and is read
// back whole by GetSnapshot and ListSnapshots; a child names its parent.
func testCommit(e *env) {
	ctx := ctxT(e.t)
	v := e.vault("a")
	want := e.stored(v, 50, 0)
	got := e.commit(want)
	if got.Time.IsZero() {
		e.t.Fatalf("committed snapshot has no commit time: %+v", got)
	}
	want.Time = got.Time
	if !sameSnapshot(got, want) {
		e.t.Fatalf("committed %+v, want %+v", got, want)
	}
	read, err := e.admin().GetSnapshot(ctx, v, want.ID)
	if err != nil || !sameSnapshot(read, got) {
		e.t.Fatalf("GetSnapshot = %+v %v, want %+v", read, err, got)
	}
	child := e.stored(v, 5, 0)
	child.Parent = &got.ID
	child = e.commit(child)
	list, err := e.admin().ListSnapshots(ctx, v)
	if err != nil || len(list) != 2 || !sameSnapshot(list[0], got) || !sameSnapshot(list[1], child) {
		e.t.Fatalf("ListSnapshots = %+v %v, want the two commits in order", list, err)
	}
}

// testCommitExists: committing an ID again is ErrExists and records nothing new.
func testCommitExists(e *env) {
	ctx := ctxT(e.t)
	v := e.vault("a")
	s := e.commit(e.stored(v, 3, 0))
	again := e.stored(v, 3, 0)
	again.ID = s.ID
	_, err := e.admin().CommitSnapshot(ctx, again)
	wantErr(e.t, "recommit", err, meta.ErrExists)
	if got, err := e.admin().GetSnapshot(ctx, v, s.ID); err != nil || !sameSnapshot(got, s) {
		e.t.Errorf("after the refused recommit: %+v %v, want %+v", got, err, s)
	}
}

// testCommitMissingChunks: a missing data chunk, tree or reference list is
// ErrMissingChunks and nothing is recorded.
func testCommitMissingChunks(e *env) {
	ctx := ctxT(e.t)
	v := e.vault("a")
	missingData := e.stored(v, 20, 1)
	_, err := e.admin().CommitSnapshot(ctx, missingData)
	wantErr(e.t, "commit with a data chunk missing", err, meta.ErrMissingChunks)
	e.absent(v, missingData.ID)

	missingTree := e.stored(v, 0, 1) // the only chunk is the tree
	_, err = e.admin().CommitSnapshot(ctx, missingTree)
	wantErr(e.t, "commit with the tree missing", err, meta.ErrMissingChunks)
	e.absent(v, missingTree.ID)

	missingRefs := e.stored(v, 3, 0)
	missingRefs.Refs = append(missingRefs.Refs, randID(e.t))
	_, err = e.admin().CommitSnapshot(ctx, missingRefs)
	wantErr(e.t, "commit with a reference list missing", err, meta.ErrMissingChunks)
	e.absent(v, missingRefs.ID)
}

// testCommitInvalid: a malformed snapshot, an unlisted tree or a reference list that
// does not hash to its ID is ErrInvalid and nothing is recorded.
func testCommitInvalid(e *env) {
	ctx := ctxT(e.t)
	v := e.vault("a")
	good := e.stored(v, 3, 0)
	zero := chunk.ID{}
	forged := e.stored(v, 3, 0)
	list := reflist.Encode([]chunk.ID{forged.Tree})[0]
	forgedRef := randID(e.t)
	e.put(ctx, forgedRef, list.Data) // a valid list stored under an ID it does not hash to
	for name, edit := range map[string]func(*meta.Snapshot){
		"zero ID":          func(s *meta.Snapshot) { s.ID = zero },
		"zero tree":        func(s *meta.Snapshot) { s.Tree = zero },
		"no refs":          func(s *meta.Snapshot) { s.Refs = nil },
		"zero ref":         func(s *meta.Snapshot) { s.Refs = append(slices.Clone(s.Refs), zero) },
		"zero parent":      func(s *meta.Snapshot) { s.Parent = &zero },
		"bad vault ID":     func(s *meta.Snapshot) { s.Vault = "no/such" },
		"tree not listed":  func(s *meta.Snapshot) { s.Tree = randID(e.t) },
		"forged ref list":  func(s *meta.Snapshot) { s.Refs = []chunk.ID{forgedRef} },
		"lock in the past": func(s *meta.Snapshot) { s.Lock = &meta.Lock{Mode: meta.Governance, Until: time.Unix(1, 0)} },
		"lock mode":        func(s *meta.Snapshot) { s.Lock = &meta.Lock{Mode: "forever", Until: time.Now().Add(time.Hour)} },
	} {
		s := good
		s.ID = randID(e.t)
		edit(&s)
		_, err := e.admin().CommitSnapshot(ctx, s)
		wantErr(e.t, "commit with "+name, err, meta.ErrInvalid)
		if !s.ID.IsZero() && meta.ValidateVaultID(s.Vault) == nil {
			e.absent(s.Vault, s.ID)
		}
	}
}

// testCommitUnknownVault: a commit to a vault that does not exist is ErrNotFound.
func testCommitUnknownVault(e *env) {
	s := e.stored(vaultID(e.t, "none"), 3, 0)
	_, err := e.admin().CommitSnapshot(ctxT(e.t), s)
	wantErr(e.t, "commit to an unknown vault", err, meta.ErrNotFound)
}

// testCommitDenied: a restore operator or a node commits nothing, an agent only in its
// vaults (ErrDenied); an agent commits in its own.
func testCommitDenied(e *env) {
	ctx := ctxT(e.t)
	mine, other := e.vault("mine"), e.vault("other")
	for _, c := range []struct {
		p     meta.Principal
		vault meta.VaultID
	}{
		{restorer(mine), mine},
		{agent(mine), other},
		{node(), mine},
	} {
		s := e.stored(c.vault, 3, 0)
		_, err := e.as(c.p).CommitSnapshot(ctx, s)
		wantErr(e.t, fmt.Sprintf("%s committing to %s", c.p, c.vault), err, meta.ErrDenied)
		e.absent(c.vault, s.ID)
	}
	s := e.stored(mine, 3, 0)
	if _, err := e.as(agent(mine)).CommitSnapshot(ctx, s); err != nil {
		e.t.Fatalf("agent committing to its vault: %v", err)
	}
	if list, err := e.as(agent(mine)).ListSnapshots(ctx, mine); err != nil || len(list) != 1 || list[0].ID != s.ID {
		e.t.Fatalf("agent listing its vault: %v %v", list, err)
	}
	_, err := e.as(agent(mine)).ListSnapshots(ctx, other)
	wantErr(e.t, "agent listing another vault", err, meta.ErrDenied)
	_, err = e.as(agent(mine)).GetSnapshot(ctx, other, s.ID)
	wantErr(e.t, "agent reading a snapshot of another vault", err, meta.ErrDenied)
}

// testCommitLockAndHold: a snapshot may arrive locked or held. An agent may lock within
// its limit (ErrDenied beyond it) and may not hold (ErrDenied); an admin may do both.
func testCommitLockAndHold(e *env) {
	ctx := ctxT(e.t)
	v := e.vault("a")
	soon := time.Now().Add(24 * time.Hour).UTC().Truncate(time.Second)
	locked := e.stored(v, 3, 0)
	locked.Lock = &meta.Lock{Mode: meta.Compliance, Until: soon}
	got, err := e.as(agent(v)).CommitSnapshot(ctx, locked)
	if err != nil || got.Lock == nil || got.Lock.Mode != meta.Compliance || !got.Lock.Until.Equal(soon) {
		e.t.Fatalf("agent committing a day's lock: %+v %v", got.Lock, err)
	}
	if read, err := e.admin().GetSnapshot(ctx, v, got.ID); err != nil || !sameSnapshot(read, got) {
		e.t.Fatalf("locked snapshot read back as %+v %v", read, err)
	}
	tooLong := e.stored(v, 3, 0)
	tooLong.Lock = &meta.Lock{Mode: meta.Compliance, Until: time.Now().Add(meta.DefaultMaxAgentLock + 48*time.Hour)}
	_, err = e.as(agent(v)).CommitSnapshot(ctx, tooLong)
	wantErr(e.t, "agent locking beyond its limit", err, meta.ErrDenied)
	e.absent(v, tooLong.ID)
	held := e.stored(v, 3, 0)
	held.LegalHold = true
	_, err = e.as(agent(v)).CommitSnapshot(ctx, held)
	wantErr(e.t, "agent committing a held snapshot", err, meta.ErrDenied)
	e.absent(v, held.ID)
	byAdmin := e.stored(v, 3, 0)
	byAdmin.LegalHold = true
	byAdmin.Lock = &meta.Lock{Mode: meta.Governance, Until: time.Now().Add(meta.DefaultMaxAgentLock + 48*time.Hour)}
	if got := e.commit(byAdmin); !got.LegalHold || got.Lock == nil {
		e.t.Fatalf("admin's held, long-locked commit: %+v", got)
	}
}

// testListSnapshots: a vault's snapshots come by commit time; an unknown vault is
// ErrNotFound, an empty one lists nothing.
func testListSnapshots(e *env) {
	ctx := ctxT(e.t)
	v, empty := e.vault("a"), e.vault("empty")
	var want []meta.Snapshot
	for range 4 {
		want = append(want, e.commit(e.stored(v, 2, 0)))
	}
	list, err := e.admin().ListSnapshots(ctx, v)
	if err != nil || len(list) != len(want) {
		e.t.Fatalf("ListSnapshots = %d snapshots %v, want %d", len(list), err, len(want))
	}
	for i := range list {
		if !sameSnapshot(list[i], want[i]) {
			e.t.Errorf("ListSnapshots[%d] = %s, want %s (commit order)", i, list[i].ID.Str(), want[i].ID.Str())
		}
		if i > 0 && list[i].Time.Before(list[i-1].Time) {
			e.t.Errorf("ListSnapshots not sorted by time at %d", i)
		}
	}
	if list, err := e.admin().ListSnapshots(ctx, empty); err != nil || len(list) != 0 {
		e.t.Errorf("ListSnapshots of an empty vault = %v %v", list, err)
	}
	_, err = e.admin().ListSnapshots(ctx, vaultID(e.t, "none"))
	wantErr(e.t, "ListSnapshots of an unknown vault", err, meta.ErrNotFound)
}

// testGetSnapshotNotFound: an unknown snapshot, or a known one asked of another vault,
// is ErrNotFound.
func testGetSnapshotNotFound(e *env) {
	ctx := ctxT(e.t)
	v, w := e.vault("a"), e.vault("b")
	s := e.commit(e.stored(v, 2, 0))
	_, err := e.admin().GetSnapshot(ctx, v, randID(e.t))
	wantErr(e.t, "GetSnapshot of an unknown ID", err, meta.ErrNotFound)
	_, err = e.admin().GetSnapshot(ctx, w, s.ID)
	wantErr(e.t, "GetSnapshot in the wrong vault", err, meta.ErrNotFound)
	_, err = e.admin().GetSnapshot(ctx, vaultID(e.t, "none"), s.ID)
	wantErr(e.t, "GetSnapshot in an unknown vault", err, meta.ErrNotFound)
}

// testClusterMap: SetClusterMap takes exactly the next epoch of a valid map from a
// principal allowed to set it, and ClusterMap returns it; anything else changes nothing.
// The fixture starts with a map.
func testClusterMap(e *env) {
	ctx := ctxT(e.t)
	cur, err := e.admin().ClusterMap(ctx)
	if err != nil {
		e.t.Fatalf("ClusterMap: %v (the fixture must start with a map)", err)
	}
	next := placement.Map{Epoch: cur.Epoch + 1, PGCount: 32, Profile: placement.Profile{K: 2, M: 1},
		Nodes: []placement.Node{{ID: "n1", Addr: "10.0.0.1:1", State: placement.StateActive, Weight: 1},
			{ID: "n2", Addr: "10.0.0.2:1", State: placement.StateActive, Weight: 1, Domain: "rack2"},
			{ID: "n3", Addr: "10.0.0.3:1", State: placement.StateDown, Weight: 1}}}
	for name, m := range map[string]placement.Map{
		"skipped epoch":  {Epoch: cur.Epoch + 2, PGCount: 32, Profile: next.Profile},
		"same epoch":     {Epoch: cur.Epoch, PGCount: 32, Profile: next.Profile},
		"PG count 3":     {Epoch: cur.Epoch + 1, PGCount: 3, Profile: next.Profile},
		"bad profile":    {Epoch: cur.Epoch + 1, PGCount: 32},
		"unsorted nodes": {Epoch: cur.Epoch + 1, PGCount: 32, Profile: next.Profile, Nodes: []placement.Node{next.Nodes[1], next.Nodes[0]}},
	} {
		wantErr(e.t, "SetClusterMap with "+name, e.admin().SetClusterMap(ctx, m), meta.ErrInvalid)
	}
	wantErr(e.t, "agent setting the map", e.as(agent()).SetClusterMap(ctx, next), meta.ErrDenied)
	if m, err := e.admin().ClusterMap(ctx); err != nil || m.Epoch != cur.Epoch {
		e.t.Fatalf("after refused changes: epoch %d %v, want %d", m.Epoch, err, cur.Epoch)
	}
	if err := e.admin().SetClusterMap(ctx, next); err != nil {
		e.t.Fatal(err)
	}
	// Admins and nodes see the topology; agents and restore operators only the entry
	// points (meta.MapFor): the epoch and the addresses of the nodes that are up.
	entry := placement.Map{Epoch: next.Epoch, Nodes: []placement.Node{{Addr: next.Nodes[0].Addr, State: placement.StateActive}, {Addr: next.Nodes[1].Addr, State: placement.StateActive}}}
	for _, c := range []struct {
		p    meta.Principal
		want placement.Map
	}{{admin(), next}, {node(), next}, {agent(), entry}, {restorer(), entry}} {
		m, err := e.as(c.p).ClusterMap(ctx)
		if err != nil || m.Epoch != c.want.Epoch || m.PGCount != c.want.PGCount || m.Profile != c.want.Profile || !slices.Equal(m.Nodes, c.want.Nodes) {
			e.t.Errorf("%s: ClusterMap = %+v %v, want %+v", c.p, m, err, c.want)
		}
	}
}

// testRaftStatus: the status names a leader, which is among its servers.
func testRaftStatus(e *env) {
	rs, err := e.admin().RaftStatus(ctxT(e.t))
	if err != nil {
		e.t.Fatal(err)
	}
	if rs.Leader == "" || !slices.ContainsFunc(rs.Servers, func(s meta.Server) bool { return s.ID == rs.Leader && s.Leader && s.Voter }) {
		e.t.Fatalf("RaftStatus %+v: want a leader among the voting servers", rs)
	}
}

// testConcurrentCommits: commits racing into one vault are all recorded, each once.
func testConcurrentCommits(e *env) {
	ctx := ctxT(e.t)
	v := e.vault("a")
	const n = 8
	snaps := make([]meta.Snapshot, n)
	for i := range snaps {
		snaps[i] = e.stored(v, 2, 0)
	}
	errs := make(chan error, n)
	var wg sync.WaitGroup
	for _, s := range snaps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := e.admin().CommitSnapshot(ctx, s)
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			e.t.Fatal(err)
		}
	}
	list, err := e.admin().ListSnapshots(ctx, v)
	if err != nil || len(list) != n {
		e.t.Fatalf("ListSnapshots after %d concurrent commits: %d %v", n, len(list), err)
	}
	for _, s := range snaps {
		if !slices.ContainsFunc(list, func(o meta.Snapshot) bool { return o.ID == s.ID }) {
			e.t.Errorf("snapshot %s missing", s.ID.Str())
		}
	}
}
