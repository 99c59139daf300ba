package main

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/vigil-db/vigil/pkg/audit"
)

func newVerifyCmd() *cobra.Command {
	var (
		storeURL, stateDir string
		asJSON             bool
	)
	cmd := &cobra.Command{
		Use:   "verify",
		Short: "Check the trail's hash chain, signatures and sequence; exit 1 on tampering or loss",
		Long: `Check the trail: every event's hash, the chain of prev_hash links, seq continuity, the
signatures of anchor events (with the agent's public key from --state-dir) and, with the
agent's signed head file, that nothing was cut from the tail. Exits 0 when the trail is
intact (warnings, such as gaps the agent itself recorded, are printed), 1 otherwise.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			pub, head, err := audit.LoadState(stateDir)
			if err != nil {
				fmt.Fprintf(cmd.ErrOrStderr(), "warning: %v: anchor signatures and the tail will not be checked\n", err)
				pub, head = nil, nil
			}
			r, closeFn, err := openReader(cmd.Context(), storeURL, stateDir)
			if err != nil {
				return err
			}
			defer closeFn()
			rep, err := audit.Verify(cmd.Context(), r, pub, head)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if asJSON {
				b, _ := json.Marshal(rep)
				fmt.Fprintln(out, string(b))
			} else {
				for _, a := range rep.Agents {
					fmt.Fprintf(out, "agent %s: %d events, seq %d..%d, %d anchors, signed to seq %d, %d gap events (%d events lost)\n",
						a.AgentID, a.Events, a.FirstSeq, a.LastSeq, a.Anchors, a.SignedTo, a.Gaps, a.Lost)
				}
				for _, p := range rep.Problems {
					fmt.Fprintln(out, p.String())
				}
				if rep.Omitted > 0 {
					fmt.Fprintf(out, "... and %d more problems\n", rep.Omitted)
				}
			}
			if !rep.OK() {
				return &exitError{code: 1, err: errors.New("the trail is not intact")}
			}
			if !asJSON {
				// Recorded loss is no tampering, but the trail is not whole either: say so
				// where an operator looks first.
				var gaps, lost uint64
				for _, a := range rep.Agents {
					gaps, lost = gaps+a.Gaps, lost+a.Lost
				}
				switch {
				case lost > 0:
					fmt.Fprintf(out, "chain intact, trail incomplete: the agent recorded %d lost events in %d gap events (see the warnings above)\n", lost, gaps)
				case gaps > 0:
					fmt.Fprintf(out, "chain intact, trail incomplete: the agent recorded %d gap events, losses of unknown size (see the warnings above)\n", gaps)
				default:
					fmt.Fprintln(out, "trail intact")
				}
			}
			return nil
		},
	}
	addStoreFlags(cmd.Flags(), &storeURL, &stateDir)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the report as JSON")
	return cmd
}
