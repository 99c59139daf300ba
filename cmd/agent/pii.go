package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/spf13/cobra"

	"github.com/vigil-db/vigil/pkg/config"
	"github.com/vigil-db/vigil/pkg/enforce"
)

func newPIICmd() *cobra.Command {
	cmd := &cobra.Command{Use: "pii", Short: "Find the PII columns of a database"}
	cmd.AddCommand(newPIIScanCmd())
	return cmd
}

func newPIIScanCmd() *cobra.Command {
	var (
		dsn, configFile, policyFile, database string
		asJSON                                bool
	)
	cmd := &cobra.Command{
		Use:   "scan",
		Short: "List a database's sensitive columns and why: by name, by COMMENT or SECURITY LABEL tag, or found by sampling values",
		Long: `scan finds sensitive columns as the proxy does: the policy's sensitive columns and name
dictionary, the catalog's tags (COMMENT vigil:pii, [pii], SECURITY LABEL), and discovery, which
samples each table's values with the detectors (bounded by the policy's sensitive.discovery
settings). It connects with --dsn, or as the catalog login of the configured proxy's upstream.`,
		Example: `  vigil pii scan --dsn 'host=127.0.0.1 user=postgres dbname=app'
  vigil pii scan --config /etc/vigil/vigil.yaml --database app --json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if (dsn == "") == (configFile == "") {
				return fmt.Errorf("give --dsn or --config (the proxy's upstream and catalog login)")
			}
			var pcfg *pgconn.Config
			if dsn != "" {
				c, err := pgconn.ParseConfig(dsn)
				if err != nil {
					return fmt.Errorf("--dsn: %w", err)
				}
				pcfg = c
			} else {
				cfg, err := config.Load(configFile)
				if err != nil {
					return err
				}
				if len(cfg.Proxies) == 0 {
					return fmt.Errorf("%s configures no proxy: give --dsn", configFile)
				}
				if policyFile == "" {
					policyFile = cfg.Policy
				}
				cc, err := catalogConfig(cfg, cfg.Proxies[0].Upstream, database)
				if err != nil {
					return err
				}
				pcfg = &cc.Config
			}
			if database != "" {
				pcfg.Database = database
			}
			engine, err := loadPolicy(policyFile)
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), 10*time.Second)
			conn, err := pgconn.ConnectConfig(ctx, pcfg)
			cancel()
			if err != nil {
				return fmt.Errorf("connecting: %w", err)
			}
			defer conn.Close(context.Background())
			found, skipped, err := enforce.Scan(cmd.Context(), conn, engine)
			for _, s := range skipped {
				fmt.Fprintf(cmd.ErrOrStderr(), "not sampled: %s\n", s)
			}
			out := cmd.OutOrStdout()
			if asJSON {
				enc := json.NewEncoder(out)
				for _, f := range found {
					if e := enc.Encode(f); e != nil {
						return e
					}
				}
				return err
			}
			tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "COLUMN\tTYPE\tSOURCE\tCATEGORY\tSHARE\tSTRATEGY\tWHY")
			for _, f := range found {
				share := ""
				if f.Sampled > 0 {
					share = fmt.Sprintf("%.0f%% of %d", f.Share*100, f.Sampled)
				}
				fmt.Fprintf(tw, "%s.%s.%s\t%s\t%s\t%s\t%s\t%s\t%s\n", f.Schema, f.Table, f.Column, f.Type, f.Source,
					f.Category, share, f.Strategy, strings.ReplaceAll(f.Detail, "\t", " "))
			}
			if len(found) == 0 {
				fmt.Fprintln(tw, "(no sensitive columns found)")
			}
			if e := tw.Flush(); e != nil {
				return e
			}
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&dsn, "dsn", "", "connection string (libpq keywords or a postgres:// URL)")
	f.StringVar(&configFile, "config", "", "agent configuration: scan its first proxy's upstream as its catalog login")
	f.StringVar(&policyFile, "policy", "", "policy file (default: the configuration's, else the shipped default)")
	f.StringVar(&database, "database", "", "database to scan (default: the DSN's, or postgres)")
	f.BoolVar(&asJSON, "json", false, "one JSON object per column")
	return cmd
}
