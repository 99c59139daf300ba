package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

	"github.com/vigil-db/vigil/pkg/audit"
)

// headReader is a store that holds signed heads too (ClickHouse, where the exporter
// publishes them), so that it can be verified from a machine without the agent's state
// directory.
type headReader interface {
	SignedHeads(ctx context.Context) ([][]byte, error)
}

func newVerifyCmd() *cobra.Command {
	var (
		storeURL, stateDir string
		pubkeys, heads     []string
		asJSON, strict     bool
	)
	cmd := &cobra.Command{
		Use:   "verify",
		Short: "Check the trail's hash chains, signatures and sequence; exit 1 on tampering or loss",
		Long: `Check every chain in the store (one per agent state directory; several may share an agent
id): every event's hash, the chain of prev_hash links, seq continuity, the signatures of
anchor events with the trusted public keys, and, with a chain's signed head, that nothing
was cut from its tail. It reports each chain it saw and what it could not check.

Trusted keys come from --pubkey (repeatable) and from agent.pub in --state-dir; signed
heads from --head (repeatable), from head.json in --state-dir, and from the store itself
where it holds them (ClickHouse: the exporter publishes them), so a ClickHouse store can be
verified from another machine with only --pubkey. Exits 0 when the trail is intact
(warnings, such as gaps the agent itself recorded or a tail that could not be checked, are
printed), 1 otherwise; with --strict also 1 when a signature or a chain's tail could not
be checked.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			errOut := cmd.ErrOrStderr()
			trust, err := loadVerifyTrust(errOut, cmd.Flags().Changed("state-dir") || len(pubkeys) == 0, stateDir, pubkeys, heads)
			if err != nil {
				return err
			}
			r, closeFn, err := openReader(ctx, storeURL, stateDir)
			if err != nil {
				return err
			}
			defer closeFn()
			if hr, ok := r.(headReader); ok {
				hs, err := hr.SignedHeads(ctx)
				if err != nil {
					return fmt.Errorf("reading the signed heads from the store: %w", err)
				}
				for _, b := range hs {
					h, err := audit.ParseHead(b)
					if err != nil {
						// Not fatal: the chain is then checked as if the store had no head.
						fmt.Fprintf(errOut, "warning: a signed head in the store cannot be read: %v\n", err)
						continue
					}
					trust.Heads = append(trust.Heads, h)
				}
			}
			rep, err := audit.Verify(ctx, r, trust)
			if err != nil {
				return err
			}
			printReport(cmd.OutOrStdout(), rep, asJSON)
			if !rep.OK() {
				return &exitError{code: 1, err: errors.New("the trail is not intact")}
			}
			if un := rep.Unchecked(); strict && len(un) > 0 {
				return &exitError{code: 1, err: fmt.Errorf("--strict: %d things could not be checked (%s)", len(un), un[0].Detail)}
			}
			if !asJSON {
				// Recorded loss is no tampering, but the trail is not whole either: say so
				// where an operator looks first.
				var gaps, lost, unsized uint64
				for _, c := range rep.Chains {
					gaps, lost, unsized = gaps+c.Gaps, lost+c.Lost, unsized+c.UnsizedGaps
				}
				out := cmd.OutOrStdout()
				if gaps > 0 {
					fmt.Fprintf(out, "chain intact, trail incomplete: the agent recorded %s in %d gap events (see the warnings above); %s\n", lostWords(lost, unsized), gaps, chains(len(rep.Chains)))
				} else {
					fmt.Fprintf(out, "trail intact: %s\n", chains(len(rep.Chains)))
				}
			}
			return nil
		},
	}
	addStoreFlags(cmd.Flags(), &storeURL, &stateDir)
	cmd.Flags().StringArrayVar(&pubkeys, "pubkey", nil, "a trusted public key file (an agent's agent.pub; repeatable)")
	cmd.Flags().StringArrayVar(&heads, "head", nil, "a signed head file (an agent's head.json; repeatable)")
	cmd.Flags().BoolVar(&strict, "strict", false, "fail when a signature or a chain's tail cannot be checked (no key, no signed head)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the report as JSON")
	return cmd
}

// loadVerifyTrust gathers the trusted keys and heads. The state directory's are used when
// it was given, or when no --pubkey was (the default state directory, as on the agent's
// own host); missing files there are a warning, not an error.
func loadVerifyTrust(errOut io.Writer, useStateDir bool, stateDir string, pubkeys, heads []string) (audit.Trust, error) {
	var trust audit.Trust
	if useStateDir {
		t, err := audit.LoadTrust(stateDir)
		switch {
		case errors.Is(err, os.ErrNotExist) && len(pubkeys) > 0:
		case err != nil:
			fmt.Fprintf(errOut, "warning: %v: no key or head from the state directory %s\n", err, stateDir)
		default:
			trust = t
		}
	}
	for _, p := range pubkeys {
		k, err := audit.LoadPublicKey(p)
		if err != nil {
			return trust, fmt.Errorf("--pubkey: %w", err)
		}
		trust.Keys = append(trust.Keys, k)
	}
	for _, p := range heads {
		h, err := audit.ReadHead(p)
		if err != nil {
			return trust, fmt.Errorf("--head: %w", err)
		}
		trust.Heads = append(trust.Heads, h)
	}
	return trust, nil
}

func printReport(out io.Writer, rep *audit.Report, asJSON bool) {
	if asJSON {
		b, _ := json.Marshal(rep)
		fmt.Fprintln(out, string(b))
		return
	}
	for _, c := range rep.Chains {
		tail := "tail not checked"
		if c.TailChecked {
			tail = "tail checked"
		}
		fmt.Fprintf(out, "chain %s: %d events, seq %d..%d, key %s, %d anchors, signed to seq %d, %s, %d gap events (%d events lost)\n",
			c.Name(), c.Events, c.FirstSeq, c.LastSeq, orNone(c.KeyID), c.Anchors, c.SignedTo, tail, c.Gaps, c.Lost)
	}
	for _, p := range rep.Problems {
		fmt.Fprintln(out, p.String())
	}
	if rep.Omitted > 0 {
		fmt.Fprintf(out, "... and %d more problems\n", rep.Omitted)
	}
}

// lostWords says how much the gap events record as lost: a gap whose count the agent
// could not know (a restart's window, a ring that overflowed while no agent read it) has
// Lost 0.
func lostWords(lost, unsized uint64) string {
	switch {
	case unsized == 0:
		return fmt.Sprintf("%d lost events", lost)
	case lost == 0:
		return "losses of unknown size"
	}
	return fmt.Sprintf("%d lost events and losses of unknown size", lost)
}

func chains(n int) string {
	if n == 1 {
		return "1 chain"
	}
	return fmt.Sprintf("%d chains", n)
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}
