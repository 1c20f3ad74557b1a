package node

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"
)

// TestExampleConfigsValidate keeps deploy/examples from going stale: every example parses
// (unknown fields are errors) and validates.
func TestExampleConfigsValidate(t *testing.T) {
	paths, err := filepath.Glob("../deploy/examples/*.yaml")
	if err != nil || len(paths) == 0 {
		t.Fatalf("no example configs found: %v", err)
	}
	for _, p := range paths {
		if _, err := LoadConfig(p); err != nil {
			t.Errorf("%s: %v", p, err)
		}
	}
}

func TestValidateNamesTheProblem(t *testing.T) {
	good, err := LoadConfig("../deploy/examples/meta-1.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		edit func(*Config)
		want string
	}{
		{"no id", func(c *Config) { c.ID = "" }, "id is empty"},
		{"bad role", func(c *Config) { c.Roles = []Role{"storage"} }, `unknown role "storage"`},
		{"bad listen", func(c *Config) { c.Listen = "nohostport" }, "listen"},
		{"no tls", func(c *Config) { c.TLS.Key = "" }, "tls"},
		{"dup meta", func(c *Config) { c.MetaServers = append(c.MetaServers, c.MetaServers[0]) }, "duplicate id"},
		{"initial voter not listed", func(c *Config) { c.ID = "meta-9" }, "not in meta_servers"},
		{"bad pg count", func(c *Config) { b := *c.Bootstrap; b.PGCount = 1000; c.Bootstrap = &b }, "bootstrap map"},
		{"tiny segments", func(c *Config) { c.SegmentSize = 4096 }, "segment_size"},
		{"ca key", func(c *Config) { c.TLS.CAKey = "ca-key.pem" }, "ca_key is no longer accepted"},
		{"issuer on a chunk node", func(c *Config) { c.Roles = []Role{RoleChunk} }, "issuer_cert is for meta nodes"},
		{"issuer cert without key", func(c *Config) { c.TLS.IssuerKey = "" }, "issuer_cert and issuer_key go together"},
	}
	for _, tc := range cases {
		c := good
		tc.edit(&c)
		err := c.Validate()
		if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Validate() = %v, want ErrConfig mentioning %q", tc.name, err, tc.want)
		}
	}
}

// TestJoiningMetaConfig: a meta node without a bootstrap section joins a running group
// (listed in its own meta_servers or not, as `cofferd join` writes it); one with it is
// an initial voter.
func TestJoiningMetaConfig(t *testing.T) {
	c, err := LoadConfig("../deploy/examples/meta-1.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if !c.initialVoter() {
		t.Fatal("meta-1 with a bootstrap section is not an initial voter")
	}
	c.Bootstrap = nil
	for _, id := range []string{c.MetaServers[0].ID, "meta-9"} {
		c.ID = id
		if err := c.Validate(); err != nil {
			t.Fatalf("joining meta server %s: %v", id, err)
		}
		if c.initialVoter() {
			t.Fatalf("%s without bootstrap counted as an initial voter", id)
		}
	}
}

func TestLoadConfigRejectsUnknownFields(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "n.yaml")
	c := Config{ID: "x"}
	if err := SaveConfig(p, c); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadConfig(p); !errors.Is(err, ErrConfig) {
		t.Fatalf("incomplete config loaded: %v", err)
	}
}
