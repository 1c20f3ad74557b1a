package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"

	"github.com/cofferhq/coffer/client"
	"github.com/cofferhq/coffer/client/crypt"
	"github.com/cofferhq/coffer/client/kms"
	"github.com/cofferhq/coffer/meta"
)

// kmsResolver is the agent's KMS plugin resolver: the client configuration's kms_plugins,
// else coffer-kms-NAME in PATH; the built-in Transit client reads VAULT_ADDR and
// VAULT_TOKEN.
func (s *session) kmsResolver(a *app) *kms.Resolver {
	return &kms.Resolver{Plugins: s.cfg.KMSPlugins, Transit: kms.TransitConfig{
		Address: a.getenv("VAULT_ADDR"), Token: a.getenv("VAULT_TOKEN"), Mount: s.cfg.KMSTransitMount,
	}}
}

// isKMSRefusal reports whether err is a KMS's refusal or failure (which names the key).
func isKMSRefusal(err error) bool {
	var ke *kms.Error
	return errors.As(err, &ke) || errors.Is(err, kms.ErrKeyDisabled) || errors.Is(err, kms.ErrKeyNotFound) ||
		errors.Is(err, kms.ErrDenied) || errors.Is(err, kms.ErrUnavailable) || errors.Is(err, kms.ErrInvalid)
}

// kmsKeysErr is keysErr that also reports KMS refusals plainly.
func kmsKeysErr(err error, format string, args ...any) error {
	if isKMSRefusal(err) {
		return plainf(err, "%s: %s", fmt.Sprintf(format, args...), errorMessage(err))
	}
	return keysErr(err, format, args...)
}

func vaultKeysAddKMSSpec() *cmdSpec {
	return &cmdSpec{
		name:  "vault keys add-kms",
		short: "wrap the vault key under an external KMS key",
		long: `Adds a kms wrap to the vault named by --vault: a new key pair is made on this
host, its private key is encrypted by the KMS key --key (its current version)
through the KMS plugin --plugin, and the vault's keyring is sealed to its
public half. The KMS is asked to decrypt it back once before the wrap is
stored. Afterwards any host with the plugin (and the KMS's permission) opens
the vault through the KMS, without a passphrase.

--plugin vault-transit is the built-in HashiCorp Vault Transit client
(VAULT_ADDR and VAULT_TOKEN from the environment, the mount from
kms_transit_mount, default transit). Any other NAME is an executable speaking
the KMS plugin protocol (docs/security.md): kms_plugins in the client
configuration, else coffer-kms-NAME in PATH.

Admins and the vault's backup agents; audited with --reason. --json prints the
key record as "coffer vault keys --json" does.`,
		examples: []string{
			"coffer --vault web vault keys add-kms --plugin vault-transit --key coffer-web",
			"coffer --vault web vault keys add-kms --plugin awskms --key arn:aws:kms:eu-west-1:111122223333:key/1234abcd",
		},
		new: func() command { return &vaultKeysAddKMSCmd{} },
	}
}

type vaultKeysAddKMSCmd struct{ plugin, key, reason string }

func (c *vaultKeysAddKMSCmd) addFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.plugin, "plugin", "", "the KMS plugin `NAME` (vault-transit: the built-in Vault Transit client)")
	fs.StringVar(&c.key, "key", "", "the KMS key `ID` (a Transit key name, an ARN, a resource name)")
	fs.StringVar(&c.reason, "reason", "", "why (`TEXT`, audited)")
}

func (c *vaultKeysAddKMSCmd) run(ctx context.Context, a *app, args []string) error {
	if len(args) > 0 || c.plugin == "" || c.key == "" {
		return usagef(vaultKeysAddKMSSpec(), "vault keys add-kms takes --plugin NAME and --key ID and no arguments")
	}
	s, ag, err := openAgent(ctx, a)
	if err != nil {
		return err
	}
	defer s.Close()
	defer ag.Close()
	kc, err := s.kmsResolver(a).Client(c.plugin)
	if err != nil {
		return kmsKeysErr(err, "add-kms of vault %q", s.vault)
	}
	v, err := ag.AddKMSWrap(ctx, kc, c.plugin, c.key, c.reason)
	if err != nil {
		return kmsKeysErr(err, "add-kms of vault %q", s.vault)
	}
	return printKeys(a, v)
}

