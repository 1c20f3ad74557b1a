package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"text/tabwriter"
	"time"

	"github.com/cofferhq/coffer/client"
	"github.com/cofferhq/coffer/client/clientconfig"
	"github.com/cofferhq/coffer/client/crypt"
	"github.com/cofferhq/coffer/meta"
)

// envNewPassphrase holds the new passphrase of `coffer vault passphrase change`.
const envNewPassphrase = "COFFER_NEW_PASSPHRASE"

// vaultKeysJSON is `coffer vault keys --json` (and the --json output of every command
// that changes the vault's keys): the key record without key bytes.
type vaultKeysJSON struct {
	Vault      string         `json:"vault"`
	Management string         `json:"management"` // customer, platform; "legacy" before conversion
	Epoch      uint32         `json:"epoch"`
	RotateBy   uint32         `json:"rotate_by,omitempty"`
	Revision   uint64         `json:"revision"`
	Wraps      []meta.KeyWrap `json:"wraps"`
}

func keysJSON(v meta.Vault) vaultKeysJSON {
	if v.Keys == nil {
		return vaultKeysJSON{Vault: string(v.ID), Management: "legacy", Wraps: []meta.KeyWrap{}}
	}
	return vaultKeysJSON{Vault: string(v.ID), Management: v.Keys.Management, Epoch: v.Keys.Epoch, RotateBy: v.Keys.RotateBy,
		Revision: v.Keys.Revision, Wraps: v.Keys.Wraps}
}

// printKeys prints the key record as a table.
func printKeys(a *app, v meta.Vault) error {
	if a.g.json {
		return writeJSON(a.stdout, keysJSON(v))
	}
	if v.Keys == nil {
		fmt.Fprintf(a.stdout, "vault %s: %d legacy passphrase wrapping(s) of the master key (epoch 0); convert with \"coffer vault passphrase change\"\n", v.ID, len(v.KeyWraps))
		return nil
	}
	k := v.Keys
	fmt.Fprintf(a.stdout, "vault %s: %s-managed keys, key epoch %d", v.ID, k.Management, k.Epoch)
	if k.RotateBy > k.Epoch {
		fmt.Fprintf(a.stdout, " (rotation to %d due: the next backup performs it)", k.RotateBy)
	}
	fmt.Fprintln(a.stdout)
	if k.Management == meta.KeyPlatform {
		fmt.Fprintln(a.stdout, "  the platform can decrypt this vault: its key is also wrapped to the meta servers' platform key")
	}
	tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tKIND\tHOLDER\tCREATED\tBY\tLAST USED")
	for _, w := range k.Wraps {
		last := "never"
		if !w.LastUsed.IsZero() {
			last = w.LastUsed.In(a.loc).Format(time.RFC3339)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", w.ID, w.Kind, w.Holder, w.Created.In(a.loc).Format(time.RFC3339), w.CreatedBy, last)
	}
	return tw.Flush()
}

// keysErr turns a key operation's error into a clear message.
func keysErr(err error, format string, args ...any) error {
	what := fmt.Sprintf(format, args...)
	switch {
	case errors.Is(err, client.ErrWrongPassphrase):
		return plainf(err, "%s: wrong passphrase", what)
	case errors.Is(err, meta.ErrExists):
		return plainf(err, "%s: %s", what, errorMessage(err))
	case errors.Is(err, meta.ErrInvalid), errors.Is(err, client.ErrInvalid), errors.Is(err, meta.ErrNotFound),
		errors.Is(err, meta.ErrUnavailable), errors.Is(err, client.ErrNoWrap):
		return plainf(err, "%s: %s", what, errorMessage(err))
	}
	return retentionErr(err, "%s", what)
}

func vaultKeysSpec() *cmdSpec {
	return &cmdSpec{
		name:  "vault keys",
		short: "list the vault's key wraps (holder, kind, created, last used)",
		long: `Lists the key wraps of the vault named by --vault: one per holder of its key
(a passphrase, a host's own key pair, the platform key of a platform-managed
vault), with when and by whom each was made and when it was last used (to
within an hour). Also shows the key management mode and the key epoch new
chunks are sealed under. Key bytes are never shown.

With --json an object is printed: vault, management, epoch, rotate_by,
revision and wraps (id, kind, holder, recipient, created, created_by,
last_used, params).`,
		examples: []string{"coffer --vault web01 vault keys", "coffer vault keys --json"},
		new:      func() command { return &vaultKeysCmd{} },
	}
}

type vaultKeysCmd struct{}

func (c *vaultKeysCmd) addFlags(*flag.FlagSet) {}

func (c *vaultKeysCmd) run(ctx context.Context, a *app, args []string) error {
	if len(args) > 0 {
		return usagef(vaultKeysSpec(), "vault keys takes no arguments (name the vault with --vault), got %q", args[0])
	}
	s, err := connect(ctx, a)
	if err != nil {
		return err
	}
	defer s.Close()
	v, err := s.meta.GetVault(ctx, s.vault)
	if err != nil {
		return keysErr(err, "vault keys of %q", s.vault)
	}
	return printKeys(a, v)
}

// keyChangeCmd is the common shape of the commands that change a vault's keys: open the
// vault (the keyring is needed), change, print the new record.
func runKeyChange(ctx context.Context, a *app, what string, fn func(s *session, ag *client.Agent) (meta.Vault, error)) error {
	s, ag, err := openAgent(ctx, a)
	if err != nil {
		return err
	}
	defer s.Close()
	defer ag.Close()
	v, err := fn(s, ag)
	if err != nil {
		return keysErr(err, "%s of vault %q", what, s.vault)
	}
	return printKeys(a, v)
}

func vaultRotateKeySpec() *cmdSpec {
	return &cmdSpec{
		name:  "vault rotate-key",
		short: "start a new data-key epoch (nothing is re-encrypted)",
		long: `Starts a new key epoch for the vault named by --vault: a random data key, sealed
with the rest of the vault's keyring to every holder. Chunks written from now
on are sealed under it; every earlier snapshot stays restorable with the keys
of its own epoch, and nothing is re-encrypted. Chunk IDs and chunk boundaries
do not change, so deduplication against earlier snapshots is kept.

Opens the vault first (passphrase or this host's key). Admins and the
vault's backup agents; audited with --reason. --json prints the key record
as "coffer vault keys --json" does.`,
		examples: []string{"coffer --vault web01 vault rotate-key --reason quarterly"},
		new:      func() command { return &vaultRotateKeyCmd{} },
	}
}

type vaultRotateKeyCmd struct{ reason string }

func (c *vaultRotateKeyCmd) addFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.reason, "reason", "", "why (`TEXT`, audited)")
}

