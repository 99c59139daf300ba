// Command vigil is Vigil's single binary: the agent (`vigil run`) and the tools that read
// what it recorded (`vigil events`, `vigil verify`, `vigil forensics`, `vigil policy eval`).
// The command-line contract is in docs/design.md; extend it, never break it.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

// exitError carries a specific exit code (e.g. `vigil verify` finding a broken chain)
// without printing usage.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := newRootCmd().ExecuteContext(ctx)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "vigil:", err)
		var ee *exitError
		if errors.As(err, &ee) {
			os.Exit(ee.code)
		}
		os.Exit(1)
	}
}

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:           "vigil",
		Short:         "Database governance and observability from the kernel up",
		Version:       version,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(
		newRunCmd(),
		newEventsCmd(),
		newVerifyCmd(),
		newPolicyCmd(),
		newForensicsCmd(),
		newStoreCmd(),
		newFlagsCmd(),
		newUnpinCmd(),
		newApprovalsCmd(),
		newLoginCmd(),
		newPIICmd(),
	)
	return root
}
