package ebpf

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/ringbuf"
)

// Config tunes the tracer. The zero value of each field picks its default.
type Config struct {
	// ServerPorts are the database server ports whose TCP traffic and connections are
	// captured. SetServerPorts replaces them later; until then, adopted pins (PinDir) keep
	// the previous tracer's ports watched too.
	ServerPorts []uint16
	// RingBytes is the ring buffer size: a power of two, at least one page. Default 16 MiB.
	RingBytes int
	// WakeupBytes is how much pending data makes the kernel wake the reader before its
	// next poll. Default 1 MiB (a quarter of the ring if that is smaller).
	WakeupBytes int
	// PollInterval is how often the reader looks at the ring without a wakeup; it bounds
	// the delivery delay. Default 50 ms. Each drain costs the runtime a round of wake-ups
	// (its monitor thread wakes with the first system call after an idle spell): at 10 ms
	// and 256 KiB the agent spent 14% more CPU per statement under pgbench.
	PollInterval time.Duration
	// Interfaces restricts TCX capture to these interface names; empty means every
	// interface, including ones that appear later.
	Interfaces []string
	// PinDir, when set, is a directory on bpffs where the ring buffer, the maps and the
	// always-on hooks are pinned, so that capture continues while no agent runs and the
	// next Load with the same directory adopts it (see Adoption). One directory per agent
	// state: two tracers must never share one.
	PinDir string
}

const (
	defaultRingBytes    = 16 << 20
	defaultWakeupBytes  = 1 << 20
	defaultPollInterval = 50 * time.Millisecond
)

func (c *Config) withDefaults() (Config, error) {
	out := *c
	if out.RingBytes == 0 {
		out.RingBytes = defaultRingBytes
	}
	if out.RingBytes < os.Getpagesize() || out.RingBytes&(out.RingBytes-1) != 0 {
		return out, fmt.Errorf("ring size %d bytes: must be a power of two of at least %d", out.RingBytes, os.Getpagesize())
	}
	if out.WakeupBytes == 0 {
		out.WakeupBytes = min(defaultWakeupBytes, out.RingBytes/4)
	}
	if out.WakeupBytes < 0 || out.WakeupBytes >= out.RingBytes {
		return out, fmt.Errorf("wakeup threshold %d bytes: must be positive and below the ring size %d", out.WakeupBytes, out.RingBytes)
	}
	if out.PollInterval == 0 {
		out.PollInterval = defaultPollInterval
	}
	if out.PollInterval < 0 {
		return out, fmt.Errorf("poll interval %v: must be positive", out.PollInterval)
	}
	for _, p := range out.ServerPorts {
		if p == 0 {
			return out, errors.New("server port 0 is not a port")
		}
	}
	return out, nil
}

// HookStatus says whether one kernel hook is attached, for /readyz and the log.
type HookStatus struct {
	Name     string
	Attached bool
	Err      string // why it is not attached; empty when it is, or when it is switched off
}

// HookStats counts one hook's records.
type HookStats struct {
	Records uint64 // records delivered to the Handler
	Bytes   uint64 // payload bytes delivered
	// LostRecords and LostBytes count what the kernel could not deliver: ring buffer
	// full, an unreadable buffer, or bytes beyond the per-packet/per-call limit.
	LostRecords uint64
	LostBytes   uint64
}

// Stats are the tracer's counters, cumulative since Load.
type Stats struct {
	TCX, TLS, Unix, Conn HookStats
	// UnixConnect counts the connect_unix hook's records: a lost one is a Unix-socket
	// session whose start may not have switched Unix capture on.
	UnixConnect HookStats
	// Malformed counts ring records userspace could not decode (and so did not deliver).
	Malformed uint64
}

// Tracer owns the loaded programs, their attachments and the ring buffer reader.
type Tracer struct {
	log    *slog.Logger
	cfg    Config
	objs   bpfObjects
	reader *ringbuf.Reader
	dec    decoder

	delivered [bpfHookIdHOOK_COUNT]struct{ records, bytes atomic.Uint64 }
	malformed atomic.Uint64

	mu          sync.Mutex // guards everything below
	closed      bool
	ports       map[uint16]bool
	hooks       []*hook
	tls         map[string][]*hook // server binary → its uprobes
	unix        []*hook            // syscall tracepoints, attached while Unix capture is on
	unixConnect *hook              // cgroup connect_unix: says when to switch Unix capture on
	unixEpoch   uint32             // capture periods of the Unix tracepoints so far
	// detaching closes detached tracepoint links in the background (Close waits for it):
	// closing one takes tens of milliseconds, which an attach must not wait for.
	detaching sync.WaitGroup
	ifaces    map[int][]*hook // ifindex → TCX attachments

	stopLinks context.CancelFunc // stops the interface watcher
	linksDone chan struct{}

	adoption Adoption
	baseline [bpfHookIdHOOK_COUNT]bpfLostStats // losses reported before this Load
	meta     *ebpf.Map                         // nil without pinning
	tcxPins  map[string]bool                   // pin names of this tracer's TCX links
}

