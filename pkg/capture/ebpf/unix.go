package ebpf

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/vigil-db/vigil/pkg/cgroupfs"
)

// WatchProcess marks a server process (a postmaster) for Unix-socket and TLS capture: it,
// its current children and — tracked in the kernel at fork — its future children. Watched
// processes leave the set when they exit. The TLS uprobes fire in every process running
// the binary, so an unwatched server sharing it stays unrecorded only through this set.
func (t *Tracer) WatchProcess(tgid uint32) error {
	if _, err := os.Stat(fmt.Sprintf("/proc/%d", tgid)); err != nil {
		return fmt.Errorf("watching process %d: %w", tgid, err)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return errClosed
	}
	// The process goes in first: from then on the kernel adds children as they fork, so
	// the /proc scan below only has to find the ones that existed before.
	if err := t.objs.WatchedTgids.Put(tgid, uint8(1)); err != nil {
		return fmt.Errorf("watching process %d: %w", tgid, err)
	}
	children, err := childrenOf(tgid)
	if err != nil {
		return fmt.Errorf("listing children of process %d: %w", tgid, err)
	}
	for _, c := range children {
		if err := t.objs.WatchedTgids.Put(c, uint8(1)); err != nil {
			return fmt.Errorf("watching process %d, child of %d: %w", c, tgid, err)
		}
	}
	return nil
}

// childrenOf lists the processes whose parent is ppid, from /proc/*/stat.
func childrenOf(ppid uint32) ([]uint32, error) {
	dirs, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	var out []uint32
	for _, d := range dirs {
		pid, err := strconv.ParseUint(d.Name(), 10, 32)
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", d.Name(), "stat"))
		if err != nil {
			continue // exited meanwhile
		}
		if p, ok := parentFromStat(stat); ok && p == ppid {
			out = append(out, uint32(pid))
		}
	}
	return out, nil
}

// parentFromStat reads the ppid from /proc/PID/stat: "pid (comm) state ppid ...", where
// comm may itself contain spaces and parentheses, so fields are counted from the last ')'.
func parentFromStat(stat []byte) (uint32, bool) {
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, false
	}
	f := bytes.Fields(stat[i+1:])
	if len(f) < 2 {
		return 0, false
	}
	p, err := strconv.ParseUint(string(f[1]), 10, 32)
	return uint32(p), err == nil
}

// EnableUnix attaches (on) or detaches (off) the syscall tracepoints that capture Unix-socket
// traffic of watched processes. While attached, every syscall on the host takes the kernel's
// slower traced path, so switch it on only while such connections matter. After switching
// off, the Unix streams' offsets restart at 0 when switched on again.
//
// Switching off returns at once: the links close in the background (tens of milliseconds
// each), their hooks reported attached until closed, and may deliver a few records
// meanwhile. Switching on waits for that, since the kernel refuses a program on a tracepoint
// it is still attached to. Callers must not switch concurrently.
func (t *Tracer) EnableUnix(on bool) error {
	if on {
		t.detaching.Wait() // without t.mu: Stats and Hooks must not wait on the closes
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return errClosed
	}
	if on {
		return t.attachUnix()
	}
	t.detachUnix()
	return nil
}

func (t *Tracer) attachUnix() error {
	if t.unix[0].link != nil {
		return nil
	}
	if err := ensureTracefs(); err != nil {
		for _, hk := range t.unix {
			hk.setErr(err)
		}
		return err
	}
	// A new capture period: what passed while off was not seen, so streams must not
	// resume at their old offsets, which would hide that hole.
	t.unixEpoch++
	if err := t.objs.UnixEpoch.Put(uint32(0), t.unixEpoch); err != nil {
		err = fmt.Errorf("starting a Unix capture period: %w", err)
		for _, hk := range t.unix {
			hk.setErr(err)
		}
		return err
	}
	progs := []*ebpf.Program{t.objs.UnixRecvfromEnter, t.objs.UnixRecvfromExit, t.objs.UnixSendtoEnter, t.objs.UnixSendtoExit}
	for i, hk := range t.unix {
		name := filepath.Base(hk.status.Name)
		l, err := link.Tracepoint("syscalls", name, progs[i], nil)
		if err != nil {
			err = fmt.Errorf("attaching tracepoint syscalls/%s: %w", name, err)
			t.detachUnix()
			t.unix[i].setErr(err)
			return err
		}
		hk.link, hk.status = l, HookStatus{Name: hk.status.Name, Attached: true}
	}
	t.log.Info("ebpf Unix-socket capture on")
	return nil
}

