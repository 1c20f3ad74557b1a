package fsm

import (
	"fmt"
	"strings"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cofferhq/coffer/meta"
	"github.com/cofferhq/coffer/meta/command"
)

// Keys of enrollment tokens ("et/<hex sha256>") and revocations ("rv/<index>").
const (
	prefixEnrollToken = "et/"
	prefixRevocation  = "rv/"
)

func enrollTokenKey(hash string) string { return prefixEnrollToken + hash }

func revocationKey(index uint64) string { return fmt.Sprintf("%s%016x", prefixRevocation, index) }

func knownEnrollKey(k string) bool {
	switch {
	case strings.HasPrefix(k, prefixEnrollToken):
		return len(k) == len(prefixEnrollToken)+64
	case strings.HasPrefix(k, prefixRevocation):
		return len(k) == len(prefixRevocation)+16
	}
	return false
}

// anonymousEnrollee names the unauthenticated caller of an enrollment in the audit log.
const anonymousEnrollee = meta.Role("anonymous")

// applyEnroll applies the enrollment and revocation commands. Like applyRetention it
// writes the outcome, success or refusal, to the audit log under the entry's index.
// Tokens are never written anywhere: only their hashes, and IDs derived from them.
func (f *FSM) applyEnroll(b *pebble.Batch, index uint64, body command.Body, now time.Time) (any, error) {
	var (
		entry meta.AuditEntry
		v     any
		err   error
	)
	switch c := body.(type) {
	case command.CreateEnrollToken:
		entry = meta.AuditEntry{Principal: c.By.Name, Role: c.By.Role, Action: "enroll-token create", Vault: c.Vault,
			Target: "token " + meta.EnrollTokenID(c.Hash)}
		if c.Name != "" {
			entry.Reason = "for agent " + c.Name
		}
		v, err = f.createEnrollToken(b, c, now)
	case command.ConsumeEnrollToken:
		who := c.Name
		if who == "" {
			who = "(unnamed)"
		}
		entry = meta.AuditEntry{Principal: who, Role: anonymousEnrollee, Action: "agent enroll",
			Target: "token " + meta.EnrollTokenID(c.Hash)}
		var t meta.EnrollToken
		t, err = f.consumeEnrollToken(b, index, c, now)
		if err == nil {
			entry.Principal, entry.Vault = t.Principal, t.Vault
			entry.Reason = fmt.Sprintf("backup-agent certificate serial %s", t.Serial)
		} else if t.Vault != "" {
			entry.Vault = t.Vault
		}
		if c.From != "" {
			entry.Target += " from " + c.From
		}
		v = t
	case command.RevokeEnrollToken:
		entry = meta.AuditEntry{Principal: c.By.Name, Role: c.By.Role, Action: "enroll-token revoke",
			Target: "token " + c.ID, Reason: c.Reason}
		var t meta.EnrollToken
		t, err = f.revokeEnrollToken(b, c, now)
		if t.ID != "" {
			entry.Vault, entry.Target = t.Vault, "token "+t.ID
		}
		v = t
	case command.RevokeCert:
		r := c.Revocation
		target := "serial " + r.Serial
		if r.Serial == "" {
			target = "principal " + r.Principal
		}
		entry = meta.AuditEntry{Principal: c.By.Name, Role: c.By.Role, Action: "cert revoke", Target: target, Reason: r.Reason}
		// A revoked host loses its vault key wraps, and a key rotation becomes due
		// (keys.go); computed before anything is written, so a failure writes nothing.
		var unwrap []meta.Vault
		if unwrap, err = f.hostWrapRemovals(b, r); err == nil {
			v, err = f.revokeCert(b, index, c, now)
		}
		if err == nil {
			var note string
			if note, err = f.removeHostWraps(b, unwrap); note != "" {
				entry.Target += "; " + note
			}
		}
	default:
		return nil, fmt.Errorf("%w: unhandled enrollment command %T", meta.ErrInvalid, body)
	}
	if aerr := f.writeAudit(b, index, now, entry, err, ""); aerr != nil && err == nil {
		return nil, aerr
	}
	return v, err
}

