package main

import (
	"context"
	"flag"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/cofferhq/coffer/meta"
)

// Alerts: `coffer admin alert add|list|remove|test` (sinks) and `coffer admin alerts`
// (what fired).

func adminAlertAddSpec() *cmdSpec {
	return &cmdSpec{
		name:  "admin alert add",
		args:  "NAME",
		short: "add or replace an alert sink (webhook or command)",
		long: `Stores an alert sink in the cluster (Raft; audited). The meta leader sends each
alert to every sink that takes its kind: a webhook gets a JSON POST, a command
runs with the JSON on its standard input. Deliveries are retried (5s, 10s,
20s, ... up to 8 attempts) and each delivery, or final failure, is recorded in
the audit log. An alert is raised once per event (a failed job, a node going
down) and delivered once per sink: its "id" (also sent as the Idempotency-Key
header) is the same on every attempt, so a receiver can drop the rare repeat
of a leader that failed between sending and recording.

--webhook URL     an http or https URL (a token in it is shown only to admins)
--command "PROG ARGS"  an absolute program path and arguments; it runs only on meta
                  servers whose cofferd configuration lists PROG in alerts.commands
--kinds K,K       only these kinds (default: all): job-failed, anomaly, missed-run,
                  node-down, pg-degraded, capacity, cert-expiry, verify-failed, test

With --json: the stored sink {"name","kind","url","command","kinds","created"}.`,
		examples: []string{"coffer admin alert add pager --webhook https://hooks.example.net/coffer",
			`coffer admin alert add mail --command "/usr/local/bin/coffer-mail ops@example.net" --kinds job-failed,anomaly`},
		new: func() command { return &adminAlertAddCmd{} },
	}
}

type adminAlertAddCmd struct {
	webhook, command, kinds string
}

func (c *adminAlertAddCmd) addFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.webhook, "webhook", "", "POST alerts as JSON to this http(s) URL")
	fs.StringVar(&c.command, "command", "", "run this program (absolute path, then arguments) with the alert's JSON on stdin")
	fs.StringVar(&c.kinds, "kinds", "", "comma-separated alert kinds this sink takes (default: all)")
}

func (c *adminAlertAddCmd) run(ctx context.Context, a *app, args []string) error {
	spec := adminAlertAddSpec()
	if len(args) != 1 {
		return usagef(spec, "admin alert add takes one NAME, got %d arguments", len(args))
	}
	sink := meta.AlertSink{Name: args[0]}
	switch {
	case c.webhook != "" && c.command != "":
		return usagef(spec, "give --webhook or --command, not both")
	case c.webhook != "":
		sink.Kind, sink.URL = meta.SinkWebhook, c.webhook
	case c.command != "":
		sink.Kind, sink.Command = meta.SinkCommand, strings.Fields(c.command)
	default:
		return usagef(spec, "give --webhook URL or --command PROGRAM")
	}
	for _, k := range strings.Split(c.kinds, ",") {
		if k = strings.TrimSpace(k); k != "" {
			sink.Kinds = append(sink.Kinds, meta.AlertKind(k))
		}
	}
	if err := meta.ValidateAlertSink(sink); err != nil {
		return usagef(spec, "%v", err)
	}
	s, err := connect(ctx, a)
	if err != nil {
		return err
	}
	defer s.Close()
	got, err := s.meta.SetAlertSink(ctx, sink)
	if err != nil {
		return fmt.Errorf("alert add: %w", err)
	}
	if a.g.json {
		return writeJSON(a.stdout, sinkJSON(got))
	}
	fmt.Fprintf(a.stdout, "alert sink %s: %s\n", got.Name, sinkTarget(got))
	return nil
}

// sinkJSON is the --json shape of a sink (empty lists, not null).
func sinkJSON(s meta.AlertSink) meta.AlertSink {
	if s.Kinds == nil {
		s.Kinds = []meta.AlertKind{}
	}
	if s.Command == nil {
		s.Command = []string{}
	}
	return s
}

func sinkTarget(s meta.AlertSink) string {
	kinds := "all kinds"
	if len(s.Kinds) > 0 {
		ks := make([]string, len(s.Kinds))
		for i, k := range s.Kinds {
			ks[i] = string(k)
		}
		kinds = strings.Join(ks, ",")
	}
	if s.Kind == meta.SinkCommand {
		return fmt.Sprintf("command %s (%s)", strings.Join(s.Command, " "), kinds)
	}
	return fmt.Sprintf("webhook %s (%s)", s.URL, kinds)
}

