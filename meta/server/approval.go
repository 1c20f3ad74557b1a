package server

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/cofferhq/coffer/meta"
	"github.com/cofferhq/coffer/meta/command"
	"github.com/pquerna/otp"
	"github.com/pquerna/otp/totp"
	"golang.org/x/crypto/chacha20poly1305"
	"golang.org/x/crypto/hkdf"
)

var _ meta.ApprovalService = (*Server)(nil)

// TOTP parameters: RFC 6238 defaults, which every authenticator app supports.
const (
	totpPeriod = 30
	totpSkew   = 1 // one step either side of the leader's clock
)

// totpOpts are the TOTP parameters codes are checked with; immutable (passed by value).
var totpOpts = totp.ValidateOpts{Period: totpPeriod, Skew: totpSkew, Digits: otp.DigitsSix, Algorithm: otp.AlgorithmSHA1}

// approvedKey marks a context executing an approved request: the gate lets it through.
// Only DecideApproval sets it; nothing from the wire can.
type approvedKey struct{}

// Methods of stored requests (ApprovalRequest.Method) and their parameters.
const (
	apDeleteSnapshots   = "meta.DeleteSnapshots"
	apSetLock           = "meta.SetLock"
	apDeleteVault       = "meta.DeleteVault"
	apSetApprovalPolicy = "meta.SetApprovalPolicy"
	apChangeMeta        = "meta.ChangeMeta"
	apRevokeCert        = "meta.RevokeCert"
)

type (
	apDeleteSnapshotsArgs struct {
		Vault  meta.VaultID      `cbor:"vault"`
		IDs    []meta.SnapshotID `cbor:"ids"`
		Bypass meta.Bypass       `cbor:"bypass"`
	}
	apSetLockArgs struct {
		Vault  meta.VaultID    `cbor:"vault"`
		ID     meta.SnapshotID `cbor:"id"`
		Lock   meta.Lock       `cbor:"lock"`
		Bypass meta.Bypass     `cbor:"bypass"`
	}
	apDeleteVaultArgs struct {
		Vault  meta.VaultID `cbor:"vault"`
		Window int64        `cbor:"window"`
		Reason string       `cbor:"reason,omitempty"`
	}
	apChangeMetaArgs struct {
		Change meta.MetaChange `cbor:"change"`
	}
	apRevokeCertArgs struct {
		Revocation meta.Revocation `cbor:"revocation"`
	}
)

// gate stores the operation (method and its canonical parameters) for a second admin's
// approval when the cluster's approval policy names op and the caller is an admin, and
// answers with a *meta.ApprovalRequiredError; it returns nil when the operation may run
// now (not gated, not an admin's call, or the execution of an approved request). Called
// on the leader, after the operation's own validation.
func (s *Server) gate(ctx context.Context, op, method string, args any, vault meta.VaultID, summary string) error {
	if id, _ := ctx.Value(approvedKey{}).(string); id != "" {
		return nil
	}
	p := meta.PrincipalFrom(ctx)
	if p.Role != meta.RoleAdmin {
		return nil // the operation's own authorization decides (and refuses non-admins)
	}
	pol, err := s.approvalPolicy()
	if err != nil {
		return err
	}
	if !pol.Requires(op) {
		return nil
	}
	if armed, err := s.twoPersonArmed(); err != nil {
		return err
	} else if !armed {
		// Nobody could ever approve: the rule is armed from the second MFA enrollment
		// on (docs/security.md). Enrollments are never removed, so it stays armed.
		return nil
	}
	return s.queue(ctx, p, op, method, args, vault, summary)
}

// queue stores the operation for p as a pending request and answers with its
// *meta.ApprovalRequiredError. A requester with MFA enrolled must give a current TOTP
// code with the request (requesterTOTP): a stolen certificate alone queues nothing.
func (s *Server) queue(ctx context.Context, p meta.Principal, op, method string, args any, vault meta.VaultID, summary string) error {
	step, err := s.requesterTOTP(ctx, p, op, vault)
	if err != nil {
		return err
	}
	body, err := s.codec.Marshal(args)
	if err != nil {
		return fmt.Errorf("%w: server: encode %s for approval: %v", meta.ErrInvalid, method, err)
	}
	var raw [8]byte
	if _, err := io.ReadFull(rand.Reader, raw[:]); err != nil {
		return fmt.Errorf("server: approval request ID: %w", err)
	}
	ttl := s.cfg.ApprovalTTL
	if ttl <= 0 {
		ttl = meta.DefaultApprovalTTL
	}
	r := meta.ApprovalRequest{ID: "ap-" + hex.EncodeToString(raw[:]), Operation: op, Method: method, Body: body,
		Summary: summary, Vault: vault, Requester: p}
	res, err := s.propose(timeoutOf(ctx), command.RequestApproval{Request: r, TTL: int64(ttl), Step: step})
	if err != nil {
		return err
	}
	stored := res.(meta.ApprovalRequest)
	return &meta.ApprovalRequiredError{ID: stored.ID, Operation: op, Expires: stored.Expires}
}

