package main

import (
	"context"
	"flag"
	"strings"
)

func helpSpec() *cmdSpec {
	return &cmdSpec{
		name:     "help",
		args:     "[COMMAND]",
		short:    "show help for coffer or one command",
		examples: []string{"coffer help", "coffer help backup", "coffer help admin status"},
		new:      func() command { return &helpCmd{} },
	}
}

// helpCmd prints usage.
type helpCmd struct{}

func (c *helpCmd) addFlags(*flag.FlagSet) {}

func (c *helpCmd) run(_ context.Context, a *app, args []string) error {
	if len(args) == 0 {
		printMainUsage(a.stdout)
		return nil
	}
	spec, n, err := lookupCommand(args)
	switch {
	case err != nil && spec != nil && len(args) == 1:
		printGroupUsage(a.stdout, spec.name) // "coffer help admin"
		return nil
	case err != nil:
		return usagef(helpSpec(), "no help for %q: %v", strings.Join(args, " "), err)
	case n != len(args):
		return usagef(helpSpec(), "no help for %q: unexpected %q", strings.Join(args, " "), args[n])
	}
	printCommandUsage(a.stdout, spec)
	return nil
}
