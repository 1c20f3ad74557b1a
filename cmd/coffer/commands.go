package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
)

// command is one CLI command: an options struct that registers its flags and runs.
type command interface {
	// addFlags registers the command's own flags (global flags are added separately).
	addFlags(fs *flag.FlagSet)
	// run executes the command with its positional arguments. It returns a *usageError
	// for bad arguments, a *partialError for a backup that skipped files, or any other
	// error for a failure.
	run(ctx context.Context, a *app, args []string) error
}

// cmdSpec describes a command for dispatch and help. Keep the text consistent with
// docs/cli.md (TestDocsMentionEveryCommandAndFlag checks the names).
type cmdSpec struct {
	name     string // "backup", "admin status"
	args     string // synopsis after the flags: "PATH..."
	short    string // one line, lower case, no period
	long     string // paragraph(s) shown by --help
	examples []string
	new      func() command
}

// commands returns the command table in help order.
func commands() []*cmdSpec {
	return []*cmdSpec{
		initSpec(),
		backupSpec(),
		snapshotsSpec(),
		lsSpec(),
		restoreSpec(),
		dumpSpec(),
		mountSpec(),
		verifySpec(),
		forgetSpec(),
		lockSpec(),
		holdSetSpec(),
		holdClearSpec(),
		vaultDeleteSpec(),
		vaultUndeleteSpec(),
		vaultPolicySpec(),
		vaultKeysAddHostSpec(), // before "vault keys": the longest name matches first
		vaultKeysAddKMSSpec(),
		vaultKeysRotateKMSSpec(),
		vaultKeysExportSpec(),
		vaultKeysImportSpec(),
		vaultKeysRemoveSpec(),
		vaultKeysManagementSpec(),
		vaultKeysSpec(),
		vaultRotateKeySpec(),
		vaultPassphraseChangeSpec(),
		adminStatusSpec(),
		adminNodesSpec(),
		adminNodeDrainSpec(),
		adminNodeUndrainSpec(),
		adminNodeDecommissionSpec(),
		adminNodeActivateSpec(),
		adminNodeAddSpec(),
		adminMetaListSpec(),
		adminMetaAddSpec(),
		adminMetaRemoveSpec(),
		adminPGsSpec(),
		adminScrubStartSpec(),
		adminScrubStatusSpec(),
		adminGCRunSpec(),
		adminGCStatusSpec(),
		adminAuditSpec(),
		adminApprovalsListSpec(),
		adminApprovalsApproveSpec(),
		adminApprovalsDenySpec(),
		adminMFAEnrollSpec(),
		adminRetentionStatusSpec(),
		adminRetentionRunSpec(),
		adminAlertAddSpec(),
		adminAlertListSpec(),
		adminAlertRemoveSpec(),
		adminAlertTestSpec(),
		adminAlertsSpec(),
		adminEnrollTokenCreateSpec(),
		adminEnrollTokenListSpec(),
		adminEnrollTokenRevokeSpec(),
		adminCertRevokeSpec(),
		adminCertListSpec(),
		adminCertIssueSpec(),
		adminNodeTokenCreateSpec(),
		certRequestSpec(),
		agentEnrollSpec(),
		agentRenewSpec(),
		agentRunSpec(),
		jobsSpec(),
		adminAgentsSpec(),
		adminHostDecommissionSpec(),
		adminHostReinstateSpec(),
		adminReplicateAddSpec(),
		adminReplicateListSpec(),
		adminReplicateRunSpec(),
		adminReplicateRemoveSpec(),
		adminPolicyCreateSpec(),
		adminPolicyUpdateSpec(),
		adminPolicyDeleteSpec(),
		adminPolicyListSpec(),
		adminRebalancePlanSpec(),
		adminRebalanceApplySpec(),
		adminRebalanceStatusSpec(),
		adminRebalanceCancelSpec(),
		benchSpec(),
		versionSpec(),
		helpSpec(),
	}
}

// lookupCommand finds the command named by the leading words of args and returns it with
// the number of words consumed. For an unknown command it returns an error; when the
// first word is a known group ("admin") the returned spec names the group so its
// subcommands can be listed.
func lookupCommand(args []string) (*cmdSpec, int, error) {
	all := commands()
	// Longest match first: "admin status" before "admin".
	for _, c := range all {
		words := strings.Fields(c.name)
		if len(args) >= len(words) && equalWords(args[:len(words)], words) {
			return c, len(words), nil
		}
	}
	first := args[0]
	if groupCommands(first) != nil {
		group := &cmdSpec{name: first}
		if len(args) == 1 || strings.HasPrefix(args[1], "-") {
			return group, 1, fmt.Errorf("%q needs a subcommand", first)
		}
		return group, 1, fmt.Errorf("unknown command %q", first+" "+args[1])
	}
	return nil, 0, fmt.Errorf("unknown command %q", first)
}