// requesterTOTP checks the TOTP code the request carries (meta.TOTPFrom) against p's
// MFA enrollment, as an approver's code is checked (checkTOTP: wrong codes recorded in
// Raft, refused once too many), and returns its time step, which the RequestApproval
// entry consumes (no replay). A principal without MFA enrolled (a restore operator, an
// admin who never enrolled) has no code to give: step 0, not checked. A missing code is
// refused (and audited) without counting as a wrong one.
func (s *Server) requesterTOTP(ctx context.Context, p meta.Principal, op string, vault meta.VaultID) (uint64, error) {
	if _, ok, err := s.fsm.MFA(p.Name); err != nil || !ok {
		return 0, err
	}
	code := meta.TOTPFrom(ctx)
	if code == "" {
		err := fmt.Errorf("%w: server: %s needs a second admin's approval, and its request needs your current TOTP code: "+
			"%s has MFA enrolled (give --otp CODE)", meta.ErrDenied, op, p)
		s.auditRefusal(ctx, p, "approval request "+op, vault, p.Name, err)
		return 0, err
	}
	return s.checkTOTP(ctx, p, code)
}

// twoPersonArmed reports whether at least two admin principals have enrolled MFA: only
// then can a second admin approve anything, and only then does gate queue operations.
func (s *Server) twoPersonArmed() (bool, error) {
	n, err := s.fsm.MFAEnrolled()
	return n >= 2, err
}

// execute runs an approved request's stored operation in ctx (which carries the
// requester as principal and the approval mark).
func (s *Server) execute(ctx context.Context, r meta.ApprovalRequest) error {
	dec := func(v any) error {
		if err := s.codec.Unmarshal(r.Body, v); err != nil {
			return fmt.Errorf("%w: server: stored request %s: %v", meta.ErrInvalid, r.ID, err)
		}
		return nil
	}
	switch r.Method {
	case apDeleteSnapshots:
		var a apDeleteSnapshotsArgs
		if err := dec(&a); err != nil {
			return err
		}
		_, err := s.DeleteSnapshots(ctx, a.Vault, a.IDs, a.Bypass)
		return err
	case apSetLock:
		var a apSetLockArgs
		if err := dec(&a); err != nil {
			return err
		}
		_, err := s.SetLock(ctx, a.Vault, a.ID, a.Lock, a.Bypass)
		return err
	case apDeleteVault:
		var a apDeleteVaultArgs
		if err := dec(&a); err != nil {
			return err
		}
		_, err := s.DeleteVault(ctx, a.Vault, time.Duration(a.Window), a.Reason)
		return err
	case apSetApprovalPolicy:
		var a meta.ApprovalPolicy
		if err := dec(&a); err != nil {
			return err
		}
		_, err := s.SetApprovalPolicy(ctx, a)
		return err
	case apChangeMeta:
		var a apChangeMetaArgs
		if err := dec(&a); err != nil {
			return err
		}
		_, err := s.ChangeMeta(ctx, a.Change)
		return err
	case apRevokeCert:
		var a apRevokeCertArgs
		if err := dec(&a); err != nil {
			return err
		}
		_, err := s.RevokeCert(ctx, a.Revocation)
		return err
	}
	if ok, err := s.executeGated(ctx, r, dec); ok {
		return err
	}
	return fmt.Errorf("%w: server: stored request %s: unknown method %q", meta.ErrInvalid, r.ID, r.Method)
}

// requireAdmin refuses (and audits) a non-admin caller of the approval API.
func (s *Server) requireAdmin(ctx context.Context, action string) (meta.Principal, error) {
	p := meta.PrincipalFrom(ctx)
	if p.Role == meta.RoleAdmin {
		return p, nil
	}
	err := fmt.Errorf("%w: server: %s: %s may not (admins only)", meta.ErrDenied, action, p)
	s.auditRefusal(ctx, p, action, "", "", err)
	return p, err
}

