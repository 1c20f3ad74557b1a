package fsm

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cofferhq/coffer/meta"
	"github.com/cofferhq/coffer/meta/command"
)

// Keys of issued-certificate records ("ic/<serial>", the serial in SerialString form).
// Node join tokens live with the enrollment tokens ("et/<hash>").
const prefixIssuedCert = "ic/"

func issuedCertKey(serial string) string { return prefixIssuedCert + serial }

func knownCertKey(k string) bool {
	if !strings.HasPrefix(k, prefixIssuedCert) {
		return false
	}
	s := k[len(prefixIssuedCert):]
	return len(s) > 0 && len(s) <= 40 && strings.Trim(s, "0123456789abcdef") == ""
}

// applyPKI applies node join tokens and issued-certificate records, auditing each
// outcome like applyEnroll. Tokens are never written anywhere, only their hashes.
func (f *FSM) applyPKI(b *pebble.Batch, index uint64, body command.Body, now time.Time) (any, error) {
	var (
		entry meta.AuditEntry
		v     any
		err   error
	)
	switch c := body.(type) {
	case command.CreateNodeToken:
		entry = meta.AuditEntry{Principal: c.By.Name, Role: c.By.Role, Action: "node-token create",
			Target: "token " + meta.EnrollTokenID(c.Hash), Reason: fmt.Sprintf("for %s node %s (domain %q)", c.Role, c.ID, c.Domain)}
		v, err = f.createNodeToken(b, c, now)
	case command.ConsumeNodeToken:
		entry = meta.AuditEntry{Principal: c.ID, Role: anonymousEnrollee, Action: "node join",
			Target: "token " + meta.EnrollTokenID(c.Hash)}
		var t meta.EnrollToken
		t, err = f.consumeNodeToken(b, c, now)
		if err == nil {
			entry.Reason = fmt.Sprintf("%s node certificate serial %s", t.Role, t.Serial)
		}
		if c.From != "" {
			entry.Target += " from " + c.From
		}
		v = t
	case command.RecordCert:
		entry = meta.AuditEntry{Principal: c.Cert.By, Action: "cert " + c.Cert.How,
			Target: fmt.Sprintf("%s %q serial %s", c.Cert.Role, c.Cert.Principal, c.Cert.Serial),
			Reason: fmt.Sprintf("valid %s to %s, signed by %s", c.Cert.NotBefore.Format(time.RFC3339), c.Cert.NotAfter.Format(time.RFC3339), c.Cert.Issuer)}
		v, err = f.recordCert(b, c, now)
	default:
		return nil, fmt.Errorf("%w: unhandled certificate command %T", meta.ErrInvalid, body)
	}
	if aerr := f.writeAudit(b, index, now, entry, err, ""); aerr != nil && err == nil {
		return nil, aerr
	}
	return v, err
}

func (f *FSM) createNodeToken(b *pebble.Batch, c command.CreateNodeToken, now time.Time) (meta.EnrollToken, error) {
	if err := c.By.Authorize(meta.ActEnroll, ""); err != nil {
		return meta.EnrollToken{}, err
	}
	if len(c.Hash) != 64 || strings.Trim(c.Hash, "0123456789abcdef") != "" {
		return meta.EnrollToken{}, fmt.Errorf("%w: token hash %q is not 64 lower-case hex digits", meta.ErrInvalid, c.Hash)
	}
	if err := meta.ValidateNodeToken(c.Role, c.ID, c.Domain); err != nil {
		return meta.EnrollToken{}, err
	}
	if c.TTL <= 0 || c.TTL > int64(meta.MaxEnrollTTL) {
		return meta.EnrollToken{}, fmt.Errorf("%w: token lifetime %v not in (0, %v]", meta.ErrInvalid, time.Duration(c.TTL), meta.MaxEnrollTTL)
	}
	if slices.Contains(c.Taken, c.ID) {
		return meta.EnrollToken{}, fmt.Errorf("%w: node ID %q is a meta server of the Raft configuration; choose another", meta.ErrExists, c.ID)
	}
	key := enrollTokenKey(c.Hash)
	if _, ok, err := getCopy(b, key); err != nil {
		return meta.EnrollToken{}, err
	} else if ok {
		return meta.EnrollToken{}, fmt.Errorf("node join token %s: %w", meta.EnrollTokenID(c.Hash), meta.ErrExists)
	}
	if err := f.checkAgentNameFree(b, c.ID, c.Hash, now); err != nil {
		return meta.EnrollToken{}, err
	}
	t := meta.EnrollToken{ID: meta.EnrollTokenID(c.Hash), Hash: c.Hash, Name: c.ID, Kind: meta.TokenKindNode, Role: c.Role,
		Domain: c.Domain, Created: now, Expires: now.Add(time.Duration(c.TTL)), By: c.By.Name}
	return t, f.put(b, key, t)
}

