// Package bpffs manages the directories in the BPF filesystem where Vigil pins what must
// outlive the agent (the capture ring and hooks, the steering hooks): making sure one
// exists on a mounted bpffs, and removing one with everything in it.
package bpffs

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// Root is where bpffs is conventionally mounted.
const Root = "/sys/fs/bpf"

// Ensure makes sure dir exists on a bpffs, mounting bpffs at Root when dir is below it and
// nothing is mounted there (container-like hosts leave it unmounted).
func Ensure(dir string) error {
	if !isBpffs(Root) && strings.HasPrefix(filepath.Clean(dir)+"/", Root+"/") {
		if err := unix.Mount("bpf", Root, "bpf", 0, ""); err != nil {
			return fmt.Errorf("bpffs is not mounted and mounting it failed (%w): run `mount -t bpf bpf %s`", err, Root)
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("pin directory: %w", err)
	}
	if !isBpffs(dir) {
		return fmt.Errorf("pin directory %s is not on a bpf filesystem", dir)
	}
	return nil
}

func isBpffs(p string) bool {
	var st unix.Statfs_t
	return unix.Statfs(p, &st) == nil && st.Type == unix.BPF_FS_MAGIC
}

// Unpin removes everything pinned in dir and dir itself: the pinned hooks detach (unless a
// running agent still holds them; the kernel frees them after an RCU grace period) and the
// maps are freed. Removing a directory that does not exist is not an error.
func Unpin(dir string) error {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading pin directory: %w", err)
	}
	var errs []error
	for _, e := range ents {
		if err := os.Remove(filepath.Join(dir, e.Name())); err != nil {
			errs = append(errs, fmt.Errorf("unpinning: %w", err))
		}
	}
	if err := os.Remove(dir); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, fmt.Errorf("removing pin directory: %w", err))
	}
	return errors.Join(errs...)
}
