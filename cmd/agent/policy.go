package main

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/vigil-db/vigil/pkg/event"
	"github.com/vigil-db/vigil/pkg/policy"
)

func newPolicyCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "policy", Short: "Check and evaluate policies"}
	cmd.AddCommand(newPolicyEvalCmd(), newPolicyDefaultCmd(), newPolicyCheckCmd())
	return cmd
}

func newPolicyEvalCmd() *cobra.Command {
	var (
		file, sql, protocol string
		req                 policy.Request
		groups              string
		source              string
	)
	cmd := &cobra.Command{
		Use:   "eval",
		Short: "Print the decision for one statement as one JSON line",
		Example: `  vigil policy eval --sql 'DELETE FROM orders'
  vigil policy eval --policy prod.yaml --sql 'SELECT * FROM users' --db-user app --groups dba,oncall`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if sql == "" {
				return fmt.Errorf("--sql is required")
			}
			if protocol != event.ProtocolPostgres && protocol != event.ProtocolMySQL {
				return fmt.Errorf("--protocol %q: want postgres or mysql", protocol)
			}
			engine, err := loadPolicy(file)
			if err != nil {
				return err
			}
			req.SQL, req.Protocol, req.Source = sql, protocol, source
			if groups != "" {
				req.Groups = strings.Split(groups, ",")
			}
			d := engine.Decide(&req)
			b, err := json.Marshal(d)
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), string(b))
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&file, "policy", "", "policy file (default: the shipped default policy)")
	f.StringVar(&sql, "sql", "", "the statement (several separated by ; are judged together)")
	f.StringVar(&protocol, "protocol", event.ProtocolPostgres, "postgres or mysql")
	f.StringVar(&req.DBUser, "db-user", "", "database user")
	f.StringVar(&req.Database, "database", "", "database")
	f.StringVar(&req.Application, "application", "", "application_name")
	f.StringVar(&req.ServerAddr, "server", "", "server address (host:port), for environment rules")
	f.StringVar(&groups, "groups", "", "comma-separated verified groups of the principal")
	f.StringVar(&source, "source", event.SourceProxy, "proxy (enforced) or ebpf (label only)")
	return cmd
}

func newPolicyDefaultCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "default",
		Short: "Print the shipped default policy (a starting point for your own)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, err := cmd.OutOrStdout().Write(policy.DefaultYAML())
			return err
		},
	}
}

func newPolicyCheckCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "check FILE",
		Short: "Load a policy file and report errors with their line and field",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if _, err := loadPolicy(args[0]); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: ok\n", args[0])
			return nil
		},
	}
}