func (f *FSM) createEnrollToken(b *pebble.Batch, c command.CreateEnrollToken, now time.Time) (meta.EnrollToken, error) {
	if err := c.By.Authorize(meta.ActEnroll, ""); err != nil {
		return meta.EnrollToken{}, err
	}
	if len(c.Hash) != 64 || strings.Trim(c.Hash, "0123456789abcdef") != "" {
		return meta.EnrollToken{}, fmt.Errorf("%w: token hash %q is not 64 lower-case hex digits", meta.ErrInvalid, c.Hash)
	}
	if err := meta.ValidateVaultID(c.Vault); err != nil {
		return meta.EnrollToken{}, err
	}
	if c.Name == "" {
		return meta.EnrollToken{}, fmt.Errorf("%w: an enrollment token must name its agent (--name NAME): the token fixes the agent's name, the enrollee cannot choose one", meta.ErrInvalid)
	}
	if err := meta.ValidateAgentName(c.Name); err != nil {
		return meta.EnrollToken{}, err
	}
	if c.TTL <= 0 || c.TTL > int64(meta.MaxEnrollTTL) {
		return meta.EnrollToken{}, fmt.Errorf("%w: token lifetime %v not in (0, %v]", meta.ErrInvalid, time.Duration(c.TTL), meta.MaxEnrollTTL)
	}
	key := enrollTokenKey(c.Hash)
	if _, ok, err := getCopy(b, key); err != nil {
		return meta.EnrollToken{}, err
	} else if ok {
		return meta.EnrollToken{}, fmt.Errorf("enrollment token %s: %w", meta.EnrollTokenID(c.Hash), meta.ErrExists)
	}
	if err := meta.ValidateLabels(c.Labels); err != nil {
		return meta.EnrollToken{}, err
	}
	if err := f.checkAgentNameFree(b, c.Name, c.Hash, now); err != nil {
		return meta.EnrollToken{}, err
	}
	t := meta.EnrollToken{ID: meta.EnrollTokenID(c.Hash), Hash: c.Hash, Vault: c.Vault, Name: c.Name,
		Created: now, Expires: now.Add(time.Duration(c.TTL)), By: c.By.Name, Labels: c.Labels}
	return t, f.put(b, key, t)
}

// consumeEnrollToken marks the token used. On refusal it still returns the token when it
// exists (for the audit record's vault), with nothing written.
func (f *FSM) consumeEnrollToken(b *pebble.Batch, index uint64, c command.ConsumeEnrollToken, now time.Time) (meta.EnrollToken, error) {
	var t meta.EnrollToken
	key := enrollTokenKey(c.Hash)
	raw, ok, err := getCopy(b, key)
	if err != nil {
		return t, err
	}
	if !ok {
		return t, fmt.Errorf("%w: unknown enrollment token (check that it was copied whole)", meta.ErrDenied)
	}
	if err := f.codec.Unmarshal(raw, &t); err != nil {
		return meta.EnrollToken{}, fmt.Errorf("fsm: decode enrollment token %s: %w", meta.EnrollTokenID(c.Hash), err)
	}
	if c.Serial == "" {
		return t, fmt.Errorf("%w: enrollment without a certificate serial", meta.ErrInvalid)
	}
	if t.Used && c.Key != "" && c.Key == t.UsedKey && (c.Name == "" || c.Name == t.Principal) &&
		!t.Revoked && now.Sub(t.UsedAt) <= meta.EnrollRetryWindow {
		return t, nil // the same enrollment again: its serial, nothing written
	}
	name, err := meta.ConsumeEnrollToken(t, c.Name, now)
	if err != nil {
		return t, err
	}
	// Tokens made before names were unique may share one: the first to enroll takes it.
	if err := f.checkAgentNameFree(b, name, c.Hash, now); err != nil {
		return t, err
	}
	t.Used, t.UsedAt, t.Principal, t.Serial, t.UsedKey = true, now, name, c.Serial, c.Key
	if len(t.Labels) > 0 {
		f.setPolicyVersion(b, index) // the host's labels may select policies
	}
	return t, f.put(b, key, t)
}