// consumeNodeToken marks a node join token used. On refusal it still returns the token
// when it exists, with nothing written.
func (f *FSM) consumeNodeToken(b *pebble.Batch, c command.ConsumeNodeToken, now time.Time) (meta.EnrollToken, error) {
	var t meta.EnrollToken
	key := enrollTokenKey(c.Hash)
	raw, ok, err := getCopy(b, key)
	if err != nil {
		return t, err
	}
	if !ok {
		return t, fmt.Errorf("%w: unknown node join token (check that it was copied whole)", meta.ErrDenied)
	}
	if err := f.codec.Unmarshal(raw, &t); err != nil {
		return meta.EnrollToken{}, fmt.Errorf("fsm: decode token %s: %w", meta.EnrollTokenID(c.Hash), err)
	}
	if c.Serial == "" {
		return t, fmt.Errorf("%w: node join without a certificate serial", meta.ErrInvalid)
	}
	if err := meta.ConsumeNodeToken(t, c.ID, c.Role, now); err != nil {
		return t, err
	}
	// The ID may have been taken (by a node of the map) since the token was made.
	if err := f.checkAgentNameFree(b, t.Name, c.Hash, now); err != nil {
		return t, err
	}
	t.Used, t.UsedAt, t.Principal, t.Serial = true, now, t.Name, c.Serial
	return t, f.put(b, key, t)
}

func (f *FSM) recordCert(b *pebble.Batch, c command.RecordCert, now time.Time) (meta.IssuedCert, error) {
	r := c.Cert
	if err := meta.ValidateIssuedCert(r); err != nil {
		return meta.IssuedCert{}, err
	}
	if !knownCertKey(issuedCertKey(r.Serial)) {
		return meta.IssuedCert{}, fmt.Errorf("%w: issued certificate serial %q is not lower-case hex", meta.ErrInvalid, r.Serial)
	}
	key := issuedCertKey(r.Serial)
	if _, ok, err := getCopy(b, key); err != nil {
		return meta.IssuedCert{}, err
	} else if ok {
		return meta.IssuedCert{}, fmt.Errorf("issued certificate %s: %w", r.Serial, meta.ErrExists)
	}
	r.At = now
	return r, f.put(b, key, r)
}

// IssuedCerts returns every issued-certificate record, ordered by serial.
func (f *FSM) IssuedCerts() ([]meta.IssuedCert, error) {
	return scanAll[meta.IssuedCert](f, prefixIssuedCert)
}

// IssuedCert returns the record of the certificate with the given serial, or an error
// wrapping meta.ErrNotFound.
func (f *FSM) IssuedCert(serial string) (meta.IssuedCert, error) {
	var c meta.IssuedCert
	ok, err := f.getValue(issuedCertKey(serial), &c)
	if err == nil && !ok {
		err = fmt.Errorf("fsm: issued certificate %s: %w", serial, meta.ErrNotFound)
	}
	return c, err
}