func adminAlertListSpec() *cmdSpec {
	return &cmdSpec{
		name:  "admin alert list",
		short: "list the alert sinks",
		long: `Lists the alert sinks stored in the cluster: name, kind, target and the alert
kinds each takes. Admin certificates only (a webhook URL may carry a token).

With --json: {"sinks":[{"name","kind","url","command","kinds","created"}]}.`,
		examples: []string{"coffer admin alert list"},
		new:      func() command { return &adminAlertListCmd{} },
	}
}

type adminAlertListCmd struct{}

func (c *adminAlertListCmd) addFlags(*flag.FlagSet) {}

func (c *adminAlertListCmd) run(ctx context.Context, a *app, args []string) error {
	if len(args) > 0 {
		return usagef(adminAlertListSpec(), "admin alert list takes no arguments, got %q", args[0])
	}
	s, err := connect(ctx, a)
	if err != nil {
		return err
	}
	defer s.Close()
	sinks, err := s.meta.AlertSinks(ctx)
	if err != nil {
		return fmt.Errorf("alert list: %w", err)
	}
	if a.g.json {
		out := make([]meta.AlertSink, len(sinks))
		for i, sk := range sinks {
			out[i] = sinkJSON(sk)
		}
		return writeJSON(a.stdout, struct {
			Sinks []meta.AlertSink `json:"sinks"`
		}{out})
	}
	if len(sinks) == 0 {
		fmt.Fprintln(a.stdout, "no alert sinks (add one with coffer admin alert add)")
		return nil
	}
	tw := tabwriter.NewWriter(a.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tTARGET\tSINCE")
	for _, sk := range sinks {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", sk.Name, sinkTarget(sk), sk.Created.Format(time.RFC3339))
	}
	return tw.Flush()
}

func adminAlertRemoveSpec() *cmdSpec {
	return &cmdSpec{
		name:     "admin alert remove",
		args:     "NAME",
		short:    "remove an alert sink",
		long:     `Removes an alert sink (admin certificates only; audited). Alerts already sent stay recorded.`,
		examples: []string{"coffer admin alert remove pager"},
		new:      func() command { return &adminAlertRemoveCmd{} },
	}
}

type adminAlertRemoveCmd struct{}

func (c *adminAlertRemoveCmd) addFlags(*flag.FlagSet) {}

func (c *adminAlertRemoveCmd) run(ctx context.Context, a *app, args []string) error {
	if len(args) != 1 {
		return usagef(adminAlertRemoveSpec(), "admin alert remove takes one NAME, got %d arguments", len(args))
	}
	s, err := connect(ctx, a)
	if err != nil {
		return err
	}
	defer s.Close()
	if err := s.meta.RemoveAlertSink(ctx, args[0]); err != nil {
		return fmt.Errorf("alert remove: %w", err)
	}
	if a.g.json {
		return writeJSON(a.stdout, struct {
			Removed string `json:"removed"`
		}{args[0]})
	}
	fmt.Fprintf(a.stdout, "removed alert sink %s\n", args[0])
	return nil
}

func adminAlertTestSpec() *cmdSpec {
	return &cmdSpec{
		name:  "admin alert test",
		short: "send a test alert to the sinks now",
		long: `Raises an alert of kind "test" and has the meta leader deliver it at once to
every sink that takes it; prints each sink's outcome (delivered, or the error of
the first attempt; failed deliveries are retried like any alert's).

With --json: the alert, as in admin alerts.`,
		examples: []string{`coffer admin alert test --message "checking the pager"`},
		new:      func() command { return &adminAlertTestCmd{} },
	}
}

type adminAlertTestCmd struct{ message string }

func (c *adminAlertTestCmd) addFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.message, "message", "", "the test alert's message")
}

