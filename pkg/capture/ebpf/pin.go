package ebpf

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vigil-db/vigil/pkg/bpffs"
)

// Pinning keeps capture running while no agent does (a restart, a crash, a rolling update):
// with Config.PinDir set, the maps (the ring buffer among them) and the links of the
// always-on hooks are pinned in bpffs, so the kernel keeps filling the ring after the agent's
// process is gone, and the next Load with the same directory adopts them and drains what was
// captured meanwhile. The hooks that come and go with userspace state (TLS uprobes, the Unix
// syscall tracepoints and their connect trigger) are not pinned: they stop with the agent.
//
// A meta map beside the pins holds the fingerprint of the objects and ring size that made
// them (a different build is not adopted: its records might not decode) and the kernel
// losses already reported, so that a successor reports only the rest.

const (
	metaPin = "vigil_meta"
	// linkPrefix starts the pin name of every pinned link.
	linkPrefix = "link_"
	tcxPrefix  = linkPrefix + "tcx_"
)

// metaValue is the meta map's single value.
type metaValue struct {
	Fingerprint [32]byte
	// Reported are the loss counters (per hook) already reported by an agent, as a gap
	// event; Stats counts from there.
	Reported [bpfHookIdHOOK_COUNT]bpfLostStats
}

var metaSpec = &ebpf.MapSpec{
	Name:       metaPin,
	Type:       ebpf.Array,
	KeySize:    4,
	ValueSize:  uint32(binary.Size(metaValue{})),
	MaxEntries: 1,
	Pinning:    ebpf.PinByName,
}

// Adoption says what Load found in Config.PinDir.
type Adoption struct {
	// Adopted: a previous agent's pinned programs and ring were taken over; what they
	// captured while no agent read the ring is delivered by Run, and what did not fit is
	// counted in Stats.
	Adopted bool
	// Discarded, when not empty, says why pinned state was found but removed rather than
	// adopted; whatever its ring held was not read.
	Discarded string
}

// fingerprint names the objects and the ring size: pins made by another build or another
// ring size are not adopted.
func fingerprint(ringBytes int) [32]byte {
	h := sha256.New()
	h.Write(_BpfBytes)
	_ = binary.Write(h, binary.LittleEndian, uint64(ringBytes))
	var out [32]byte
	copy(out[:], h.Sum(nil))
	return out
}

// preparePins decides whether the pins in dir can be adopted, removes them if not, and
// sets spec's maps to be pinned there (loaded from the pins when they exist).
func (t *Tracer) preparePins(spec *ebpf.CollectionSpec) error {
	dir := t.cfg.PinDir
	if err := bpffs.Ensure(dir); err != nil {
		return err
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("reading pin directory: %w", err)
	}
	fp := fingerprint(t.cfg.RingBytes)
	if len(ents) > 0 {
		var old metaValue
		m, err := ebpf.LoadPinnedMap(filepath.Join(dir, metaPin), nil)
		if err == nil {
			err = m.Lookup(uint32(0), &old)
			m.Close()
		}
		switch {
		case err != nil:
			t.adoption.Discarded = fmt.Sprintf("pinned capture state without a readable meta map (%v)", err)
		case old.Fingerprint != fp:
			t.adoption.Discarded = "pinned capture state of a different agent build or ring buffer size"
		default:
			t.adoption.Adopted = true
			t.baseline = old.Reported
		}
		if !t.adoption.Adopted {
			if err := bpffs.Unpin(dir); err != nil {
				return fmt.Errorf("removing pinned capture state that cannot be adopted: %w", err)
			}
			if err := os.MkdirAll(dir, 0o700); err != nil {
				return fmt.Errorf("pin directory: %w", err)
			}
		}
	}
	for name, ms := range spec.Maps {
		// Global-variable sections belong to the program that is loaded, not to the
		// capture state.
		if !strings.HasPrefix(name, ".") {
			ms.Pinning = ebpf.PinByName
		}
	}
	return nil
}

// openMeta opens (creating it on a fresh start) the meta map and records this build's
// fingerprint and the loss baseline.
func (t *Tracer) openMeta() error {
	m, err := ebpf.NewMapWithOptions(metaSpec, ebpf.MapOptions{PinPath: t.cfg.PinDir})
	if err != nil {
		return fmt.Errorf("meta map: %w", err)
	}
	v := metaValue{Fingerprint: fingerprint(t.cfg.RingBytes), Reported: t.baseline}
	if err := m.Put(uint32(0), &v); err != nil {
		m.Close()
		return fmt.Errorf("writing the meta map: %w", err)
	}
	t.meta = m
	return nil
}

