package main

import (
	"context"
	"errors"
	"flag"
	"fmt"

	"github.com/cofferhq/coffer/client"
	"github.com/cofferhq/coffer/meta"
)

func initSpec() *cmdSpec {
	return &cmdSpec{
		name:  "init",
		short: "create the vault and protect its key with a passphrase",
		long: `Creates the vault named by --vault (or the config's vault, or "default") on the
cluster. A random master key is generated on this host and stored only wrapped
by the passphrase (Argon2id); with --key-management customer (the default) the
cluster never sees it. With --key-management platform the key is also wrapped
to the meta servers' platform key: the platform can then decrypt the vault,
and an admin restores it without the passphrase (coffer restore --platform). On a terminal the
passphrase is asked twice. Prints the vault ID. The key is also kept in the
local key cache (sealed under the passphrase and this client's TLS key, as
backups keep it; --cache-dir, --no-cache), so the next backup on this host
does not derive it again. Admins and backup agents (for a vault in their
scope) may create vaults; every attempt is in the audit log.

Losing the passphrase loses the vault's data: there is no recovery without it.`,
		examples: []string{
			"coffer init",
			"coffer --vault web01 init",
			"COFFER_PASSPHRASE=... coffer --config /etc/coffer/coffer.yaml init",
		},
		new: func() command { return &initCmd{} },
	}
}

// initCmd creates a vault.
type initCmd struct {
	cache      cacheFlags
	management string
}

func (c *initCmd) addFlags(fs *flag.FlagSet) {
	c.cache.add(fs, "do not keep the new vault key in the local key cache")
	fs.StringVar(&c.management, "key-management", meta.KeyCustomer, "who can unwrap the vault key: `MODE` customer (only you) or platform (the platform too)")
}

func (c *initCmd) run(ctx context.Context, a *app, args []string) error {
	if len(args) > 0 {
		return usagef(initSpec(), "init takes no arguments, got %q", args[0])
	}
	if c.management != meta.KeyCustomer && c.management != meta.KeyPlatform {
		return usagef(initSpec(), "--key-management: want customer or platform, got %q", c.management)
	}
	s, err := connect(ctx, a)
	if err != nil {
		return err
	}
	defer s.Close()
	s.useCache(c.cache.resolve(a))
	pass, err := a.passphrase(ctx, true)
	if err != nil {
		return err
	}
	v, err := client.InitVaultWith(ctx, s.agent, s.vault, client.InitOptions{Passphrase: pass, Management: c.management})
	clear(pass)
	if errors.Is(err, meta.ErrExists) {
		return plainf(err, "vault %q already exists", s.vault)
	}
	if err != nil {
		return fmt.Errorf("create vault %q: %w", s.vault, err)
	}
	if a.g.json {
		return writeJSON(a.stdout, initSummary{
			MessageType: "summary",
			Vault:       string(v.ID),
			Created:     v.Created,
			Profile:     fmt.Sprintf("%d+%d", v.Profile.K, v.Profile.M),
			Chunker:     v.Chunker,
			Management:  c.management,
		})
	}
	if a.g.quiet {
		fmt.Fprintln(a.stdout, v.ID)
		return nil
	}
	fmt.Fprintf(a.stdout, "created vault %s (erasure coding %d+%d, chunker %s, %s-managed keys)\n", v.ID, v.Profile.K, v.Profile.M, v.Chunker, c.management)
	if c.management == meta.KeyPlatform {
		fmt.Fprintln(a.stdout, "the platform can decrypt this vault: its key is also wrapped to the meta servers' platform key (an admin restores it without the passphrase)")
	}
	return nil
}