func (c *adminAlertTestCmd) run(ctx context.Context, a *app, args []string) error {
	if len(args) > 0 {
		return usagef(adminAlertTestSpec(), "admin alert test takes no arguments, got %q", args[0])
	}
	s, err := connect(ctx, a)
	if err != nil {
		return err
	}
	defer s.Close()
	al, err := s.meta.TestAlert(ctx, c.message)
	if err != nil {
		return fmt.Errorf("alert test: %w", err)
	}
	if a.g.json {
		return writeJSON(a.stdout, alertJSON(al))
	}
	fmt.Fprintf(a.stdout, "raised %s\n", al.ID())
	if len(al.Deliveries) == 0 {
		fmt.Fprintln(a.stdout, "no sink takes test alerts")
	}
	var failed int
	for _, d := range al.Deliveries {
		if d.Delivered {
			fmt.Fprintf(a.stdout, "%s: delivered\n", d.Sink)
		} else {
			failed++
			fmt.Fprintf(a.stdout, "%s: failed (will retry): %s\n", d.Sink, d.Error)
		}
	}
	if failed > 0 {
		return fmt.Errorf("alert test: %d of %d sinks failed", failed, len(al.Deliveries))
	}
	return nil
}

// alertJSON is the --json shape of an alert (empty lists and maps, not null).
func alertJSON(al meta.Alert) meta.Alert {
	if al.Deliveries == nil {
		al.Deliveries = []meta.AlertDelivery{}
	}
	if al.Details == nil {
		al.Details = map[string]string{}
	}
	return al
}

func adminAlertsSpec() *cmdSpec {
	return &cmdSpec{
		name:  "admin alerts",
		short: "list fired alerts and their deliveries",
		long: `Lists the alerts the cluster raised, newest first: failed and partially failed
jobs, anomalies, missed scheduled runs, nodes down, degraded placement groups,
chunk nodes above 85% of their space, certificates near their end, failed verify
jobs, and tests. A condition (a node down) stays open until it ends and is
raised again only after that; an event (a failed job) is raised once.
--open shows only unresolved alerts, --limit the newest N (default 50).
Admin certificates (and nodes, for the status page).

With --json: {"alerts":[{"seq","key","kind","severity","subject","message",
"details","raised","resolved","deliveries":[{"sink","attempts","last_attempt",
"delivered","gave_up","error"}]}]}.`,
		examples: []string{"coffer admin alerts --open"},
		new:      func() command { return &adminAlertsCmd{limit: 50} },
	}
}

type adminAlertsCmd struct {
	open  bool
	limit int
}

func (c *adminAlertsCmd) addFlags(fs *flag.FlagSet) {
	fs.BoolVar(&c.open, "open", false, "only alerts whose condition has not ended")
	fs.IntVar(&c.limit, "limit", 50, "show at most this many, newest first (0: all)")
}

func (c *adminAlertsCmd) run(ctx context.Context, a *app, args []string) error {
	if len(args) > 0 {
		return usagef(adminAlertsSpec(), "admin alerts takes no arguments, got %q", args[0])
	}
	if c.limit < 0 {
		return usagef(adminAlertsSpec(), "--limit %d is negative", c.limit)
	}
	s, err := connect(ctx, a)
	if err != nil {
		return err
	}
	defer s.Close()
	als, err := s.meta.Alerts(ctx, meta.AlertFilter{Open: c.open, Limit: c.limit})
	if err != nil {
		return fmt.Errorf("alerts: %w", err)
	}
	if a.g.json {
		out := make([]meta.Alert, len(als))
		for i, al := range als {
			out[i] = alertJSON(al)
		}
		return writeJSON(a.stdout, struct {
			Alerts []meta.Alert `json:"alerts"`
		}{out})
	}
	if len(als) == 0 {
		fmt.Fprintln(a.stdout, "no alerts")
		return nil
	}
	tw := tabwriter.NewWriter(a.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tRAISED\tKIND\tSEVERITY\tSUBJECT\tSTATE\tDELIVERED\tMESSAGE")
	for _, al := range als {
		state := "open"
		if al.Resolved != nil {
			state = "resolved " + al.Resolved.Format(time.RFC3339)
		}
		var del []string
		for _, d := range al.Deliveries {
			switch {
			case d.Delivered:
				del = append(del, d.Sink)
			case d.GaveUp:
				del = append(del, d.Sink+" (gave up)")
			default:
				del = append(del, fmt.Sprintf("%s (%d failed)", d.Sink, d.Attempts))
			}
		}
		if len(del) == 0 {
			del = []string{"-"}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", al.ID(), al.Raised.Format(time.RFC3339), al.Kind, al.Severity, al.Subject, state,
			strings.Join(del, ","), al.Message)
	}
	return tw.Flush()
}