// hook is one attachment point and its state.
type hook struct {
	status HookStatus
	link   link.Link
}

func (h *hook) setErr(err error) {
	h.status.Attached = false
	h.status.Err = err.Error()
}

// Load loads the kernel programs and attaches the always-on hooks: TCX on the interfaces,
// process fork/exit tracking, connection tracking and the Unix connect trigger. A hook that fails to attach is
// logged and reported by Hooks, not fatal; failing to load the programs at all is.
func Load(cfg Config, h Handler, log *slog.Logger) (*Tracer, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("ebpf config: %w", err)
	}
	if h == nil {
		return nil, errors.New("ebpf: nil handler")
	}
	if log == nil {
		log = slog.Default()
	}
	spec, err := loadBpf()
	if err != nil {
		return nil, fmt.Errorf("reading the embedded BPF objects: %w", err)
	}
	spec.Maps[bpfMapEvents].MaxEntries = uint32(cfg.RingBytes)
	if err := spec.Variables["wakeup_bytes"].Set(uint64(cfg.WakeupBytes)); err != nil {
		return nil, fmt.Errorf("setting the wakeup threshold: %w", err)
	}
	t := &Tracer{
		log: log, cfg: cfg, dec: decoder{h: h},
		ports: map[uint16]bool{}, tls: map[string][]*hook{}, ifaces: map[int][]*hook{},
		tcxPins: map[string]bool{},
	}
	var opts *ebpf.CollectionOptions
	if cfg.PinDir != "" {
		if err := t.preparePins(spec); err != nil {
			return nil, fmt.Errorf("ebpf pinning: %w", err)
		}
		opts = &ebpf.CollectionOptions{Maps: ebpf.MapOptions{PinPath: cfg.PinDir}}
	}
	if err := spec.LoadAndAssign(&t.objs, opts); err != nil {
		var verr *ebpf.VerifierError
		if errors.As(err, &verr) {
			return nil, fmt.Errorf("loading BPF programs (verifier log follows): %+v", verr)
		}
		return nil, fmt.Errorf("loading BPF programs (needs root or CAP_BPF+CAP_PERFMON+CAP_NET_ADMIN, kernel ≥ 6.6): %w", err)
	}
	if cfg.PinDir != "" {
		if err := t.openMeta(); err != nil {
			t.objs.Close()
			return nil, fmt.Errorf("ebpf pinning: %w", err)
		}
		if t.adoption.Adopted {
			if err := t.loadWatchedPorts(); err != nil {
				t.meta.Close()
				t.objs.Close()
				return nil, err
			}
		}
	}
	if t.reader, err = ringbuf.NewReader(t.objs.Events); err != nil {
		t.objs.Close()
		return nil, fmt.Errorf("opening the ring buffer: %w", err)
	}
	// Adopted ports stay watched until the caller's first SetServerPorts: the agent finds
	// its servers only after Load, and capture must not pause meanwhile.
	ports := cfg.ServerPorts
	for p := range t.ports {
		ports = append(ports, p)
	}
	if err := t.SetServerPorts(ports); err != nil {
		t.Close()
		return nil, err
	}
	for _, tp := range []struct {
		name string
		prog *ebpf.Program
	}{
		{"sched_process_fork", t.objs.TrackFork},
		{"sched_process_exit", t.objs.TrackExit},
		{"inet_sock_set_state", t.objs.TrackSockState},
	} {
		hk := &hook{status: HookStatus{Name: "raw_tp/" + tp.name}}
		hk.link, err = t.replacePinned("raw_tp_"+tp.name, func() (link.Link, error) {
			return link.AttachRawTracepoint(link.RawTracepointOptions{Name: tp.name, Program: tp.prog})
		})
		if err != nil {
			hk.setErr(fmt.Errorf("attaching raw tracepoint %s: %w", tp.name, err))
			log.Error("ebpf hook not attached", "hook", hk.status.Name, "err", err)
		} else {
			hk.status.Attached = true
		}
		t.hooks = append(t.hooks, hk)
	}
	t.unixConnect = t.attachUnixConnect()
	t.hooks = append(t.hooks, t.unixConnect)
	for _, name := range []string{"sys_enter_recvfrom", "sys_exit_recvfrom", "sys_enter_sendto", "sys_exit_sendto"} {
		hk := &hook{status: HookStatus{Name: "tracepoint/syscalls/" + name}}
		t.unix = append(t.unix, hk)
		t.hooks = append(t.hooks, hk)
	}
	if err := t.watchInterfaces(); err != nil {
		t.Close()
		return nil, err
	}
	t.sweepTCXPins()
	return t, nil
}