func (c *vaultRotateKeyCmd) run(ctx context.Context, a *app, args []string) error {
	if len(args) > 0 {
		return usagef(vaultRotateKeySpec(), "vault rotate-key takes no arguments, got %q", args[0])
	}
	return runKeyChange(ctx, a, "rotate-key", func(_ *session, ag *client.Agent) (meta.Vault, error) {
		return ag.RotateKey(ctx, c.reason)
	})
}

func vaultPassphraseChangeSpec() *cmdSpec {
	return &cmdSpec{
		name:  "vault passphrase change",
		short: "re-wrap the vault key under a new passphrase",
		long: `Replaces the passphrase wrap of the vault named by --vault with one under a new
passphrase: the old passphrase opens nothing afterwards (nor do local key
cache entries made with it). The current passphrase (or this host's key)
opens the vault first; the new one comes from --new-passphrase-file, the
COFFER_NEW_PASSPHRASE environment variable, or is asked twice on a terminal.
A vault made before key wraps is converted (its legacy wrapping goes).

Admin certificate only; audited with --reason. --json prints the key record
as "coffer vault keys --json" does.`,
		examples: []string{
			"coffer --vault web01 vault passphrase change",
			"COFFER_PASSPHRASE=old COFFER_NEW_PASSPHRASE=new coffer --vault web01 vault passphrase change",
		},
		new: func() command { return &vaultPassphraseChangeCmd{} },
	}
}

type vaultPassphraseChangeCmd struct {
	file   string
	reason string
}

