// Package identity says which process, container and Kubernetes pod is behind a database
// connection, from /proc, cgroups, the container runtime's files and sock_diag, without an
// API server. The model is Tetragon's process identity: a process is named by pid plus start
// time, so a reused pid is never mistaken for the process that had it before. Lookups happen
// once per connection, not per statement, and are cached.
package identity

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vigil-db/vigil/pkg/event"
)

// Options configure a Resolver. The zero value suits an agent running on the host.
type Options struct {
	// HostRoot is where the host's root filesystem is visible: "/" on the host; for an agent
	// in a container, a hostPath mount of / or "/proc/1/root" (with hostPID). The container
	// runtime's bundles and the kubelet's pod volumes are read under it.
	HostRoot string
	// CgroupRoot is where the cgroup v2 hierarchy is mounted; found in
	// /proc/self/mountinfo when empty.
	CgroupRoot string
	// CacheSize bounds each cache (processes, containers, cgroups); default 8192.
	CacheSize int
	// PodLabels, when set, adds pods' labels from the Kubernetes API server.
	PodLabels *PodLabels
	Logger    *slog.Logger
}

// minWalkInterval keeps a stream of unknown cgroup ids from turning into a stream of walks
// of the whole cgroup tree.
const minWalkInterval = time.Second

// Resolver looks processes and cgroups up and caches the answers. Safe for concurrent use.
type Resolver struct {
	opts Options
	log  *slog.Logger

	mu    sync.Mutex
	procs *lru[procKey, procEntry]
	pods  *lru[string, podResult] // by container id

	// cgMu guards the cgroup state apart from mu, so that a walk of the hierarchy does not
	// hold up process lookups.
	cgMu     sync.Mutex
	cgroups  *lru[uint64, string] // cgroup id → path from the v2 root
	lastWalk time.Time
	cgRoot   string   // resolved CgroupRoot
	cgRootFD *os.File // open handle of CgroupRoot for open_by_handle_at
}

type procKey struct {
	pid   int
	start uint64
}

type procEntry struct {
	comm string // exec keeps pid and start time but changes comm: a changed comm is a miss
	p    event.Process
	pod  string // pod UID, for its labels (which change, so are not cached here)
}

type podResult struct {
	meta podMeta
	ok   bool
}