// Run reads the ring buffer and calls the Handler on this goroutine until ctx is done or
// the tracer is closed. Call it once.
//
// The kernel writes records without waking the reader (see WakeupBytes), so Run drains
// the ring, then waits for a forced wake-up or PollInterval, and drains again.
func (t *Tracer) Run(ctx context.Context) error {
	w, err := newRingWaiter(t.objs.Events.FD())
	if err != nil {
		t.log.Warn("ring buffer reader waits in epoll_wait (costlier for the runtime)", "err", err)
	} else {
		defer w.close()
	}
	var rec ringbuf.Record
	past := time.Unix(1, 0)
	for {
		if ctx.Err() != nil {
			return nil
		}
		if w != nil {
			// Non-blocking drain: an expired deadline makes the reader return once the
			// ring is empty.
			t.reader.SetDeadline(past)
		} else {
			t.reader.SetDeadline(time.Now().Add(t.cfg.PollInterval))
		}
		for {
			err := t.reader.ReadInto(&rec)
			if err == nil {
				t.deliver(rec.RawSample)
				continue
			}
			if errors.Is(err, os.ErrDeadlineExceeded) {
				break
			}
			if errors.Is(err, ringbuf.ErrClosed) {
				return nil
			}
			return fmt.Errorf("reading the ring buffer: %w", err)
		}
		t.dec.h.Idle()
		if w != nil {
			w.wait(t.cfg.PollInterval)
		}
	}
}

func (t *Tracer) deliver(raw []byte) {
	hook, n, err := t.dec.decode(raw)
	if err != nil {
		if t.malformed.Add(1) == 1 {
			t.log.Error("undecodable ring buffer record (counted in Stats.Malformed; further ones are not logged)", "err", err)
		}
		return
	}
	c := &t.delivered[hook]
	c.records.Add(1)
	c.bytes.Add(uint64(n))
}

// SetServerPorts replaces the set of watched database server ports.
func (t *Tracer) SetServerPorts(ports []uint16) error {
	want := map[uint16]bool{}
	for _, p := range ports {
		if p == 0 {
			return errors.New("server port 0 is not a port")
		}
		want[p] = true
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return errClosed
	}
	// Add before removing, so a port kept across the change is never unwatched.
	for p := range want {
		if !t.ports[p] {
			if err := t.objs.WatchedPorts.Put(uint32(p), uint8(1)); err != nil {
				return fmt.Errorf("watching port %d: %w", p, err)
			}
			t.ports[p] = true
		}
	}
	for p := range t.ports {
		if !want[p] {
			if err := t.objs.WatchedPorts.Put(uint32(p), uint8(0)); err != nil {
				return fmt.Errorf("unwatching port %d: %w", p, err)
			}
			delete(t.ports, p)
		}
	}
	return nil
}

var errClosed = errors.New("ebpf tracer is closed")

// Hooks reports every hook and whether it is attached.
func (t *Tracer) Hooks() []HookStatus {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]HookStatus, 0, len(t.hooks))
	for _, h := range t.hooks {
		out = append(out, h.status)
	}
	return out
}

// Stats returns the counters. Kernel-side losses are read from a per-CPU map.
func (t *Tracer) Stats() Stats {
	var s Stats
	per := s.perHook()
	for i, hs := range per {
		hs.Records = t.delivered[i].records.Load()
		hs.Bytes = t.delivered[i].bytes.Load()
	}
	s.Malformed = t.malformed.Load()
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return s
	}
	for i, hs := range per {
		var cpus []bpfLostStats
		if err := t.objs.Lost.Lookup(uint32(i), &cpus); err != nil {
			t.log.Error("reading kernel loss counters", "err", err)
			continue
		}
		for _, c := range cpus {
			hs.LostRecords += c.Records
			hs.LostBytes += c.Bytes
		}
		// Adopted counters include what earlier agents already reported.
		hs.LostRecords -= min(hs.LostRecords, t.baseline[i].Records)
		hs.LostBytes -= min(hs.LostBytes, t.baseline[i].Bytes)
	}
	return s
}

// Close detaches every hook and frees the kernel objects, except what is pinned
// (Config.PinDir), which keeps capturing until bpffs.Unpin. Run returns.
func (t *Tracer) Close() error {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil
	}
	t.closed = true
	stop, done := t.stopLinks, t.linksDone
	t.mu.Unlock()
	if stop != nil {
		stop()
		<-done
	}
	t.detaching.Wait()
	t.mu.Lock()
	defer t.mu.Unlock()
	var errs []error
	for _, h := range t.hooks {
		if h.link != nil {
			if err := h.link.Close(); err != nil {
				errs = append(errs, fmt.Errorf("detaching %s: %w", h.status.Name, err))
			}
			h.link = nil
			h.status.Attached = false
		}
	}
	if t.reader != nil {
		if err := t.reader.Close(); err != nil {
			errs = append(errs, fmt.Errorf("closing the ring buffer reader: %w", err))
		}
	}
	if err := t.objs.Close(); err != nil {
		errs = append(errs, fmt.Errorf("closing BPF objects: %w", err))
	}
	if t.meta != nil {
		if err := t.meta.Close(); err != nil {
			errs = append(errs, fmt.Errorf("closing the meta map: %w", err))
		}
	}
	return errors.Join(errs...)
}

// removeHooks drops hooks from the status list (interfaces that went away).
func (t *Tracer) removeHooks(gone []*hook) {
	t.hooks = slices.DeleteFunc(t.hooks, func(h *hook) bool { return slices.Contains(gone, h) })
}
