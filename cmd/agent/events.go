package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"

	"github.com/spf13/cobra"

	"github.com/vigil-db/vigil/pkg/event"
	"github.com/vigil-db/vigil/pkg/store"
)

func newEventsCmd() *cobra.Command {
	var (
		storeURL, stateDir string
		since, until       string
		asJSON             bool
		q                  store.Query
		typ                string
	)
	cmd := &cobra.Command{
		Use:   "events",
		Short: "List stored events (a table for people, --json for JSON lines)",
		Example: `  vigil events --db-user app --since 1h
  vigil events --table customers --kind DELETE --json
  vigil events --store clickhouse://127.0.0.1:9000/vigil --limit 50`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var err error
			if q.Since, err = parseTimeFlag(since); err != nil {
				return fmt.Errorf("--since: %w", err)
			}
			if q.Until, err = parseTimeFlag(until); err != nil {
				return fmt.Errorf("--until: %w", err)
			}
			q.Type = event.Type(typ)
			if typ == "" && !asJSON {
				// Anchors are for verification; people scanning the table want statements.
				q.NotType = event.TypeAnchor
			}
			r, closeFn, err := openReader(cmd.Context(), storeURL, stateDir)
			if err != nil {
				return err
			}
			defer closeFn()
			out := bufio.NewWriter(cmd.OutOrStdout())
			defer out.Flush()
			if asJSON {
				return r.Read(cmd.Context(), q, func(e *event.Event) error {
					b, err := json.Marshal(e)
					if err != nil {
						return err
					}
					out.Write(b)
					return out.WriteByte('\n')
				})
			}
			return printTable(out, func(fn func(*event.Event) error) error { return r.Read(cmd.Context(), q, fn) })
		},
	}
	f := cmd.Flags()
	addStoreFlags(f, &storeURL, &stateDir)
	f.StringVar(&since, "since", "", "only events at or after this time (RFC 3339, or a duration such as 1h ago)")
	f.StringVar(&until, "until", "", "only events before this time (RFC 3339, or a duration)")
	f.StringVar(&q.DBUser, "db-user", "", "only this database user")
	f.StringVar(&q.Database, "database", "", "only this database")
	f.StringVar(&q.Table, "table", "", "only statements touching this table")
	f.StringVar(&q.Kind, "kind", "", "only this statement kind (SELECT, UPDATE, DDL, ...)")
	f.StringVar(&q.Decision, "decision", "", "only this decision (allow, alert, block, mask, approval_required)")
	f.StringVar(&q.SessionID, "session", "", "only this session id")
	f.StringVar(&typ, "type", "", "only this event type (statement, gap, anchor, approval)")
	f.IntVar(&q.Limit, "limit", 0, "only the last N matching events")
	f.BoolVar(&asJSON, "json", false, "JSON lines, every field")
	return cmd
}

// parseTimeFlag accepts RFC 3339 or a duration meaning "that long ago".
func parseTimeFlag(s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	d, err := time.ParseDuration(strings.TrimSpace(strings.TrimSuffix(s, "ago")))
	if err != nil {
		return time.Time{}, fmt.Errorf("%q is neither RFC 3339 nor a duration such as 90m", s)
	}
	return time.Now().Add(-d), nil
}

// printTable writes one line per event, the columns a person scans first.
func printTable(w io.Writer, each func(func(*event.Event) error) error) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "TIME\tSEQ\tSRC\tUSER@DB\tCLIENT\tKIND\tDECISION\tROWS\tDURATION\tSTATEMENT")
	n := 0
	err := each(func(e *event.Event) error {
		n++
		stmt, kind := e.Statement, e.Kind
		switch e.Type {
		case event.TypeGap:
			lost := fmt.Sprintf("%d lost", e.Lost)
			if e.Lost == 0 {
				lost = "loss of unknown size"
			}
			kind, stmt = "GAP", lost+": "+e.Detail
		case event.TypeAnchor:
			kind, stmt = "ANCHOR", "signed chain checkpoint "+short(e.PrevHash, 16)
		case event.TypeFault:
			kind, stmt = "FAULT", e.Detail
		case event.TypeChain, event.TypeFlag:
			kind, stmt = strings.ToUpper(string(e.Type)), e.Detail
		case event.TypeApproval:
			// The step is what happened; the statement is the request's, on its own event.
			kind, stmt = "APPROVAL", e.ApprovalID+" "+e.Detail
		case event.TypeStatement:
			if e.Error != "" {
				stmt = "[" + e.Error + "] " + stmt
			}
			if e.Detail != "" {
				stmt += "  (" + e.Detail + ")"
			}
			if len(e.MaskedColumns) > 0 {
				stmt += "  masked:" + strings.Join(e.MaskedColumns, ",")
			}
		}
		decision := e.Decision
		if e.Rule != "" {
			decision += "(" + e.Rule + ")"
		}
		userdb := e.DBUser + "@" + e.Database
		if userdb == "@" {
			userdb = ""
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n",
			e.Time.Local().Format("15:04:05.000"), e.Seq, e.Source, userdb, clientOf(e), kind,
			decision, rowsOf(e), durationOf(e), oneLine(stmt, 100))
		return nil
	})
	if err != nil {
		return err
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if n == 0 {
		fmt.Fprintln(w, "(no events match)")
	}
	return nil
}

func clientOf(e *event.Event) string {
	if p := e.Process; p != nil && p.PID != 0 {
		s := p.Comm + "[" + strconv.Itoa(int(p.PID)) + "]"
		if p.ContainerID != "" {
			s += " ctr:" + short(p.ContainerID, 12)
		}
		return s
	}
	if e.ClientAddr != "" {
		return e.ClientAddr
	}
	return "-"
}

func rowsOf(e *event.Event) string {
	if e.Type != event.TypeStatement {
		return ""
	}
	return strconv.FormatInt(e.Rows, 10)
}

func durationOf(e *event.Event) string {
	if e.Type != event.TypeStatement {
		return ""
	}
	return (time.Duration(e.DurationUS) * time.Microsecond).String()
}

func short(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// oneLine folds whitespace so a statement fits a table row.
func oneLine(s string, max int) string {
	var b strings.Builder
	space := false
	for _, r := range s {
		if unicode.IsSpace(r) {
			space = true
			continue
		}
		if space && b.Len() > 0 {
			b.WriteByte(' ')
		}
		space = false
		b.WriteRune(r)
		if b.Len() >= max {
			return b.String() + "…"
		}
	}
	return b.String()
}
