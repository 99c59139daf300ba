package identity

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
)

// Container is what a cgroup path says about the workload in it.
type Container struct {
	// ID is the full 64-hex container id (what `docker ps --no-trunc`, crictl and a pod's
	// status.containerStatuses[].containerID show), empty outside a container.
	ID string
	// Runtime names the runtime that made the cgroup: docker, containerd, cri-o, podman;
	// empty when the path does not say (cgroupfs-driver Kubernetes paths).
	Runtime string
	// PodUID is the Kubernetes pod UID (with dashes), empty outside a pod.
	PodUID string
}

var (
	// A container's scope or directory, innermost wins. The prefixes are the runtimes'
	// systemd unit names: docker-<id>.scope, cri-containerd-<id>.scope, crio-<id>.scope,
	// libpod-<id>.scope; with the cgroupfs driver the directory is the bare id (docker,
	// containerd under kubepods/pod<uid>/, ECS) or crio-<id>/libpod-<id>.
	// The conmon processes CRI-O and podman place beside a container (crio-conmon-<id>,
	// libpod-conmon-<id>) are the runtime's, not the container's, and do not match.
	containerRe = regexp.MustCompile(`^(?:(docker|cri-containerd|crio|libpod)-)?([0-9a-f]{64})(?:\.scope)?$`)
	// A pod's slice or directory: kubepods-burstable-pod<uid>.slice (systemd driver, uid with
	// underscores) or pod<uid> (cgroupfs driver).
	podRe = regexp.MustCompile(`^(?:.*-)?pod([0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12})(?:\.slice)?$`)
)

var runtimeOfPrefix = map[string]string{
	"docker":         "docker",
	"cri-containerd": "containerd",
	"crio":           "cri-o",
	"libpod":         "podman",
}

// ParseCgroupPath reads a container id and pod UID out of a cgroup path, in the formats of
// docker, containerd, CRI-O and podman with either cgroup driver (systemd or cgroupfs), on
// cgroup v1 or v2, nested (kind, k3s in docker) or not. Segments are read from the leaf up,
// so a container nested in another (a kind node is itself a docker container) yields the
// innermost one, which is the one running the process.
func ParseCgroupPath(path string) Container {
	var c Container
	segs := strings.Split(strings.Trim(path, "/"), "/")
	for i := len(segs) - 1; i >= 0; i-- {
		s := segs[i]
		if c.ID == "" {
			if m := containerRe.FindStringSubmatch(s); m != nil {
				c.ID, c.Runtime = m[2], runtimeOfPrefix[m[1]]
				continue
			}
		}
		if m := podRe.FindStringSubmatch(s); m != nil {
			c.PodUID = strings.ReplaceAll(m[1], "_", "-")
			break
		}
	}
	return c
}

// ParseProcCgroup reads /proc/PID/cgroup content: the cgroup v2 line ("0::/path") first,
// then the v1 lines ("N:controllers:/path"), returning the first path that names a container.
// Hosts in hybrid mode put containers in the v1 hierarchies only; on pure v2 there is one line.
// It also returns the v2 path, which is what a cgroup id from eBPF resolves to.
func ParseProcCgroup(content []byte) (c Container, v2Path string) {
	var v1 []string
	sc := bufio.NewScanner(bytes.NewReader(content))
	for sc.Scan() {
		hier, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		_, path, ok := strings.Cut(rest, ":")
		if !ok {
			continue
		}
		if hier == "0" && strings.HasPrefix(rest, ":") {
			v2Path = path
			continue
		}
		v1 = append(v1, path)
	}
	for _, p := range append([]string{v2Path}, v1...) {
		if p == "" {
			continue
		}
		if c = ParseCgroupPath(p); c.ID != "" || c.PodUID != "" {
			return c, v2Path
		}
	}
	return Container{}, v2Path
}

// readProcCgroup reads and parses /proc/PID/cgroup.
func readProcCgroup(pid int) (Container, string, error) {
	b, err := os.ReadFile(filepath.Join(procRoot, strconv.Itoa(pid), "cgroup"))
	if err != nil {
		return Container{}, "", procErr(pid, err)
	}
	c, v2 := ParseProcCgroup(b)
	return c, v2, nil
}

// findCgroup2Mount returns where the cgroup v2 hierarchy is mounted, from
// /proc/self/mountinfo: /sys/fs/cgroup on pure v2 hosts, /sys/fs/cgroup/unified on hybrid
// ones, wherever an administrator mounted it otherwise. Only a mount of the hierarchy's root
// counts, since cgroup ids resolve to paths from that root.
func findCgroup2Mount() (string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return "", fmt.Errorf("finding the cgroup2 mount: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// id parent maj:min root mountpoint options [optional...] - fstype source superopts
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		if !ok {
			continue
		}
		pf, qf := strings.Fields(pre), strings.Fields(post)
		if len(pf) < 5 || len(qf) < 1 || qf[0] != "cgroup2" || pf[3] != "/" {
			continue
		}
		return unescapeMountinfo(pf[4]), nil
	}
	if err := sc.Err(); err != nil {
		return "", fmt.Errorf("reading /proc/self/mountinfo: %w", err)
	}
	return "", fmt.Errorf("no cgroup2 hierarchy is mounted (mount -t cgroup2 none /sys/fs/cgroup/unified): %w", ErrNotFound)
}

// unescapeMountinfo undoes the octal escapes (\040 for space) of mountinfo paths.
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