// ListApprovals implements meta.ApprovalService.
func (s *Server) ListApprovals(ctx context.Context) ([]meta.ApprovalRequest, error) {
	if err := s.leaderRead(); err != nil {
		return nil, err
	}
	if _, err := s.requireAdmin(ctx, "approval list"); err != nil {
		return nil, err
	}
	rs, err := s.fsm.Approvals()
	if err != nil {
		return nil, err
	}
	now := s.fsm.Now()
	for i := range rs {
		rs[i].State = rs[i].StateAt(now)
	}
	return rs, nil
}

// DecideApproval implements meta.ApprovalService. The decision is one Raft entry (which
// checks requester ≠ decider, expiry and TOTP replay at the entry's cluster time); an
// approval then executes the stored request as its requester and records the outcome in
// a second entry. Only the entry that moved the request from pending to approved leads to
// an execution, so a request executes at most once; a leader lost between the two
// entries leaves it approved and not executed (listed as such, never run later).
func (s *Server) DecideApproval(ctx context.Context, id string, approve bool, code, reason string) (meta.ApprovalRequest, error) {
	if err := s.leaderWrite(); err != nil {
		return meta.ApprovalRequest{}, err
	}
	action := "approval deny"
	if approve {
		action = "approval approve"
	}
	p, err := s.requireAdmin(ctx, action)
	if err != nil {
		return meta.ApprovalRequest{}, err
	}
	if err := meta.ValidApprovalID(id); err != nil {
		return meta.ApprovalRequest{}, err
	}
	if len(reason) > 1024 {
		return meta.ApprovalRequest{}, fmt.Errorf("%w: reason over 1024 bytes", meta.ErrInvalid)
	}
	r, err := s.fsm.Approval(id)
	if err != nil {
		return meta.ApprovalRequest{}, err
	}
	cmd := command.DecideApproval{ID: id, Approve: approve, By: p, Reason: reason}
	// A decision the FSM will refuse anyway (self-approval, expired, already decided) goes
	// to the log without a code, so the refusal is audited in Raft.
	if meta.CheckDecision(p, r, approve, s.fsm.Now()) == nil {
		step, err := s.checkTOTP(ctx, p, code)
		if err != nil {
			return meta.ApprovalRequest{}, err
		}
		cmd.Step = step
	}
	res, err := s.propose(timeoutOf(ctx), cmd)
	if err != nil {
		return meta.ApprovalRequest{}, err
	}
	r = res.(meta.ApprovalRequest)
	if !approve || deferredMethod(r.Method) {
		return r, nil // a deferred request runs when its requester asks again
	}
	ectx := meta.WithPrincipal(context.WithValue(ctx, approvedKey{}, id), r.Requester)
	fin := command.FinishApproval{ID: id}
	if xerr := s.execute(ectx, r); xerr != nil {
		fin.Err = xerr.Error()
	}
	res, err = s.propose(timeoutOf(ctx), fin)
	if err != nil {
		return r, fmt.Errorf("server: approval %s: executed, recording the outcome failed: %w", id, err)
	}
	return res.(meta.ApprovalRequest), nil
}

// EnrollMFA implements meta.ApprovalService: secret (base32, as in an otpauth URL) is
// confirmed by code, sealed with the meta servers' MFA key and stored; the code's step
// counts as used. An enrolled principal cannot enroll again (a thief of an admin
// certificate could otherwise replace the second factor).
func (s *Server) EnrollMFA(ctx context.Context, secret, code string) error {
	if err := s.leaderWrite(); err != nil {
		return err
	}
	p, err := s.requireAdmin(ctx, "mfa enroll")
	if err != nil {
		return err
	}
	if _, ok, err := s.fsm.MFA(p.Name); err != nil {
		return err
	} else if ok {
		err := fmt.Errorf("%w: server: %s already has MFA enrolled", meta.ErrExists, p)
		s.auditRefusal(ctx, p, "mfa enroll", "", p.Name, err)
		return err
	}
	raw, err := base32.StdEncoding.WithPadding(base32.NoPadding).DecodeString(strings.ToUpper(strings.TrimRight(secret, "=")))
	if err != nil || len(raw) < 10 || len(raw) > 64 {
		return fmt.Errorf("%w: server: mfa enroll: secret is not base32 of 10 to 64 bytes", meta.ErrInvalid)
	}
	step, ok := matchTOTP(secret, code, s.cfg.Now())
	if !ok {
		return fmt.Errorf("%w: server: mfa enroll: the code does not match the secret at %s (check the device's clock)", meta.ErrDenied, s.cfg.Now().UTC().Format(time.RFC3339))
	}
	sealed, keyID, err := s.sealMFA(ctx, p.Name, []byte(secret))
	if err != nil {
		return err
	}
	_, err = s.propose(timeoutOf(ctx), command.SetMFA{Enrollment: meta.MFAEnrollment{Principal: p.Name, Sealed: sealed, SealKey: keyID, LastStep: step}, By: p})
	return err
}

