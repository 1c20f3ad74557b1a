package main

import (
	"errors"
	"flag"
	"fmt"
	"os"

	"github.com/cofferhq/coffer/client/clientconfig"
	"github.com/cofferhq/coffer/meta"
)

// Environment variables read by coffer.
const (
	envConfig     = "COFFER_CONFIG"
	envPassphrase = "COFFER_PASSPHRASE"
	envCacheDir   = "COFFER_CACHE_DIR"
)

// defaultConfigFile is used when neither --config nor COFFER_CONFIG is set and the file
// exists in the working directory.
const defaultConfigFile = "coffer.yaml"

// defaultVault is the vault used when neither --vault nor the config names one.
const defaultVault = "default"

// globals are the flags accepted before (and after) every command.
type globals struct {
	config         string
	vault          string
	json           bool
	passphraseFile string
	quiet          bool
	logFormat      string // "text" (default, for terminals) or "json"
	otp            string // the caller's current TOTP code, sent with every meta request
}

// flagDoc is one line of flag help.
type flagDoc struct{ name, arg, usage string }

// globalFlagDocs documents the global flags for usage text (see docs/cli.md).
func globalFlagDocs() []flagDoc {
	return []flagDoc{
		{"config", "FILE", "client configuration file (env " + envConfig + "; default ./" + defaultConfigFile + " if it exists)"},
		{"vault", "NAME", "vault to use (default: the config's vault, else \"" + defaultVault + "\")"},
		{"json", "", "print machine-readable JSON instead of text"},
		{"passphrase-file", "FILE", "read the vault passphrase from FILE, or \"-\" for stdin (else env " + envPassphrase + ", else a terminal prompt)"},
		{"-q, --quiet", "", "print no progress or summaries, only results and errors"},
		{"log-format", "FORMAT", "diagnostics on stderr as \"text\" (default: \"coffer: warning: ...\" lines) or \"json\" (one object per line)"},
		{"otp", "CODE", "your current TOTP code: a two-person-gated operation you request needs it once you enrolled MFA; approve and deny take it too"},
		{"help", "", "show help"},
	}
}

// addFlags registers the global flags on fs, bound to g. Registering on a command's
// FlagSet too lets global flags appear after the command name.
func (g *globals) addFlags(fs *flag.FlagSet) {
	fs.StringVar(&g.config, "config", g.config, "")
	fs.StringVar(&g.vault, "vault", g.vault, "")
	fs.BoolVar(&g.json, "json", g.json, "")
	fs.StringVar(&g.passphraseFile, "passphrase-file", g.passphraseFile, "")
	fs.BoolVar(&g.quiet, "q", g.quiet, "")
	fs.BoolVar(&g.quiet, "quiet", g.quiet, "")
	fs.StringVar(&g.logFormat, "log-format", g.logFormat, "")
	fs.StringVar(&g.otp, "otp", g.otp, "")
}

// errNoConfig: no configuration file was named and none is in the working directory.
var errNoConfig = errors.New("no client configuration: pass --config FILE or set " + envConfig +
	" (no " + defaultConfigFile + " in the working directory)")

// configPath resolves the configuration file: --config, then COFFER_CONFIG, then
// ./coffer.yaml if it exists.
func (a *app) configPath() (string, error) {
	if a.g.config != "" {
		return a.g.config, nil
	}
	if p := a.getenv(envConfig); p != "" {
		return p, nil
	}
	if _, err := os.Stat(defaultConfigFile); err == nil {
		return defaultConfigFile, nil
	}
	return "", errNoConfig
}

// loadConfig reads the client configuration.
func (a *app) loadConfig() (clientconfig.File, error) {
	path, err := a.configPath()
	if err != nil {
		return clientconfig.File{}, err
	}
	f, err := clientconfig.Load(path)
	if err != nil {
		return f, fmt.Errorf("load config: %w", err)
	}
	return f, nil
}

// vaultID resolves the vault: --vault, then the config's vault, then "default".
func (a *app) vaultID(cfg clientconfig.File) meta.VaultID {
	switch {
	case a.g.vault != "":
		return meta.VaultID(a.g.vault)
	case cfg.Vault != "":
		return meta.VaultID(cfg.Vault)
	default:
		return defaultVault
	}
}