func (c *vaultPassphraseChangeCmd) addFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.file, "new-passphrase-file", "", "read the new passphrase from `FILE` (first line)")
	fs.StringVar(&c.reason, "reason", "", "why (`TEXT`, audited)")
}

func (c *vaultPassphraseChangeCmd) newPassphrase(ctx context.Context, a *app) ([]byte, error) {
	if c.file != "" {
		b, err := os.ReadFile(c.file)
		if err != nil {
			return nil, fmt.Errorf("read new passphrase file: %w", err)
		}
		if b = trimNewline(b); len(b) == 0 {
			return nil, fmt.Errorf("new passphrase file %s is empty", c.file)
		}
		return b, nil
	}
	if p := a.getenv(envNewPassphrase); p != "" {
		return []byte(p), nil
	}
	p, err := a.prompt.ReadSecret(ctx, "New vault passphrase: ")
	if errors.Is(err, errNoTerminal) {
		return nil, fmt.Errorf("a new passphrase is needed: use --new-passphrase-file FILE or set %s (%w)", envNewPassphrase, err)
	}
	if err != nil {
		return nil, fmt.Errorf("read new passphrase: %w", err)
	}
	if len(p) == 0 {
		return nil, errors.New("empty new passphrase")
	}
	again, err := a.prompt.ReadSecret(ctx, "Repeat new passphrase: ")
	if err != nil {
		clear(p)
		return nil, fmt.Errorf("read new passphrase: %w", err)
	}
	defer clear(again)
	if string(again) != string(p) {
		clear(p)
		return nil, errors.New("the new passphrases do not match")
	}
	return p, nil
}

func (c *vaultPassphraseChangeCmd) run(ctx context.Context, a *app, args []string) error {
	if len(args) > 0 {
		return usagef(vaultPassphraseChangeSpec(), "vault passphrase change takes no arguments, got %q", args[0])
	}
	np, err := c.newPassphrase(ctx, a)
	if err != nil {
		return err
	}
	defer clear(np)
	return runKeyChange(ctx, a, "passphrase change", func(_ *session, ag *client.Agent) (meta.Vault, error) {
		return ag.ChangePassphrase(ctx, np, c.reason)
	})
}

func vaultKeysAddHostSpec() *cmdSpec {
	return &cmdSpec{
		name:  "vault keys add-host",
		short: "wrap the vault key to a host's own key (no passphrase on the host)",
		long: `Adds a host wrap to the vault named by --vault: the vault's keyring sealed to the
host's own X25519 key pair (generated at enrollment, host_key in its
coffer.yaml; the private key never leaves the host). The host then opens the
vault with its own key, without a passphrase. Run on the host itself (once,
with the passphrase) it wraps to this host's key under its certificate's
name; elsewhere, name the host (--name, its agent name) and its public key
(--recipient, printed by "coffer agent enroll").

Revoking the host's certificate removes its wrap and makes a key rotation due,
which the next backup performs: data written afterwards is unreadable to it.
Admins and the vault's backup agents; audited with --reason. --json prints the
key record as "coffer vault keys --json" does.`,
		examples: []string{
			"coffer vault keys add-host",
			"coffer --vault web vault keys add-host --name web02 --recipient age1qyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqs3290gq",
		},
		new: func() command { return &vaultKeysAddHostCmd{} },
	}
}

type vaultKeysAddHostCmd struct{ name, recipient, reason string }

func (c *vaultKeysAddHostCmd) addFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.name, "name", "", "the host's agent `NAME` (default: this certificate's name)")
	fs.StringVar(&c.recipient, "recipient", "", "the host's public key `AGE1...` (default: this host's host_key)")
	fs.StringVar(&c.reason, "reason", "", "why (`TEXT`, audited)")
}

func (c *vaultKeysAddHostCmd) run(ctx context.Context, a *app, args []string) error {
	if len(args) > 0 {
		return usagef(vaultKeysAddHostSpec(), "vault keys add-host takes no arguments, got %q", args[0])
	}
	return runKeyChange(ctx, a, "add-host", func(s *session, ag *client.Agent) (meta.Vault, error) {
		name, rc := c.name, c.recipient
		if name == "" {
			name = s.principal
		}
		if rc == "" {
			id, err := s.hostKey()
			if err != nil {
				return meta.Vault{}, err
			}
			if id == nil {
				return meta.Vault{}, fmt.Errorf("%w: no --recipient, and the client configuration names no host_key (hosts enrolled with \"coffer agent enroll\" have one)", client.ErrInvalid)
			}
			rc = id.Recipient()
		}
		return ag.AddHostWrap(ctx, name, rc, c.reason)
	})
}