// ApprovalPolicy implements meta.ApprovalService.
func (s *Server) ApprovalPolicy(ctx context.Context) (meta.ApprovalPolicy, error) {
	if err := s.leaderRead(); err != nil {
		return meta.ApprovalPolicy{}, err
	}
	if _, err := s.requireAdmin(ctx, "approval policy read"); err != nil {
		return meta.ApprovalPolicy{}, err
	}
	return s.approvalPolicy()
}

// approvalPolicy is the stored policy, or Config.Approvals, or the default.
func (s *Server) approvalPolicy() (meta.ApprovalPolicy, error) {
	p, ok, err := s.fsm.ApprovalPolicy()
	switch {
	case err != nil:
		return p, err
	case ok:
		return p, nil
	case s.cfg.Approvals != nil:
		return *s.cfg.Approvals, nil
	}
	return meta.DefaultApprovalPolicy(), nil
}

// SetApprovalPolicy implements meta.ApprovalService (always gated).
func (s *Server) SetApprovalPolicy(ctx context.Context, pol meta.ApprovalPolicy) (meta.ApprovalPolicy, error) {
	if err := s.leaderWrite(); err != nil {
		return meta.ApprovalPolicy{}, err
	}
	p, err := s.requireAdmin(ctx, "approval policy")
	if err != nil {
		return meta.ApprovalPolicy{}, err
	}
	if err := meta.ValidateApprovalPolicy(pol); err != nil {
		return meta.ApprovalPolicy{}, err
	}
	if err := s.gate(ctx, meta.OpApprovalPolicy, apSetApprovalPolicy, pol, "", "operations "+strings.Join(pol.Operations, ",")); err != nil {
		return meta.ApprovalPolicy{}, err
	}
	res, err := s.propose(timeoutOf(ctx), command.SetApprovalPolicy{Policy: pol, By: p})
	if err != nil {
		return meta.ApprovalPolicy{}, err
	}
	return res.(meta.ApprovalPolicy), nil
}

// checkTOTP verifies p's code against its enrolled secret at this leader's clock and
// returns the code's time step (the FSM refuses a step not after the last one used).
// Wrong codes are recorded in Raft (MFAFailure, audited): with meta.MFAFailureLimit of
// them within meta.MFAFailureWindow of cluster time every code is refused, on whichever
// server leads.
func (s *Server) checkTOTP(ctx context.Context, p meta.Principal, code string) (uint64, error) {
	e, ok, err := s.fsm.MFA(p.Name)
	if err != nil {
		return 0, err
	}
	if !ok {
		err := fmt.Errorf("%w: server: %s has no MFA enrolled; run `coffer admin mfa enroll` first", meta.ErrDenied, p)
		s.auditRefusal(ctx, p, "mfa code", "", p.Name, err)
		return 0, err
	}
	if wait := meta.MFABlocked(e, s.fsm.Now()); wait > 0 {
		err := fmt.Errorf("%w: server: too many wrong TOTP codes for %s; try again in %v", meta.ErrDenied, p, wait.Round(time.Second))
		s.auditRefusal(ctx, p, "mfa code", "", p.Name, err)
		return 0, err
	}
	secret, err := s.openMFA(ctx, e)
	if err != nil {
		return 0, err
	}
	step, ok := matchTOTP(string(secret), code, s.cfg.Now())
	if !ok {
		if _, err := s.propose(timeoutOf(ctx), command.MFAFailure{By: p}); err != nil && !errors.Is(err, meta.ErrDenied) {
			return 0, fmt.Errorf("server: record a wrong TOTP code: %w", err)
		}
		return 0, fmt.Errorf("%w: server: wrong TOTP code for %s", meta.ErrDenied, p)
	}
	return step, nil
}