// revokeEnrollToken withdraws the live token whose ID starts with c.ID. On refusal it
// still returns the token when one was found (for the audit record), with nothing
// written.
func (f *FSM) revokeEnrollToken(b *pebble.Batch, c command.RevokeEnrollToken, now time.Time) (meta.EnrollToken, error) {
	var t meta.EnrollToken
	if err := c.By.Authorize(meta.ActEnroll, ""); err != nil {
		return t, err
	}
	if err := meta.ValidateEnrollTokenID(c.ID); err != nil {
		return t, err
	}
	prefix := prefixEnrollToken + c.ID
	it, err := b.NewIter(&pebble.IterOptions{LowerBound: []byte(prefix), UpperBound: prefixEnd(prefix)})
	if err != nil {
		return t, fmt.Errorf("fsm: enrollment tokens: %w", err)
	}
	var key string
	var raw []byte
	n := 0
	for it.First(); it.Valid() && n < 2; it.Next() {
		n++
		key = string(it.Key())
		if raw, err = it.ValueAndErr(); err != nil {
			break
		}
		raw = append([]byte(nil), raw...)
	}
	if cerr := it.Close(); err == nil {
		err = cerr
	}
	switch {
	case err != nil:
		return t, fmt.Errorf("fsm: enrollment token %s: %w", c.ID, err)
	case n == 0:
		return t, fmt.Errorf("%w: no enrollment token with ID %s (coffer admin enroll-token list --all shows them)", meta.ErrNotFound, c.ID)
	case n > 1:
		return t, fmt.Errorf("%w: more than one enrollment token has an ID starting with %s; give more digits", meta.ErrInvalid, c.ID)
	}
	if err := f.codec.Unmarshal(raw, &t); err != nil {
		return meta.EnrollToken{}, fmt.Errorf("fsm: decode enrollment token %s: %w", c.ID, err)
	}
	if err := meta.RevokeEnrollToken(t, now); err != nil {
		return t, err
	}
	t.Revoked, t.RevokedAt, t.RevokedBy, t.RevokeReason = true, now, c.By.Name, c.Reason
	return t, f.put(b, key, t)
}

// checkAgentNameFree applies meta.CheckAgentNameFree to the state in b.
func (f *FSM) checkAgentNameFree(b *pebble.Batch, name, hash string, now time.Time) error {
	tokens, err := decodeAll[meta.EnrollToken](f, b, prefixEnrollToken)
	if err != nil {
		return err
	}
	revs, err := decodeAll[meta.Revocation](f, b, prefixRevocation)
	if err != nil {
		return err
	}
	var nodes []string
	if m, ok, err := f.readMap(b); err != nil {
		return err
	} else if ok {
		for _, n := range m.Nodes {
			nodes = append(nodes, string(n.ID))
		}
	}
	return meta.CheckAgentNameFree(name, hash, now, tokens, revs, nodes)
}

// EnrollTokens returns every enrollment token record, ordered by hash.
func (f *FSM) EnrollTokens() ([]meta.EnrollToken, error) {
	return scanAll[meta.EnrollToken](f, prefixEnrollToken)
}

func (f *FSM) revokeCert(b *pebble.Batch, index uint64, c command.RevokeCert, now time.Time) (meta.Revocation, error) {
	if err := c.By.Authorize(meta.ActRevoke, ""); err != nil {
		return meta.Revocation{}, err
	}
	r := c.Revocation
	if err := meta.ValidateRevocation(r); err != nil {
		return meta.Revocation{}, err
	}
	r.Seq, r.At, r.By = index, now, c.By.Name
	return r, f.put(b, revocationKey(index), r)
}

// Revocations returns every revocation, oldest first, and the Seq of the newest (0 when
// there is none).
func (f *FSM) Revocations() ([]meta.Revocation, uint64, error) {
	out, err := scanAll[meta.Revocation](f, prefixRevocation)
	if err != nil {
		return nil, 0, err
	}
	var version uint64
	if len(out) > 0 {
		version = out[len(out)-1].Seq
	}
	return out, version, nil
}

// EnrollToken returns the record of the token with the given hash, or an error wrapping
// meta.ErrNotFound.
func (f *FSM) EnrollToken(hash string) (meta.EnrollToken, error) {
	var t meta.EnrollToken
	ok, err := f.getValue(enrollTokenKey(hash), &t)
	if err == nil && !ok {
		err = fmt.Errorf("fsm: enrollment token %s: %w", meta.EnrollTokenID(hash), meta.ErrNotFound)
	}
	return t, err
}
