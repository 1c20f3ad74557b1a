package main

import (
	"flag"
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/cofferhq/coffer/meta"
)

// readCLIDoc returns docs/cli.md split into sections by "## " headings.
func readCLIDoc(t *testing.T) map[string]string {
	t.Helper()
	b, err := os.ReadFile("../../docs/cli.md")
	if err != nil {
		t.Fatalf("docs/cli.md: %v", err)
	}
	sections := map[string]string{}
	for _, part := range strings.Split(string(b), "\n## ")[1:] {
		title, body, _ := strings.Cut(part, "\n")
		sections[title] = body
	}
	return sections
}

// TestDocsMentionEveryCommandAndFlag keeps docs/cli.md consistent with --help: every
// command has a section naming its arguments and flags, every global flag is documented.
func TestDocsMentionEveryCommandAndFlag(t *testing.T) {
	sections := readCLIDoc(t)
	for _, c := range commands() {
		body, ok := sections["coffer "+c.name]
		if !ok {
			t.Errorf("docs/cli.md has no section \"## coffer %s\"", c.name)
			continue
		}
		for _, word := range strings.Fields(strings.NewReplacer("[", " ", "]", " ", "...", " ").Replace(c.args)) {
			if !strings.Contains(body, word) {
				t.Errorf("docs for %q do not mention argument %s", c.name, word)
			}
		}
		fs := flag.NewFlagSet(c.name, flag.ContinueOnError)
		c.new().addFlags(fs)
		fs.VisitAll(func(f *flag.Flag) {
			if !strings.Contains(body, "--"+f.Name) {
				t.Errorf("docs for %q do not mention --%s", c.name, f.Name)
			}
		})
		for _, ex := range c.examples {
			if !strings.Contains(body, ex) {
				t.Errorf("docs for %q lack the --help example %q", c.name, ex)
			}
		}
	}
	global := sections["Global flags"]
	fs := flag.NewFlagSet("g", flag.ContinueOnError)
	new(globals).addFlags(fs)
	fs.VisitAll(func(f *flag.Flag) {
		prefix := "--"
		if len(f.Name) == 1 {
			prefix = "-"
		}
		if !strings.Contains(global, "`"+prefix+f.Name) {
			t.Errorf("docs/cli.md global flags lack %s%s", prefix, f.Name)
		}
	})
	exits := sections["Exit codes"]
	for _, code := range []string{"| 0 |", "| 1 |", "| 2 |", "| 3 |"} {
		if !strings.Contains(exits, code) {
			t.Errorf("exit code row %q missing", code)
		}
	}
}

// TestDocsListEveryJSONField checks that every --json field name is documented.
func TestDocsListEveryJSONField(t *testing.T) {
	doc := readCLIDoc(t)["JSON output"]
	for _, v := range []any{initSummary{}, backupSummary{}, skippedJSON{}, snapshotJSON{}, entryJSON{},
		restoreSummary{}, statusJSON{}, clusterStatus{}, nodeRow{}, versionInfo{},
		nodesJSON{}, nodeActionJSON{}, metaListJSON{}, metaChangeJSON{}, meta.Server{}, meta.Member{}, pgsJSON{}, scrubStartJSON{}, scrubStatusJSON{},
		rebalanceApplyJSON{}, rebalanceStatusJSON{}, meta.GCReport{}, meta.GCStatus{}, meta.GCState{},
		enrollTokenJSON{}, enrollTokenStateJSON{}, meta.EnrollToken{}, agentEnrollJSON{}, meta.Revocation{},
		vaultKeysJSON{}, meta.KeyWrap{}, escrowImportJSON{},
		meta.RetentionStatus{}, meta.RetentionReport{}, meta.HeldSnapshot{}, meta.AlertSink{}, meta.Alert{}, meta.AlertDelivery{},
		nodeTokenJSON{}, certJSON{}, certListJSON{}, certListEntryJSON{}, meta.IssuedCert{},
		jobJSON{}, meta.Job{}, meta.JobStats{}, meta.Agent{}, meta.NextRun{}, meta.BackupPolicy{}, meta.PolicyLock{}} {
		rt := reflect.TypeOf(v)
		for i := range rt.NumField() {
			name, _, _ := strings.Cut(rt.Field(i).Tag.Get("json"), ",")
			if name == "" || name == "-" {
				continue
			}
			if !strings.Contains(doc, `"`+name+`"`) && !strings.Contains(doc, "`"+name+"`") {
				t.Errorf("docs/cli.md JSON output does not name %s.%s (%q)", rt.Name(), rt.Field(i).Name, name)
			}
		}
	}
}