// matchTOTP returns the time step (within the skew) at which code is secret's code.
func matchTOTP(secret, code string, now time.Time) (uint64, bool) {
	if len(code) != 6 {
		return 0, false
	}
	for d := -totpSkew; d <= totpSkew; d++ {
		t := now.Add(time.Duration(d*totpPeriod) * time.Second)
		want, err := totp.GenerateCodeCustom(secret, t, totpOpts)
		if err == nil && hmac.Equal([]byte(want), []byte(code)) {
			return uint64(t.Unix()) / totpPeriod, true
		}
	}
	return 0, false
}

// mfaKey derives the MFA sealing key from the cluster seal key (sealkey.go), which every
// meta server holds and no chunk node ever does; want is the ID of the seal key a stored
// secret names ("" when sealing). It returns the key and the seal key's ID.
func (s *Server) mfaKey(ctx context.Context, want string) ([]byte, string, error) {
	return s.derivedSealKey(ctx, want, "coffer mfa seal v2")
}

// derivedSealKey derives a sealing key for one purpose (label: the HKDF info) from the
// cluster seal key; want is as for mfaKey. It returns the key and the seal key's ID.
func (s *Server) derivedSealKey(ctx context.Context, want, label string) ([]byte, string, error) {
	sk, err := s.clusterSealKey(ctx, want)
	if err != nil {
		return nil, "", err
	}
	k := make([]byte, chacha20poly1305.KeySize)
	if _, err := io.ReadFull(hkdf.New(sha256.New, sk, nil, []byte(label)), k); err != nil {
		return nil, "", fmt.Errorf("server: derive %s key: %w", label, err)
	}
	return k, SealKeyID(sk), nil
}

// sealMFA seals a TOTP secret to the principal (XChaCha20-Poly1305, the name as
// associated data, so a sealed secret cannot be moved to another principal). It returns
// the sealed secret and the ID of the seal key.
func (s *Server) sealMFA(ctx context.Context, principal string, secret []byte) ([]byte, string, error) {
	k, id, err := s.mfaKey(ctx, "")
	if err != nil {
		return nil, "", err
	}
	aead, err := chacha20poly1305.NewX(k)
	if err != nil {
		return nil, "", err
	}
	nonce := make([]byte, aead.NonceSize(), aead.NonceSize()+len(secret)+aead.Overhead())
	if _, err := io.ReadFull(rand.Reader, nonce); err != nil {
		return nil, "", fmt.Errorf("server: seal MFA secret: %w", err)
	}
	return aead.Seal(nonce, nonce, secret, []byte(principal)), id, nil
}

func (s *Server) openMFA(ctx context.Context, e meta.MFAEnrollment) ([]byte, error) {
	k, _, err := s.mfaKey(ctx, e.SealKey)
	if err != nil {
		return nil, err
	}
	aead, err := chacha20poly1305.NewX(k)
	if err != nil {
		return nil, err
	}
	if len(e.Sealed) < aead.NonceSize()+aead.Overhead() {
		return nil, errors.New("server: sealed MFA secret too short")
	}
	out, err := aead.Open(nil, e.Sealed[:aead.NonceSize()], e.Sealed[aead.NonceSize():], []byte(e.Principal))
	if err != nil {
		return nil, fmt.Errorf("server: open MFA secret of %q: %w", e.Principal, err)
	}
	return out, nil
}

// bypassNeeded reports whether the governance bypass b changes the outcome of check for
// one of the snapshots: refused without it and allowed with it (as of the current state;
// the FSM decides again at apply time). Only then is the operation a governance bypass
// under the two-person rule; one that is allowed anyway, or refused anyway (compliance
// lock, legal hold, no permission), runs and is decided as before.
func (s *Server) bypassNeeded(ctx context.Context, vault meta.VaultID, ids []meta.SnapshotID,
	check func(meta.Principal, meta.Snapshot, time.Time, meta.Bypass) error, b meta.Bypass) bool {
	p, now := meta.PrincipalFrom(ctx), s.fsm.Now()
	for _, id := range ids {
		snap, err := s.fsm.GetSnapshot(vault, id)
		if err != nil {
			continue
		}
		if check(p, snap, now, meta.Bypass{}) != nil && check(p, snap, now, b) == nil {
			return true
		}
	}
	return false
}
