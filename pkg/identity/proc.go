package identity

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// procRoot is where procfs is mounted. The agent reads the host's processes through it, so
// it must run in the host PID namespace (hostPID in Kubernetes).
const procRoot = "/proc"

// ErrNotFound says that the thing looked up (a process, a socket, a cgroup) does not exist,
// or no longer does: connections and processes come and go between the event and the lookup.
var ErrNotFound = errors.New("not found")

// Stat is what /proc/PID/stat says about a process that identity and discovery need.
type Stat struct {
	PID  int
	PPID int
	// Comm is the kernel's task name (at most 15 bytes), not the process title.
	Comm string
	// StartTime is the process start time in clock ticks since boot. Together with the pid it
	// names one process for the lifetime of the boot: a reused pid has a later start time.
	StartTime uint64
}

// ReadStat reads /proc/PID/stat.
func ReadStat(pid int) (Stat, error) {
	b, err := os.ReadFile(filepath.Join(procRoot, strconv.Itoa(pid), "stat"))
	if err != nil {
		return Stat{}, procErr(pid, err)
	}
	return parseStat(pid, b)
}

// parseStat parses the stat line. comm sits in parentheses and may itself contain spaces and
// parentheses, so the fields are counted from the last ')'.
func parseStat(pid int, b []byte) (Stat, error) {
	open := bytes.IndexByte(b, '(')
	end := bytes.LastIndexByte(b, ')')
	if open < 0 || end < open {
		return Stat{}, fmt.Errorf("parsing /proc/%d/stat: no comm field", pid)
	}
	// Fields after comm start at field 3 (state); ppid is field 4, starttime field 22.
	f := strings.Fields(string(b[end+1:]))
	if len(f) < 20 {
		return Stat{}, fmt.Errorf("parsing /proc/%d/stat: %d fields after comm", pid, len(f))
	}
	ppid, err := strconv.Atoi(f[1])
	if err != nil {
		return Stat{}, fmt.Errorf("parsing /proc/%d/stat ppid: %w", pid, err)
	}
	start, err := strconv.ParseUint(f[19], 10, 64)
	if err != nil {
		return Stat{}, fmt.Errorf("parsing /proc/%d/stat starttime: %w", pid, err)
	}
	return Stat{PID: pid, PPID: ppid, Comm: string(b[open+1 : end]), StartTime: start}, nil
}

// ReadUID returns the real uid of a process from /proc/PID/status. The real uid is what
// bpf_get_current_uid_gid reports too, so events enriched in the kernel and from /proc agree.
func ReadUID(pid int) (int, error) {
	b, err := os.ReadFile(filepath.Join(procRoot, strconv.Itoa(pid), "status"))
	if err != nil {
		return 0, procErr(pid, err)
	}
	for line := range strings.Lines(string(b)) {
		rest, ok := strings.CutPrefix(line, "Uid:")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			break
		}
		uid, err := strconv.Atoi(f[0])
		if err != nil {
			return 0, fmt.Errorf("parsing /proc/%d/status Uid: %w", pid, err)
		}
		return uid, nil
	}
	return 0, fmt.Errorf("parsing /proc/%d/status: no Uid line", pid)
}

// ReadExe returns the path of the process's executable as the process's own mount namespace
// names it. A binary replaced on disk while running (a package upgrade) keeps its old path
// with the kernel's " (deleted)" suffix removed; Deleted says so.
func ReadExe(pid int) (path string, deleted bool, err error) {
	p, err := os.Readlink(filepath.Join(procRoot, strconv.Itoa(pid), "exe"))
	if err != nil {
		return "", false, procErr(pid, err)
	}
	if s, ok := strings.CutSuffix(p, " (deleted)"); ok {
		return s, true, nil
	}
	return p, false, nil
}

// ReadCmdline returns the process's argv. Servers that rewrite their process title
// (PostgreSQL) show the title as the first element.
func ReadCmdline(pid int) ([]string, error) {
	b, err := os.ReadFile(filepath.Join(procRoot, strconv.Itoa(pid), "cmdline"))
	if err != nil {
		return nil, procErr(pid, err)
	}
	b = bytes.TrimRight(b, "\x00")
	if len(b) == 0 {
		return nil, nil
	}
	return strings.Split(string(b), "\x00"), nil
}

// Pids lists the processes (thread group leaders) in /proc.
func Pids() ([]int, error) {
	d, err := os.Open(procRoot)
	if err != nil {
		return nil, fmt.Errorf("listing processes: %w", err)
	}
	defer d.Close()
	names, err := d.Readdirnames(-1)
	if err != nil {
		return nil, fmt.Errorf("listing processes: %w", err)
	}
	pids := make([]int, 0, len(names))
	for _, n := range names {
		if pid, err := strconv.Atoi(n); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids, nil
}

// procErr wraps an error reading /proc/PID, mapping a vanished process to ErrNotFound.
func procErr(pid int, err error) error {
	if errors.Is(err, os.ErrNotExist) || errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("process %d: %w", pid, ErrNotFound)
	}
	return fmt.Errorf("process %d: %w", pid, err)
}