func vaultKeysRotateKMSSpec() *cmdSpec {
	return &cmdSpec{
		name:  "vault keys rotate-kms",
		args:  "WRAP-ID",
		short: "re-wrap a kms wrap under a new version of its KMS key",
		long: `Rotates the KMS key of kms wrap WRAP-ID (from "coffer vault keys") to a new
version and re-wraps the vault key under it: a new key pair, encrypted by the
new version, and the keyring sealed to it. The wrap keeps its ID. With
--rewrap-only no version is made: the wrap moves to the version the KMS
encrypts under now (a KMS that rotates its keys by itself).

Every key epoch stays in the keyring, so every earlier recovery point stays
readable; afterwards the vault no longer needs the old key version, which the
KMS may disable. Opens the vault first. Admin certificate only; audited with
both versions and --reason. --json prints the key record as "coffer vault
keys --json" does.`,
		examples: []string{"coffer --vault web vault keys rotate-kms 3f9a0c1d2b4e5f60 --reason yearly"},
		new:      func() command { return &vaultKeysRotateKMSCmd{} },
	}
}

type vaultKeysRotateKMSCmd struct {
	rewrapOnly bool
	reason     string
}

func (c *vaultKeysRotateKMSCmd) addFlags(fs *flag.FlagSet) {
	fs.BoolVar(&c.rewrapOnly, "rewrap-only", false, "make no new key version: re-wrap under the KMS's current one")
	fs.StringVar(&c.reason, "reason", "", "why (`TEXT`, audited)")
}

func (c *vaultKeysRotateKMSCmd) run(ctx context.Context, a *app, args []string) error {
	if len(args) != 1 {
		return usagef(vaultKeysRotateKMSSpec(), "vault keys rotate-kms takes one WRAP-ID")
	}
	s, ag, err := openAgent(ctx, a)
	if err != nil {
		return err
	}
	defer s.Close()
	defer ag.Close()
	v, err := s.meta.GetVault(ctx, s.vault)
	if err != nil {
		return keysErr(err, "rotate-kms of vault %q", s.vault)
	}
	var w meta.KeyWrap
	if v.Keys != nil {
		w, _ = v.Keys.Wrap(args[0])
	}
	if w.Kind != meta.WrapKMS {
		return plainf(meta.ErrNotFound, "rotate-kms of vault %q: no kms wrap %s (see coffer vault keys)", s.vault, args[0])
	}
	kc, err := s.kmsResolver(a).Client(w.Params[meta.ParamPlugin])
	if err != nil {
		return kmsKeysErr(err, "rotate-kms of vault %q", s.vault)
	}
	v, err = ag.RotateKMS(ctx, kc, args[0], !c.rewrapOnly, c.reason)
	if err != nil {
		return kmsKeysErr(err, "rotate-kms of vault %q", s.vault)
	}
	return printKeys(a, v)
}

func vaultKeysExportSpec() *cmdSpec {
	return &cmdSpec{
		name:  "vault keys export",
		short: "write an escrow bundle of the vault's key wraps, sealed to an age recipient",
		long: `Writes an escrow bundle of the vault named by --vault to --out: its keyring and
every key wrap, encrypted with age to --to (an age X25519 recipient whose
identity the organisation keeps offline). The vault also gets an escrow wrap
for that recipient (holder --label), so key epochs started later are sealed
to it too. With the bundle and the identity, "coffer vault keys import" puts
the vault's passphrase and KMS wraps back after they are lost (a lost KMS, a
removed wrap).

Opens the vault first. Admins and the vault's backup agents; audited with
--reason. --json prints the key record as "coffer vault keys --json" does.`,
		examples: []string{"coffer --vault web vault keys export --to age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p --out web.escrow"},
		new:      func() command { return &vaultKeysExportCmd{} },
	}
}

type vaultKeysExportCmd struct{ to, out, label, reason string }

func (c *vaultKeysExportCmd) addFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.to, "to", "", "the escrow recipient `AGE1...`")
	fs.StringVar(&c.out, "out", "", "write the bundle to `FILE` (- for stdout)")
	fs.StringVar(&c.label, "label", "", "the escrow wrap's holder `NAME` (default escrow)")
	fs.StringVar(&c.reason, "reason", "", "why (`TEXT`, audited)")
}

