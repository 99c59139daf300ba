package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"text/tabwriter"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"

	"github.com/vigil-db/vigil/pkg/audit"
	"github.com/vigil-db/vigil/pkg/config"
	"github.com/vigil-db/vigil/pkg/forensics"
	"github.com/vigil-db/vigil/pkg/health"
	"github.com/vigil-db/vigil/pkg/store"
	"github.com/vigil-db/vigil/pkg/store/clickhouse"
	"github.com/vigil-db/vigil/pkg/store/local"
)

// openClickHouse opens a ClickHouse store from its URL.
func openClickHouse(u string, log *slog.Logger) (*clickhouse.Store, error) {
	cfg, err := clickhouse.ParseURL(u)
	if err != nil {
		return nil, err
	}
	return clickhouse.Open(cfg, log)
}

func openClickHouseReader(_ context.Context, u string) (store.Reader, func(), error) {
	s, err := openClickHouse(u, slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	if err != nil {
		return nil, nil, err
	}
	return s, func() { s.Close() }, nil
}

func newStoreCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "store", Short: "Manage the audit store"}
	var storeURL string
	migrate := &cobra.Command{
		Use:   "migrate",
		Short: "Create or upgrade the ClickHouse schema (the agent also does this at start-up)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, err := openClickHouse(storeURL, slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), nil)))
			if err != nil {
				return err
			}
			defer s.Close()
			applied, err := s.Migrate(cmd.Context())
			if err != nil {
				return err
			}
			if len(applied) == 0 {
				fmt.Fprintf(cmd.OutOrStdout(), "schema up to date (version %d)\n", clickhouse.SchemaVersion())
				return nil
			}
			fmt.Fprintf(cmd.OutOrStdout(), "applied migrations %v; schema at version %d\n", applied, clickhouse.SchemaVersion())
			return nil
		},
	}
	migrate.Flags().StringVar(&storeURL, "store", "", "clickhouse://[user[:password]@]host:port/db")
	_ = migrate.MarkFlagRequired("store")
	cmd.AddCommand(migrate)
	return cmd
}

// openClickHouseStore sets up ClickHouse as the store of record: the trail writes to a
// local spool in the state directory, and an exporter ships it. ClickHouse being away at
// start-up is not fatal: capture goes on into the spool and the exporter retries.
func openClickHouseStore(_ context.Context, cfg *config.Config, reg prometheus.Registerer, log *slog.Logger) (*agentStore, error) {
	ch, err := openClickHouse(cfg.Store, log)
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(cfg.StateDir, "spool")
	spool, err := local.Open(dir, localOptions(cfg, true, log), reg)
	if err != nil {
		ch.Close()
		return nil, fmt.Errorf("opening the spool %s: %w", dir, err)
	}
	target := redactURL(cfg.Store)
	// The exporter starts after the health server exists; until then reports go nowhere.
	var status atomic.Pointer[health.Status]
	report := func(err error, permanent bool) {
		st := status.Load()
		if st == nil {
			return
		}
		switch {
		case err == nil:
			st.Set("store", health.Component{Required: true, Ready: true, Detail: target})
		case permanent:
			// Only an operator can fix this: the agent is not doing its job.
			st.Set("store", health.Component{Required: true, Detail: err.Error()})
		default:
			// ClickHouse away: the spool holds the trail, as designed.
			st.Set("store", health.Component{Required: true, Ready: true, Detail: "spooling: " + err.Error()})
		}
	}
	x, err := clickhouse.NewExporter(ch, spool, clickhouse.ExporterConfig{Dir: filepath.Join(cfg.StateDir, "export"),
		HeadFile: filepath.Join(cfg.StateDir, audit.HeadFile), ShutdownTimeout: cfg.Export.ShutdownTimeout, Report: report, Logger: log.With("component", "export")}, reg)
	if err != nil {
		spool.Close()
		ch.Close()
		return nil, err
	}
	return &agentStore{
		appender: spool,
		run: func(ctx context.Context, st *health.Status) {
			status.Store(st)
			if err := x.Run(ctx); err != nil {
				log.Error("ClickHouse export stopped: events stay in the spool", "error", err)
			}
		},
		close: func() error {
			err := spool.Close()
			if cerr := ch.Close(); err == nil {
				err = cerr
			}
			return err
		},
	}, nil
}

func newForensicsCmd() *cobra.Command {
	var (
		storeURL, stateDir string
		params             []string
		asJSON             bool
	)
	cmd := &cobra.Command{
		Use:   "forensics [NAME]",
		Short: "List the shipped forensic queries, or run one against ClickHouse",
		Example: `  vigil forensics
  vigil forensics table-access --store clickhouse://127.0.0.1:9000/vigil --param table=customers --param since=7d
  vigil forensics raw-pii-receivers --param column=%card%   # on the agent's local store`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			out := cmd.OutOrStdout()
			if len(args) == 0 {
				if asJSON {
					return json.NewEncoder(out).Encode(forensics.List())
				}
				tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
				fmt.Fprintln(tw, "NAME\tPARAMETERS\tWHAT IT ANSWERS")
				for _, q := range forensics.List() {
					var ps []string
					for _, p := range q.Params {
						s := p.Name
						if p.Default != "" {
							s += "=" + p.Default
						}
						if p.Required {
							s += " (required)"
						}
						ps = append(ps, s)
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\n", q.Name, strings.Join(ps, " "), q.Title)
				}
				return tw.Flush()
			}
			if _, ok := forensics.Get(args[0]); !ok {
				return fmt.Errorf("no forensic query %q: `vigil forensics` lists them", args[0])
			}
			// The local store when asked for, or by default for the queries that run on it.
			local := strings.HasPrefix(storeURL, "local:") || (storeURL == "" && forensics.RunsLocally(args[0]))
			if storeURL == "" && !local {
				return fmt.Errorf("--store clickhouse://host:port/db is required to run a query")
			}
			kv := map[string]string{}
			for _, p := range params {
				k, v, ok := strings.Cut(p, "=")
				if !ok {
					return fmt.Errorf("--param %q: want k=v", p)
				}
				kv[k] = v
			}
			format := forensics.FormatTable
			if asJSON {
				format = forensics.FormatJSON
			}
			if local {
				r, closeFn, err := openReader(cmd.Context(), storeURL, stateDir)
				if err != nil {
					return err
				}
				defer closeFn()
				return forensics.RunLocal(cmd.Context(), r, args[0], kv, out, format)
			}
			st, err := openClickHouse(storeURL, slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: slog.LevelWarn})))
			if err != nil {
				return err
			}
			defer st.Close()
			return forensics.Run(cmd.Context(), st.Conn(), args[0], kv, out, format)
		},
	}
	cmd.Flags().StringVar(&storeURL, "store", "", "clickhouse://[user[:password]@]host:port/db; queries that also run on the local store (raw-pii-receivers) take local:DIR, the default")
	cmd.Flags().StringVar(&stateDir, "state-dir", config.Default().StateDir, "the agent's state directory (its local store is the default for local queries)")
	cmd.Flags().StringArrayVar(&params, "param", nil, "k=v query parameter (repeatable)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "JSON lines (or the query list as JSON)")
	return cmd
}
