package main

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/vigil-db/vigil/pkg/bpffs"
	"github.com/vigil-db/vigil/pkg/config"
)

// Capture kept across restarts (capture.keep_across_restarts) is pinned under pinRoot, in a
// directory named after the state directory: the state directory is what makes an agent
// the same agent again after a restart (its chain, its key, its capture state file), so
// the next agent on it, and only that one, adopts the pins.
const pinRoot = "/sys/fs/bpf/vigil"

// pinDirFor is the pin directory of the agent whose state directory is stateDir.
func pinDirFor(stateDir string) (string, error) {
	abs, err := filepath.Abs(stateDir)
	if err != nil {
		return "", fmt.Errorf("state directory: %w", err)
	}
	sum := sha256.Sum256([]byte(abs))
	return filepath.Join(pinRoot, hex.EncodeToString(sum[:])[:16]), nil
}

// steerPinDirFor is where steering that fails closed (steer_fail: closed) pins its hooks,
// beside the capture pins of the same state directory.
func steerPinDirFor(stateDir string) (string, error) {
	dir, err := pinDirFor(stateDir)
	return dir + "-steer", err
}

// captureStateFile records when capture last ran (capture.Config.StateFile).
func captureStateFile(stateDir string) string { return filepath.Join(stateDir, "capture.json") }

// lockFile, held (flock) by the running agent, keeps a second agent off its state
// directory: two would fork its chain, race on its head file and take each other's
// pinned capture.
const lockFile = "agent.lock"

// lockStateDir takes the state directory's lock for as long as the returned file stays
// open; the kernel releases it when the process dies, however it dies.
func lockStateDir(stateDir string) (*os.File, error) {
	path := filepath.Join(stateDir, lockFile)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("state directory lock: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			who := "another agent"
			if b, err := os.ReadFile(path); err == nil && len(strings.TrimSpace(string(b))) > 0 {
				who += " (pid " + strings.TrimSpace(string(b)) + ")"
			}
			return nil, fmt.Errorf("state directory %s is in use by %s: run one agent per state directory", stateDir, who)
		}
		return nil, fmt.Errorf("state directory lock: %w", err)
	}
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return f, nil
}

func newUnpinCmd() *cobra.Command {
	var stateDir string
	cmd := &cobra.Command{
		Use:   "unpin [--state-dir DIR]",
		Short: "Remove the capture and steering a stopped agent left pinned in the kernel (for uninstalling)",
		Long: `With capture.keep_across_restarts (the default), the kernel keeps capturing after the
agent stops, so that the next agent on the same state directory reads what it captured
meanwhile; with steer_fail: closed, the steering hooks stay and keep flagged workloads away
from their servers. Uninstalling, remove both: the hooks detach and the ring buffer is
freed. The next agent records the time it was not capturing as a gap event.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			dir, err := pinDirFor(stateDir)
			if err != nil {
				return err
			}
			steerDir, _ := steerPinDirFor(stateDir)
			// A running agent would go on capturing through the links it holds, and its
			// successor would find nothing to adopt.
			if _, err := os.Stat(stateDir); err == nil {
				lock, err := lockStateDir(stateDir)
				if err != nil {
					return fmt.Errorf("%w; stop it before unpinning", err)
				}
				defer lock.Close()
			}
			removed := false
			for _, d := range []struct{ dir, what string }{{dir, "capture"}, {steerDir, "steering"}} {
				if _, err := os.Stat(d.dir); errors.Is(err, os.ErrNotExist) {
					continue
				}
				if err := bpffs.Unpin(d.dir); err != nil {
					return err
				}
				removed = true
				fmt.Fprintf(cmd.OutOrStdout(), "removed the %s pinned for state directory %s (%s)\n", d.what, stateDir, d.dir)
			}
			if !removed {
				fmt.Fprintf(cmd.OutOrStdout(), "nothing pinned for state directory %s (%s)\n", stateDir, dir)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&stateDir, "state-dir", config.Default().StateDir, "the agent's state directory")
	return cmd
}