func (c *vaultKeysExportCmd) run(ctx context.Context, a *app, args []string) error {
	if len(args) > 0 || c.to == "" || c.out == "" {
		return usagef(vaultKeysExportSpec(), "vault keys export takes --to AGE1... and --out FILE and no arguments")
	}
	if err := crypt.ValidateRecipient(c.to); err != nil {
		return usagef(vaultKeysExportSpec(), "--to: %v", err)
	}
	if c.out == "-" && a.g.json {
		return usagef(vaultKeysExportSpec(), "--out - and --json both write to stdout")
	}
	s, ag, err := openAgent(ctx, a)
	if err != nil {
		return err
	}
	defer s.Close()
	defer ag.Close()
	bundle, v, err := ag.ExportEscrow(ctx, c.to, c.label, c.reason)
	if err != nil {
		return keysErr(err, "escrow export of vault %q", s.vault)
	}
	if c.out == "-" {
		_, err := a.stdout.Write(bundle)
		return err
	}
	if err := os.WriteFile(c.out, bundle, 0o600); err != nil {
		return fmt.Errorf("escrow export of vault %q: write %s: %w", s.vault, c.out, err)
	}
	if !a.g.json {
		fmt.Fprintf(a.stdout, "escrow bundle of vault %s written to %s (sealed to %s)\n", s.vault, c.out, c.to)
	}
	return printKeys(a, v)
}

func vaultKeysImportSpec() *cmdSpec {
	return &cmdSpec{
		name:  "vault keys import",
		args:  "FILE",
		short: "put back the key wraps of an escrow bundle",
		long: `Opens the escrow bundle FILE (from "coffer vault keys export"; - reads stdin)
with the escrow identity --identity (an age identity file) and puts back the
passphrase, kms and escrow wraps it holds that the vault named by --vault no
longer has, with their IDs: the passphrase of the export, and the KMS key
version of the export while the KMS has it, open the vault again. Host wraps
are not put back (a host adds its own again; a revoked host must not get its
wrap back).

The vault's keyring comes from its escrow wrap for the identity (so key epochs
started after the export are kept), else from the bundle, which must then
hold the vault's current key epoch. No passphrase is needed. Admins and the
vault's backup agents; audited with --reason. --json prints "added",
"skipped" and the key record as "keys".`,
		examples: []string{"coffer --vault web vault keys import web.escrow --identity /secure/escrow-key.txt --reason \"KMS lost\""},
		new:      func() command { return &vaultKeysImportCmd{} },
	}
}

type vaultKeysImportCmd struct{ identity, reason string }

func (c *vaultKeysImportCmd) addFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.identity, "identity", "", "the escrow recipient's age identity `FILE`")
	fs.StringVar(&c.reason, "reason", "", "why (`TEXT`, audited)")
}

// escrowImportJSON is `coffer vault keys import --json`.
type escrowImportJSON struct {
	Added   []string      `json:"added"`
	Skipped []string      `json:"skipped"`
	Keys    vaultKeysJSON `json:"keys"`
}

func (c *vaultKeysImportCmd) run(ctx context.Context, a *app, args []string) error {
	if len(args) != 1 || c.identity == "" {
		return usagef(vaultKeysImportSpec(), "vault keys import takes one FILE and --identity FILE")
	}
	var bundle []byte
	var err error
	if args[0] == "-" {
		bundle, err = readAllLimited(a.stdin, client.MaxEscrowBundle)
	} else {
		bundle, err = readFileLimited(args[0], client.MaxEscrowBundle)
	}
	if err != nil {
		return fmt.Errorf("escrow import: read %s: %w", args[0], err)
	}
	b, err := os.ReadFile(c.identity)
	if err != nil {
		return fmt.Errorf("escrow import: identity: %w", err)
	}
	id, err := crypt.ParseIdentity(b)
	clear(b)
	if err != nil {
		return plainf(err, "escrow import: identity %s: %s", c.identity, errorMessage(err))
	}
	s, err := connect(ctx, a)
	if err != nil {
		return err
	}
	defer s.Close()
	res, err := client.ImportEscrow(ctx, s.agent, s.vault, bundle, id, c.reason)
	if err != nil {
		if errors.Is(err, crypt.ErrWrongKey) || errors.Is(err, crypt.ErrInvalid) {
			return plainf(err, "escrow import into vault %q: %s", s.vault, errorMessage(err))
		}
		return keysErr(err, "escrow import into vault %q", s.vault)
	}
	if a.g.json {
		return writeJSON(a.stdout, escrowImportJSON{Added: nonNil(res.Added), Skipped: nonNil(res.Skipped), Keys: keysJSON(res.Vault)})
	}
	for _, w := range res.Added {
		fmt.Fprintf(a.stdout, "put back: %s\n", w)
	}
	for _, w := range res.Skipped {
		fmt.Fprintf(a.stdout, "skipped: %s\n", w)
	}
	return printKeys(a, res.Vault)
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// readFileLimited reads path, failing when it holds more than limit bytes.
func readFileLimited(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return readAllLimited(f, limit)
}