func vaultKeysRemoveSpec() *cmdSpec {
	return &cmdSpec{
		name:  "vault keys remove",
		args:  "WRAP-ID",
		short: "remove a key wrap (a host's also starts a new key epoch)",
		long: `Removes the key wrap WRAP-ID (from "coffer vault keys") of the vault named by
--vault. Removing a host's wrap also starts a new key epoch, so that the host
cannot decrypt anything written afterwards (what was written before stays
readable to it if it kept its keys: see docs/security.md). The last wrap is
never removed; the platform wrap goes with "coffer vault keys management
customer". Admin certificate only; audited with --reason. --json prints the key
record as "coffer vault keys --json" does.`,
		examples: []string{"coffer --vault web vault keys remove 3f9a0c1d2b4e5f60 --reason \"host retired\""},
		new:      func() command { return &vaultKeysRemoveCmd{} },
	}
}

type vaultKeysRemoveCmd struct{ reason string }

func (c *vaultKeysRemoveCmd) addFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.reason, "reason", "", "why (`TEXT`, audited)")
}

func (c *vaultKeysRemoveCmd) run(ctx context.Context, a *app, args []string) error {
	if len(args) != 1 {
		return usagef(vaultKeysRemoveSpec(), "vault keys remove takes one WRAP-ID")
	}
	return runKeyChange(ctx, a, "remove wrap", func(_ *session, ag *client.Agent) (meta.Vault, error) {
		return ag.RemoveWrap(ctx, args[0], c.reason)
	})
}

func vaultKeysManagementSpec() *cmdSpec {
	return &cmdSpec{
		name:  "vault keys management",
		args:  "customer|platform",
		short: "switch between customer- and platform-managed keys",
		long: `Switches the key management of the vault named by --vault.

customer: the platform wrap is removed and a new key epoch starts. The meta
servers cannot decrypt anything written afterwards; they could decrypt what
was written before, and may have kept it.

platform: the vault's keyring is also sealed to the meta servers' platform
key, so the PLATFORM CAN DECRYPT THE VAULT: an admin restores it without a
passphrase (coffer restore --platform). This needs the vault open (the
passphrase or a host key): the platform cannot grant itself access.

Admin certificate only; audited with --reason. --json prints the key record
as "coffer vault keys --json" does.`,
		examples: []string{"coffer --vault web vault keys management customer --reason \"tenant request\""},
		new:      func() command { return &vaultKeysManagementCmd{} },
	}
}

type vaultKeysManagementCmd struct{ reason string }

func (c *vaultKeysManagementCmd) addFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.reason, "reason", "", "why (`TEXT`, audited)")
}

func (c *vaultKeysManagementCmd) run(ctx context.Context, a *app, args []string) error {
	if len(args) != 1 || (args[0] != meta.KeyCustomer && args[0] != meta.KeyPlatform) {
		return usagef(vaultKeysManagementSpec(), "vault keys management takes customer or platform")
	}
	return runKeyChange(ctx, a, "key-management "+args[0], func(_ *session, ag *client.Agent) (meta.Vault, error) {
		return ag.SetManagement(ctx, args[0], c.reason)
	})
}

// printHostKeyHint tells a newly enrolled host how to open its vault with its own key.
func printHostKeyHint(a *app, cfgPath string) {
	f, err := clientconfig.Load(cfgPath)
	if err != nil || f.HostKey == "" {
		return
	}
	b, err := os.ReadFile(f.HostKey)
	if err != nil {
		return
	}
	id, err := crypt.ParseIdentity(b)
	if err != nil {
		return
	}
	fmt.Fprintf(a.stdout, "host key: %s (%s; never leaves this host)\nto open the vault without a passphrase, once: coffer --config %s vault keys add-host\n",
		id.Recipient(), f.HostKey, cfgPath)
}