// CommitLoss records that the losses in s (as Stats returned them) have been reported, so
// that an agent adopting the pins after this one does not report them again. A loss
// reported and then lost with the agent before it was stored is not reported twice; a
// crash between the report and this call reports it twice. Without pinning it does
// nothing.
func (t *Tracer) CommitLoss(s Stats) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.meta == nil || t.closed {
		return nil
	}
	v := metaValue{Fingerprint: fingerprint(t.cfg.RingBytes)}
	for i, hs := range s.perHook() {
		v.Reported[i] = bpfLostStats{Records: t.baseline[i].Records + hs.LostRecords, Bytes: t.baseline[i].Bytes + hs.LostBytes}
	}
	if err := t.meta.Put(uint32(0), &v); err != nil {
		return fmt.Errorf("recording reported losses in the meta map: %w", err)
	}
	return nil
}

// Adoption says whether Load took over a previous agent's pinned capture.
func (t *Tracer) Adoption() Adoption { return t.adoption }

// pinnedLink is a pin path in the pin directory, or "" without pinning.
func (t *Tracer) pinPath(name string) string {
	if t.cfg.PinDir == "" {
		return ""
	}
	return filepath.Join(t.cfg.PinDir, name)
}

// replacePinned attaches a hook whose link type cannot swap its program (raw tracepoints):
// the new link is attached first, then the previous agent's pinned one is removed, so the
// hook never misses an event (it may see one twice). The new link is pinned in its place.
func (t *Tracer) replacePinned(name string, attach func() (link.Link, error)) (link.Link, error) {
	l, err := attach()
	if err != nil {
		return nil, err
	}
	path := t.pinPath(linkPrefix + name)
	if path == "" {
		return l, nil
	}
	if old, err := link.LoadPinnedLink(path, nil); err == nil {
		_ = old.Unpin()
		_ = old.Close()
	}
	if err := l.Pin(path); err != nil {
		t.log.Warn("hook not pinned: it stops with the agent", "hook", name, "err", err)
	}
	return l, nil
}

// adoptTCX takes over the previous agent's pinned TCX link at path, swapping in this
// agent's program atomically (no packet is missed). It returns nil when there is no such
// link or it cannot be adopted (then it is removed).
func (t *Tracer) adoptTCX(path string, index int) link.Link {
	old, err := link.LoadPinnedLink(path, nil)
	if err != nil {
		return nil
	}
	info, err := old.Info()
	if err == nil {
		if tcx := info.TCX(); tcx == nil || int(tcx.Ifindex) != index {
			err = errors.New("attached to another interface")
		}
	}
	if err == nil {
		err = old.Update(t.objs.CaptureTcx)
	}
	if err != nil {
		t.log.Warn("pinned TCX link not adopted: replacing it", "pin", path, "err", err)
		_ = old.Unpin()
		_ = old.Close()
		return nil
	}
	return old
}

// sweepTCXPins removes pinned TCX links of interfaces this tracer did not adopt (gone, or
// no longer selected by Config.Interfaces).
func (t *Tracer) sweepTCXPins() {
	if t.cfg.PinDir == "" {
		return
	}
	ents, err := os.ReadDir(t.cfg.PinDir)
	if err != nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), tcxPrefix) || t.tcxPins[e.Name()] {
			continue
		}
		if err := os.Remove(filepath.Join(t.cfg.PinDir, e.Name())); err != nil {
			t.log.Warn("removing a stale pinned TCX link", "pin", e.Name(), "err", err)
		}
	}
}

func (s *Stats) perHook() []*HookStats {
	return []*HookStats{&s.TCX, &s.TLS, &s.Unix, &s.Conn, &s.UnixConnect}
}

// loadWatchedPorts reads the adopted watched_ports into t.ports, so that SetServerPorts
// unwatches ports the previous agent watched and this one does not. Until then the
// previous agent's ports stay watched: capture does not pause while this agent starts.
func (t *Tracer) loadWatchedPorts() error {
	const n = 1 << 16
	keys := make([]uint32, n)
	vals := make([]uint8, n)
	var cursor ebpf.MapBatchCursor
	got, err := t.objs.WatchedPorts.BatchLookup(&cursor, keys, vals, nil)
	if err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("reading the adopted watched ports: %w", err)
	}
	for i := range got {
		if vals[i] != 0 {
			t.ports[uint16(keys[i])] = true
		}
	}
	return nil
}