// detachUnix takes the tracepoint links and closes them in the background; t.mu is held.
// Closing outside t.mu keeps Stats, which the capture goroutine reads, from waiting on it.
func (t *Tracer) detachUnix() {
	var hooks []*hook
	var links []link.Link
	for _, hk := range t.unix {
		if hk.link != nil {
			hooks = append(hooks, hk)
			links = append(links, hk.link)
			hk.link = nil
		} else {
			hk.status = HookStatus{Name: hk.status.Name}
		}
	}
	if len(links) == 0 {
		return
	}
	t.detaching.Add(1)
	go func() {
		defer t.detaching.Done()
		// Entry hooks first: a call already entered still completes through its exit hook.
		for i, l := range links {
			err := l.Close()
			t.mu.Lock()
			hooks[i].status = HookStatus{Name: hooks[i].status.Name}
			t.mu.Unlock()
			if err != nil {
				t.log.Error("detaching a Unix-socket capture tracepoint", "hook", hooks[i].status.Name, "err", err)
			}
		}
		t.log.Info("ebpf Unix-socket capture off")
	}()
}

// ensureTracefs makes sure tracefs is mounted: attaching a syscall tracepoint needs its
// event ids. Container-like hosts often leave it unmounted.
func ensureTracefs() error {
	for _, dir := range []string{"/sys/kernel/tracing", "/sys/kernel/debug/tracing"} {
		var st unix.Statfs_t
		if unix.Statfs(dir, &st) == nil && st.Type == unix.TRACEFS_MAGIC {
			return nil
		}
	}
	if err := unix.Mount("tracefs", "/sys/kernel/tracing", "tracefs", 0, ""); err != nil {
		return fmt.Errorf("tracefs is not mounted and mounting it failed (%w): run `mount -t tracefs tracefs /sys/kernel/tracing`", err)
	}
	return nil
}

// UnixConnectHook reports whether the connect_unix trigger is attached (nil), or why not. With
// it, Unix capture can stay off until a client connects to a PostgreSQL socket (UnixConnect
// records); without it, the caller has no cheap way to know and must keep Unix capture on.
func (t *Tracer) UnixConnectHook() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.unixConnect.status.Attached {
		return nil
	}
	return errors.New(t.unixConnect.status.Err)
}

// attachUnixConnect attaches the connect_unix program to the cgroup v2 root, where it runs
// for every process below (kernel ≥ 6.7). In a cgroup namespace that root is the namespace's,
// so clients outside it are not seen: run the agent in the host's cgroup namespace.
func (t *Tracer) attachUnixConnect() *hook {
	hk := &hook{status: HookStatus{Name: "cgroup/connect_unix"}}
	root, err := cgroupfs.Root()
	if err == nil {
		hk.link, err = link.AttachCgroup(link.CgroupOptions{Path: root, Attach: ebpf.AttachCgroupUnixConnect, Program: t.objs.UnixConnect})
		if err != nil {
			err = fmt.Errorf("attaching to cgroup %s (needs kernel ≥ 6.7): %w", root, err)
		}
	}
	if err != nil {
		hk.setErr(err)
		t.log.Warn("ebpf hook not attached: Unix-socket capture cannot be switched on on demand", "hook", hk.status.Name, "err", err)
		return hk
	}
	hk.status.Attached = true
	return hk
}