// New returns a Resolver.
func New(opts Options) *Resolver {
	if opts.HostRoot == "" {
		opts.HostRoot = "/"
	}
	if opts.CacheSize <= 0 {
		opts.CacheSize = 8192
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	return &Resolver{
		opts:    opts,
		log:     log.With("component", "identity"),
		procs:   newLRU[procKey, procEntry](opts.CacheSize),
		pods:    newLRU[string, podResult](opts.CacheSize),
		cgroups: newLRU[uint64, string](opts.CacheSize),
	}
}

// Close releases the cgroup root handle.
func (r *Resolver) Close() error {
	r.cgMu.Lock()
	defer r.cgMu.Unlock()
	if r.cgRootFD != nil {
		err := r.cgRootFD.Close()
		r.cgRootFD = nil
		return err
	}
	return nil
}

// Lookup returns the identity of a process: pid, real uid, comm, exe (as the process's mount
// namespace names it), and where it runs in a container, its container id, pod (name where
// the runtime recorded it, else UID), namespace and service account. It returns an error
// wrapping ErrNotFound when the process is gone. The answer is cached by pid and start time,
// so a reused pid is a miss; an exec (same pid and start time) is a miss too when it changed
// comm. The caller gets its own copy.
func (r *Resolver) Lookup(pid int) (*event.Process, error) {
	st, err := ReadStat(pid)
	if err != nil {
		return nil, err
	}
	key := procKey{pid, st.StartTime}
	r.mu.Lock()
	e, ok := r.procs.get(key)
	r.mu.Unlock()
	if ok && e.comm == st.Comm {
		return r.withLabels(cloneProcess(&e.p), e.pod), nil
	}

	uid, err := ReadUID(pid)
	if err != nil {
		return nil, err
	}
	uid32 := int32(uid)
	p := event.Process{PID: int32(pid), UID: &uid32, Comm: st.Comm}
	// Kernel threads have no exe; a process that exited meanwhile is caught below.
	if exe, _, err := ReadExe(pid); err == nil {
		p.Exe = exe
	}
	c, v2, err := readProcCgroup(pid)
	if err != nil {
		return nil, err
	}
	pod := r.fillContainer(&p, c)
	p.Cgroup = v2

	// The pid may have exited and been reused while the files above were read.
	if again, err := ReadStat(pid); err != nil || again.StartTime != st.StartTime {
		return nil, fmt.Errorf("process %d exited during lookup: %w", pid, ErrNotFound)
	}
	r.mu.Lock()
	r.procs.put(key, procEntry{comm: st.Comm, p: p, pod: pod})
	r.mu.Unlock()
	return r.withLabels(cloneProcess(&p), pod), nil
}

// fillContainer sets the container and pod fields of p from a parsed cgroup path and, for a
// container, from its runtime bundle (cached by container id). It returns the pod's UID.
func (r *Resolver) fillContainer(p *event.Process, c Container) (podUID string) {
	p.ContainerID = c.ID
	p.Pod = c.PodUID
	if c.ID == "" {
		return c.PodUID
	}
	r.mu.Lock()
	res, ok := r.pods.get(c.ID)
	r.mu.Unlock()
	if !ok {
		meta, err := readPodMeta(r.log, r.opts.HostRoot, c.ID)
		if err != nil && !errors.Is(err, ErrNotFound) {
			r.log.Debug("reading pod metadata", "container_id", c.ID, "err", err)
		}
		res = podResult{meta: meta, ok: err == nil}
		r.mu.Lock()
		r.pods.put(c.ID, res)
		r.mu.Unlock()
	}
	if !res.ok {
		return c.PodUID
	}
	if res.meta.Name != "" {
		p.Pod = res.meta.Name
	}
	p.Namespace = res.meta.Namespace
	p.ServiceAccount = res.meta.ServiceAccount
	p.Image = res.meta.Image
	if res.meta.UID != "" {
		return res.meta.UID
	}
	return c.PodUID
}

// withLabels adds the labels of the pod with this UID, when pod labels are configured.
func (r *Resolver) withLabels(p *event.Process, podUID string) *event.Process {
	if r.opts.PodLabels != nil && podUID != "" {
		p.Labels, _ = r.opts.PodLabels.Labels(podUID)
	}
	return p
}

func cloneProcess(p *event.Process) *event.Process {
	c := *p
	if p.UID != nil {
		uid := *p.UID
		c.UID = &uid
	}
	return &c
}

// CgroupIdentity returns the container and pod fields for a cgroup id as eBPF reports it
// (bpf_get_current_cgroup_id): for connections whose process is not known, only its cgroup.
func (r *Resolver) CgroupIdentity(id uint64) (*event.Process, error) {
	path, err := r.CgroupPath(id)
	if err != nil {
		return nil, err
	}
	p := event.Process{Cgroup: path}
	pod := r.fillContainer(&p, ParseCgroupPath(path))
	return r.withLabels(&p, pod), nil
}

// CgroupPath resolves a cgroup v2 id (the cgroup directory's inode number, which is what
// bpf_get_current_cgroup_id returns) to its path from the hierarchy's root, such as
// /kubepods.slice/.../cri-containerd-<id>.scope. It asks the kernel for the directory by
// handle (open_by_handle_at, O(1), needs CAP_DAC_READ_SEARCH) and falls back to walking the
// hierarchy, at most once a second. Answers are cached without expiry: kernfs allocates ids
// cyclically and bumps a generation in the upper 32 bits on wrap, so an id is not reused
// within a boot.
func (r *Resolver) CgroupPath(id uint64) (string, error) {
	r.cgMu.Lock()
	defer r.cgMu.Unlock()
	if p, ok := r.cgroups.get(id); ok {
		return p, nil
	}
	if err := r.openCgroupRoot(); err != nil {
		return "", err
	}
	p, err := r.cgroupPathByHandle(id)
	if err == nil {
		r.cgroups.put(id, p)
		return p, nil
	}
	if !errors.Is(err, ErrNotFound) {
		r.log.Debug("cgroup lookup by handle failed, walking the hierarchy", "cgroup_id", id, "err", err)
	}
	if time.Since(r.lastWalk) < minWalkInterval {
		return "", fmt.Errorf("cgroup %d: %w", id, ErrNotFound)
	}
	r.lastWalk = time.Now()
	if err := r.walkCgroups(); err != nil {
		return "", err
	}
	if p, ok := r.cgroups.get(id); ok {
		return p, nil
	}
	return "", fmt.Errorf("cgroup %d: %w", id, ErrNotFound)
}

func (r *Resolver) openCgroupRoot() error {
	if r.cgRootFD != nil {
		return nil
	}
	root := r.opts.CgroupRoot
	if root == "" {
		var err error
		if root, err = findCgroup2Mount(); err != nil {
			return err
		}
	}
	f, err := os.Open(root)
	if err != nil {
		return fmt.Errorf("opening the cgroup2 root: %w", err)
	}
	r.cgRoot, r.cgRootFD = filepath.Clean(root), f
	return nil
}

// fileIDKernfs is FILEID_KERNFS: a kernfs file handle is the node's 64-bit id, which for a
// cgroup is its cgroup id.
const fileIDKernfs = 0xfe

func (r *Resolver) cgroupPathByHandle(id uint64) (string, error) {
	var h [8]byte
	binary.NativeEndian.PutUint64(h[:], id)
	fd, err := unix.OpenByHandleAt(int(r.cgRootFD.Fd()), unix.NewFileHandle(fileIDKernfs, h[:]), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC)
	if errors.Is(err, unix.ESTALE) || errors.Is(err, unix.ENOENT) {
		return "", fmt.Errorf("cgroup %d: %w", id, ErrNotFound)
	}
	if err != nil {
		return "", fmt.Errorf("open_by_handle_at cgroup %d: %w", id, err)
	}
	defer unix.Close(fd)
	abs, err := os.Readlink("/proc/self/fd/" + strconv.Itoa(fd))
	if err != nil {
		return "", fmt.Errorf("reading the path of cgroup %d: %w", id, err)
	}
	return r.relCgroup(abs)
}

// relCgroup turns a path under the mounted hierarchy into a path from the cgroup root.
func (r *Resolver) relCgroup(abs string) (string, error) {
	if abs == r.cgRoot {
		return "/", nil
	}
	rel, ok := strings.CutPrefix(abs, r.cgRoot+"/")
	if !ok {
		return "", fmt.Errorf("cgroup path %s is outside the cgroup2 root %s", abs, r.cgRoot)
	}
	return "/" + rel, nil
}

// walkCgroups caches the id of every cgroup in the hierarchy.
func (r *Resolver) walkCgroups() error {
	err := filepath.WalkDir(r.cgRoot, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil // removed during the walk
			}
			return err
		}
		if !d.IsDir() {
			return nil
		}
		var st unix.Stat_t
		if err := unix.Stat(path, &st); err != nil {
			return nil // removed during the walk
		}
		rel, err := r.relCgroup(path)
		if err != nil {
			return err
		}
		r.cgroups.put(st.Ino, rel)
		return nil
	})
	if err != nil {
		return fmt.Errorf("walking the cgroup2 hierarchy: %w", err)
	}
	return nil
}
