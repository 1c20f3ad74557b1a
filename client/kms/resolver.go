package kms

import (
	"fmt"
	"os"
	"os/exec"
	"sync"
)

// PluginPrefix is prefixed to a plugin name to find its executable in PATH
// ("coffer-kms-NAME"), the way git finds "git-credential-NAME".
const PluginPrefix = "coffer-kms-"

// Resolver maps the plugin name a KMS wrap records to a Client the agent trusts:
// TransitPlugin is the built-in Transit client; any other name is the executable
// Plugins names, or else "coffer-kms-NAME" in PATH. A name is never a path, so a changed
// key record cannot make the agent run a program it was not given. Clients are made once
// per name. A Resolver is safe for concurrent use.
type Resolver struct {
	// Plugins maps plugin names to executables (the client configuration's kms_plugins).
	Plugins map[string]string
	// Env, when not nil, is the plugins' whole environment (default: the agent's).
	Env []string
	// Transit configures the built-in Transit client (address and token default to
	// VAULT_ADDR and VAULT_TOKEN).
	Transit TransitConfig

	mu      sync.Mutex
	clients map[string]Client
}

// Client returns the client of plugin name.
func (r *Resolver) Client(name string) (Client, error) {
	if err := ValidatePluginName(name); err != nil {
		return nil, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if c, ok := r.clients[name]; ok {
		return c, nil
	}
	var c Client
	if name == TransitPlugin {
		t, err := NewTransit(r.Transit)
		if err != nil {
			return nil, err
		}
		c = t
	} else {
		path, ok := r.Plugins[name]
		if !ok {
			p, err := exec.LookPath(PluginPrefix + name)
			if err != nil {
				return nil, fmt.Errorf("kms: plugin %s: %w: no executable %s%s in PATH and none configured (kms_plugins)", name, ErrUnavailable, PluginPrefix, name)
			}
			path = p
		} else if _, err := os.Stat(path); err != nil {
			return nil, fmt.Errorf("kms: plugin %s: %w: %v", name, ErrUnavailable, err)
		}
		c = &Plugin{Name: name, Path: path, Env: r.Env}
	}
	if r.clients == nil {
		r.clients = map[string]Client{}
	}
	r.clients[name] = c
	return c, nil
}