// groupCommands returns the commands under a group word ("admin"), or nil.
func groupCommands(group string) []*cmdSpec {
	var out []*cmdSpec
	for _, c := range commands() {
		if g, _, ok := strings.Cut(c.name, " "); ok && g == group {
			out = append(out, c)
		}
	}
	return out
}

func equalWords(a, b []string) bool {
	for i := range b {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// printMainUsage writes the top-level help.
func printMainUsage(w io.Writer) {
	fmt.Fprint(w, `Usage: coffer [global flags] COMMAND [flags] [arguments]

coffer is the Coffer agent and admin CLI: it backs up files into an end-to-end
encrypted vault on a Coffer cluster and restores them.

Commands:
`)
	tw := tabwriter.NewWriter(w, 0, 0, 3, ' ', 0)
	for _, c := range commands() {
		fmt.Fprintf(tw, "  %s\t%s\n", c.name, c.short)
	}
	tw.Flush()
	fmt.Fprintln(w, "\nGlobal flags:")
	printFlagDocs(w, globalFlagDocs())
	fmt.Fprint(w, `
Exit codes: 0 success, 1 failure, 2 usage error, 3 backup saved but some files
could not be read.

Run "coffer help COMMAND" or "coffer COMMAND --help" for a command's flags and examples.
`)
}

// printGroupUsage lists the subcommands of a group such as "admin".
func printGroupUsage(w io.Writer, group string) {
	fmt.Fprintf(w, "Usage: coffer %s SUBCOMMAND [flags]\n\nSubcommands:\n", group)
	tw := tabwriter.NewWriter(w, 0, 0, 3, ' ', 0)
	for _, c := range groupCommands(group) {
		fmt.Fprintf(tw, "  %s\t%s\n", c.name, c.short)
	}
	tw.Flush()
}

// printCommandUsage writes one command's help: synopsis, description, flags, examples.
func printCommandUsage(w io.Writer, c *cmdSpec) {
	synopsis := "coffer " + c.name
	fs := flag.NewFlagSet(c.name, flag.ContinueOnError)
	c.new().addFlags(fs)
	hasFlags := false
	fs.VisitAll(func(*flag.Flag) { hasFlags = true })
	if hasFlags {
		synopsis += " [flags]"
	}
	if c.args != "" {
		synopsis += " " + c.args
	}
	fmt.Fprintf(w, "Usage: %s\n\n%s.\n", synopsis, upperFirst(c.short))
	if c.long != "" {
		fmt.Fprintf(w, "\n%s\n", strings.TrimSpace(c.long))
	}
	if hasFlags {
		fmt.Fprintln(w, "\nFlags:")
		var docs []flagDoc
		fs.VisitAll(func(f *flag.Flag) {
			arg, usage := flag.UnquoteUsage(f)
			if _, isBool := f.Value.(interface{ IsBoolFlag() bool }); isBool {
				arg = ""
			}
			docs = append(docs, flagDoc{name: f.Name, arg: arg, usage: usage})
		})
		sort.SliceStable(docs, func(i, j int) bool { return docs[i].name < docs[j].name })
		printFlagDocs(w, docs)
	}
	fmt.Fprintln(w, "\nGlobal flags (before or after the command): --config FILE, --vault NAME, --json,")
	fmt.Fprintln(w, "  --passphrase-file FILE, -q/--quiet (see \"coffer help\").")
	if len(c.examples) > 0 {
		fmt.Fprintln(w, "\nExamples:")
		for _, e := range c.examples {
			fmt.Fprintf(w, "  %s\n", e)
		}
	}
}

func printFlagDocs(w io.Writer, docs []flagDoc) {
	tw := tabwriter.NewWriter(w, 0, 0, 3, ' ', 0)
	for _, d := range docs {
		name := "--" + d.name
		switch {
		case strings.HasPrefix(d.name, "-"):
			name = d.name
		case len(d.name) == 1:
			name = "-" + d.name
		}
		if d.arg != "" {
			name += " " + d.arg
		}
		fmt.Fprintf(tw, "  %s\t%s\n", name, d.usage)
	}
	tw.Flush()
}

func upperFirst(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

// stringList is a repeatable string flag.
type stringList []string

func (l *stringList) String() string { return strings.Join(*l, ",") }

// Set appends one value; empty values are refused.
func (l *stringList) Set(v string) error {
	if v == "" {
		return fmt.Errorf("empty value")
	}
	*l = append(*l, v)
	return nil
}
