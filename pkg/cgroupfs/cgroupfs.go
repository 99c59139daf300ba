// Package cgroupfs finds the cgroup v2 hierarchy that Vigil's cgroup programs attach to.
package cgroupfs

import (
	"bufio"
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// MountDir is where the agent mounts the cgroup v2 hierarchy when no one has.
const MountDir = "/run/vigil/cgroup2"

// Root finds a mount of the cgroup v2 hierarchy's root in /proc/self/mountinfo, or mounts
// one at MountDir: hybrid and container-like hosts often have only v1 mounted, while the
// hierarchy itself always exists. In a cgroup namespace the root is the namespace's, so
// programs attached there see only the processes below it.
func Root() (string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return "", err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// id parent maj:min root mountpoint options [optional...] - fstype source superopts
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		pf, qf := strings.Fields(pre), strings.Fields(post)
		// A mount point with escapes in mountinfo (a space in it, say) is passed over; the
		// agent then mounts its own.
		if ok && len(pf) >= 5 && len(qf) >= 1 && qf[0] == "cgroup2" && pf[3] == "/" && !strings.Contains(pf[4], `\`) {
			return pf[4], nil
		}
	}
	if err := sc.Err(); err != nil {
		return "", fmt.Errorf("reading /proc/self/mountinfo: %w", err)
	}
	if err := os.MkdirAll(MountDir, 0o755); err != nil {
		return "", fmt.Errorf("no cgroup2 mount, and creating %s failed: %w", MountDir, err)
	}
	if err := unix.Mount("none", MountDir, "cgroup2", 0, ""); err != nil {
		return "", fmt.Errorf("no cgroup2 mount, and mounting one failed (%w): run `mount -t cgroup2 none %s`", err, MountDir)
	}
	return MountDir, nil
}
