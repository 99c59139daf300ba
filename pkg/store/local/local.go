// Package local is Vigil's embedded audit store and the spool in front of ClickHouse:
// append-only segments of JSON lines (one event per line) in one directory, fsynced per
// policy, rotated at a size and capped as a whole. A torn last line left by a crash is cut
// on the next open, so a reopened store holds exactly the events that Append acknowledged.
// One process writes (an exclusive lock on the directory enforces it); any number of
// read-only opens, such as the `vigil events` CLI, read alongside it without changing a byte.
package local

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/vigil-db/vigil/pkg/event"
)

// Defaults for Options.
const (
	DefaultSegmentBytes = 64 << 20
	DefaultMaxBytes     = 1 << 30
)

// ErrClosed is returned by operations on a closed store.
var ErrClosed = errors.New("local store closed")

// lockName is the file whose flock marks the directory's single writer.
const lockName = "LOCK"

// Options configures a store. Zero values take the defaults.
type Options struct {
	// SegmentBytes rotates a segment before it would grow past this size (a single event
	// larger than it gets a segment of its own). Default 64 MiB.
	SegmentBytes int64
	// MaxBytes caps the directory: past it the oldest segments are deleted. Default 1 GiB.
	MaxBytes int64
	// SyncInterval 0 fsyncs every Append before it returns: an acknowledged event survives
	// a power cut. Above 0, fsync runs at most that often: acknowledged events survive a
	// crash of the process, but a crash of the machine can lose the last interval.
	SyncInterval time.Duration
	// Spool says a consumer (the ClickHouse exporter) ships the events elsewhere and
	// reports its progress with SetShipped. Segments it has shipped go first when the cap
	// is reached; deleting events it has not shipped is a loss, reported to the loss
	// handler. Without Spool the store is the store of record and the cap is plain
	// retention.
	Spool bool
	// ReadOnly opens an existing store for reading only: no lock, no recovery, nothing
	// written. A partial last line (the writer mid-append) is skipped.
	ReadOnly bool
	// Logger receives recovery and retention messages; default slog.Default().
	Logger *slog.Logger
}

type loss struct {
	first, last, lost uint64
	carried           uint64 // reported by gap events among the lost
	detail            string
}

// Store is a local audit store. Its methods are safe for concurrent use.
type Store struct {
	dir  string
	opts Options
	log  *slog.Logger
	m    *metrics
	lock *os.File // holds the directory's flock; nil when read-only

	encMu sync.Mutex // serializes encoding into buf, outside mu
	buf   []byte
	ends  []int

	mu       sync.Mutex
	segs     []segment // seq order; the last one is the active segment
	active   *os.File  // open for append; nil until the first event
	total    int64
	lastSeq  uint64
	lastHash string
	shipped  uint64
	dirty    bool // written since the last fsync
	lastSync time.Time
	notify   chan struct{} // closed and replaced on every append
	closed   bool
	broken   error // a failed rollback left the files in an unknown state
	onLoss   func(first, last, lost uint64, detail string)
	losses   []loss // reported before a handler was set

	stopSync chan struct{}
	syncDone chan struct{}
	stopOnce sync.Once
}

// Open opens (creating if needed) the store in dir. A writer takes the directory's lock,
// cuts a torn last line left by a crash (logged and counted) and recovers the last seq and
// hash. reg receives the store's metrics; nil registers nowhere.
func Open(dir string, opts Options, reg prometheus.Registerer) (*Store, error) {
	if opts.SegmentBytes <= 0 {
		opts.SegmentBytes = DefaultSegmentBytes
	}
	if opts.MaxBytes <= 0 {
		opts.MaxBytes = DefaultMaxBytes
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, fmt.Errorf("local store %s: registering metrics: %w", dir, err)
	}
	s := &Store{
		dir:    dir,
		opts:   opts,
		log:    opts.Logger.With("store", dir),
		m:      m,
		notify: make(chan struct{}),
	}
	if opts.ReadOnly {
		info, err := os.Stat(dir)
		if err != nil {
			return nil, fmt.Errorf("opening local store: %w", err)
		}
		if !info.IsDir() {
			return nil, fmt.Errorf("opening local store %s: not a directory", dir)
		}
		return s, nil
	}
	if err := s.openWriter(); err != nil {
		if s.lock != nil {
			s.lock.Close()
		}
		return nil, fmt.Errorf("opening local store %s: %w", dir, err)
	}
	if opts.SyncInterval > 0 {
		s.stopSync = make(chan struct{})
		s.syncDone = make(chan struct{})
		go s.syncLoop()
	}
	return s, nil
}

func (s *Store) openWriter() error {
	if err := os.MkdirAll(s.dir, 0o750); err != nil {
		return err
	}
	lock, err := os.OpenFile(filepath.Join(s.dir, lockName), os.O_CREATE|os.O_RDWR, 0o640)
	if err != nil {
		return fmt.Errorf("opening lock: %w", err)
	}
	s.lock = lock
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		return fmt.Errorf("another process writes this store (lock %s): %w", lock.Name(), err)
	}
	segs, err := listSegments(s.dir)
	if err != nil {
		return err
	}
	// Segments before the last are complete by construction (rotation happens between
	// whole writes); reading their last line gives the seq range retention needs.
	for i := range segs[:max(len(segs)-1, 0)] {
		if err := s.readLast(&segs[i]); err != nil {
			return err
		}
	}
	for len(segs) > 0 {
		last := &segs[len(segs)-1]
		e, err := s.recoverTail(last)
		if err != nil {
			return err
		}
		if e != nil {
			s.lastSeq, s.lastHash = e.Seq, e.Hash
			break
		}
		// Nothing survived in it (created just before a crash): it would carry a first
		// seq that the next event may not have.
		if err := os.Remove(last.path); err != nil {
			return fmt.Errorf("removing empty segment: %w", err)
		}
		if err := syncDir(s.dir); err != nil {
			return err
		}
		s.log.Info("removed empty last segment", "file", last.path)
		segs = segs[:len(segs)-1]
	}
	for _, sg := range segs {
		s.total += sg.size
	}
	s.segs = segs
	if len(segs) > 0 {
		f, err := os.OpenFile(segs[len(segs)-1].path, os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			return fmt.Errorf("opening active segment: %w", err)
		}
		s.active = f
	}
	s.lastSync = time.Now()
	s.updateGauges()
	return nil
}

// readLast fills sg.last from the segment's last line without changing the file. A
// segment other than the last should never have a bad tail; if one does, the reads that
// reach it report the lines.
func (s *Store) readLast(sg *segment) error {
	f, err := os.Open(sg.path)
	if err != nil {
		return fmt.Errorf("reading segment: %w", err)
	}
	defer f.Close()
	t, err := scanTail(f, sg.size)
	if err != nil {
		return fmt.Errorf("%s: %w", sg.path, err)
	}
	if len(t.cut) > 0 {
		s.log.Warn("segment before the last has a bad tail; reads will report it", "file", sg.path, "offset", t.end)
	}
	if t.last != nil {
		sg.last = t.last.Seq
	}
	return nil
}

// recoverTail cuts whatever a crash left at the end of the last segment — a line without
// its newline, and complete lines that do not decode (an unsynced write half on disk) —
// logging each with file and line, and returns the last event that remains.
func (s *Store) recoverTail(sg *segment) (*event.Event, error) {
	f, err := os.OpenFile(sg.path, os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("opening last segment: %w", err)
	}
	defer f.Close()
	t, err := scanTail(f, sg.size)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", sg.path, err)
	}
	if len(t.cut) > 0 {
		for i := len(t.cut) - 1; i >= 0; i-- {
			c := t.cut[i]
			line := lineNumber(f, c.offset)
			if c.torn {
				s.log.Warn("cutting torn last line (the write did not finish before a crash)",
					"file", sg.path, "line", line, "offset", c.offset, "bytes", c.bytes)
			} else {
				s.log.Warn("cutting undecodable line at the tail (an unsynced write a crash left incomplete)",
					"file", sg.path, "line", line, "offset", c.offset, "bytes", c.bytes, "err", c.err)
			}
			s.m.tornLines.Inc()
		}
		if err := f.Truncate(t.end); err != nil {
			return nil, fmt.Errorf("truncating %s to %d bytes: %w", sg.path, t.end, err)
		}
		if err := f.Sync(); err != nil {
			return nil, fmt.Errorf("syncing %s: %w", sg.path, err)
		}
		sg.size = t.end
	}
	if t.last != nil {
		sg.last = t.last.Seq
	}
	return t.last, nil
}

// Last returns the seq and hash of the last stored event (0, "" when empty): where the
// hash chain continues.
func (s *Store) Last() (seq uint64, hash string) {
	if s.opts.ReadOnly {
		seq, hash, err := s.readOnlyLast()
		if err != nil {
			s.log.Warn("reading the last event", "err", err)
		}
		return seq, hash
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastSeq, s.lastHash
}

func (s *Store) readOnlyLast() (uint64, string, error) {
	segs, err := listSegments(s.dir)
	if err != nil {
		return 0, "", err
	}
	for i := len(segs) - 1; i >= 0; i-- {
		f, err := os.Open(segs[i].path)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return 0, "", err
		}
		t, err := scanTail(f, segs[i].size)
		f.Close()
		if err != nil {
			return 0, "", fmt.Errorf("%s: %w", segs[i].path, err)
		}
		if t.last != nil {
			return t.last.Seq, t.last.Hash, nil
		}
	}
	return 0, "", nil
}

// SetLossHandler sets who learns of unshipped events that the cap deleted: lost events
// went in this deletion (plus the losses that deleted gap events had reported, so that the
// reports that survive add up to every loss), and every event from first (just after the
// shipped floor) to last is now gone — cumulative, so that the newest report covers the
// ranges of older ones even when they, stored here too, were deleted before being
// shipped. The detail is a sentence saying what happened. Losses from before it was
// set are delivered at once. h runs with the store locked and must not call back into it.
// The audit trail registers itself here (its type uses only basic types so that neither
// package imports the other), turning every loss into a gap event in the trail.
func (s *Store) SetLossHandler(h func(first, last, lost uint64, detail string)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.onLoss = h
	if h != nil {
		for _, l := range s.losses {
			h(l.first, l.last, l.lost, l.detail)
		}
		s.losses = nil
	}
}

// SetShipped records that every event up to seq has been shipped, so that the segments
// holding only such events may go first when the cap is reached.
func (s *Store) SetShipped(seq uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if seq <= s.shipped || s.closed {
		return
	}
	s.shipped = seq
	s.enforceCap()
}

// WaitAfter blocks until the store holds an event with seq > seq, ctx ends, or the store
// closes. It lets a spool consumer in the writing process sleep instead of polling.
func (s *Store) WaitAfter(ctx context.Context, seq uint64) error {
	if s.opts.ReadOnly {
		return fmt.Errorf("local store %s: WaitAfter needs the writing process", s.dir)
	}
	for {
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			return ErrClosed
		}
		if s.lastSeq > seq {
			s.mu.Unlock()
			return nil
		}
		ch := s.notify
		s.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Append stores events durably (per the sync policy) in one write per segment. Seqs must
// rise strictly across calls; a batch that would break that is refused whole. On any
// failure nothing of the batch stays, so the caller may retry it.
func (s *Store) Append(ctx context.Context, events []*event.Event) error {
	s.encMu.Lock()
	defer s.encMu.Unlock()
	buf, ends := s.buf[:0], s.ends[:0]
	for _, e := range events {
		b, err := e.MarshalJSON()
		if err != nil {
			return fmt.Errorf("local store: encoding event seq %d: %w", e.Seq, err)
		}
		buf = append(append(buf, b...), '\n')
		ends = append(ends, len(buf))
	}
	s.keepBuf(buf, ends)
	return s.write(ctx, events, buf, ends)
}

// AppendEncoded is Append for a writer that already holds each event's encoding (the
// audit trail has it from hashing): lines[i] must be exactly events[i].MarshalJSON(),
// without a newline. It saves encoding every event twice on the hot path.
func (s *Store) AppendEncoded(ctx context.Context, events []*event.Event, lines [][]byte) error {
	if len(lines) != len(events) {
		return fmt.Errorf("local store: %d lines for %d events", len(lines), len(events))
	}
	s.encMu.Lock()
	defer s.encMu.Unlock()
	buf, ends := s.buf[:0], s.ends[:0]
	for i, l := range lines {
		// A newline inside would split the event into two undecodable lines.
		if bytes.IndexByte(l, '\n') >= 0 {
			return fmt.Errorf("local store: the encoding of event seq %d contains a newline", events[i].Seq)
		}
		buf = append(append(buf, l...), '\n')
		ends = append(ends, len(buf))
	}
	s.keepBuf(buf, ends)
	return s.write(ctx, events, buf, ends)
}

// keepBuf keeps the encoding buffers for the next append, unless one batch of huge
// events made them big enough that holding on would pin the memory for good.
func (s *Store) keepBuf(buf []byte, ends []int) {
	if cap(buf) > 16<<20 {
		buf, ends = nil, nil
	}
	s.buf, s.ends = buf, ends
}

func (s *Store) write(ctx context.Context, events []*event.Event, buf []byte, ends []int) error {
	if len(events) == 0 {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.opts.ReadOnly:
		return fmt.Errorf("local store %s: opened read-only", s.dir)
	case s.closed:
		return ErrClosed
	case s.broken != nil:
		return fmt.Errorf("local store %s: unusable after a failed rollback: %w", s.dir, s.broken)
	}
	prev := s.lastSeq
	for _, e := range events {
		if e.Seq <= prev {
			return fmt.Errorf("local store %s: event seq %d does not follow seq %d", s.dir, e.Seq, prev)
		}
		prev = e.Seq
	}
	err := s.writeLocked(events, buf, ends)
	if err != nil && s.opts.Spool && diskFull(err) && s.broken == nil && s.reclaimShipped() {
		err = s.writeLocked(events, buf, ends)
	}
	return err
}

func diskFull(err error) bool {
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT)
}

// reclaimShipped deletes the shipped segments of a spool whose disk filled before its cap
// was reached: they are safe elsewhere, and the space is what the trail needs now. It
// reports whether it freed any.
func (s *Store) reclaimShipped() bool {
	var n int
	var bytes int64
	for len(s.segs) > 1 && s.segs[0].last != 0 && s.segs[0].last <= s.shipped {
		old := s.segs[0]
		if err := os.Remove(old.path); err != nil && !errors.Is(err, os.ErrNotExist) {
			s.log.Error("deleting a shipped segment to make room on a full disk", "file", old.path, "err", err)
			break
		}
		s.segs = s.segs[1:]
		s.total -= old.size
		s.m.deletedSegs.WithLabelValues(reasonShipped).Inc()
		n++
		bytes += old.size
	}
	if n == 0 {
		return false
	}
	s.updateGauges()
	s.log.Warn("the spool's disk is full below its cap: deleted shipped segments to make room (lower local_store.max_bytes to what the disk holds)",
		"segments", n, "bytes", bytes, "shipped_seq", s.shipped)
	return true
}

// writeLocked writes a batch whose seqs have been checked, rolling back on failure.
func (s *Store) writeLocked(events []*event.Event, buf []byte, ends []int) error {
	undo := s.checkpoint()
	lineStart := func(k int) int {
		if k == 0 {
			return 0
		}
		return ends[k-1]
	}
	first := 0 // events[first:] are not yet written
	for k, e := range events {
		pending := int64(lineStart(k) - lineStart(first))
		if s.active == nil || s.activeSize()+pending > 0 && s.activeSize()+pending+int64(ends[k]-lineStart(k)) > s.opts.SegmentBytes {
			if k > first {
				if err := s.writeActive(events[first:k], buf[lineStart(first):lineStart(k)], ends[first:k]); err != nil {
					return s.rollback(undo, err)
				}
			}
			first = k
			if err := s.rotate(e.Seq); err != nil {
				return s.rollback(undo, err)
			}
		}
	}
	if err := s.writeActive(events[first:], buf[lineStart(first):], ends[first:]); err != nil {
		return s.rollback(undo, err)
	}
	s.dirty = true
	if s.opts.SyncInterval <= 0 || time.Since(s.lastSync) >= s.opts.SyncInterval {
		if err := s.syncActive(); err != nil {
			return s.rollback(undo, err)
		}
	}

	last := events[len(events)-1]
	s.lastSeq, s.lastHash = last.Seq, last.Hash
	close(s.notify)
	s.notify = make(chan struct{})
	s.enforceCap()
	s.updateGauges()
	return nil
}

func (s *Store) activeSize() int64 {
	if len(s.segs) == 0 {
		return 0
	}
	return s.segs[len(s.segs)-1].size
}

// writeActive writes the lines of evs (data; ends are their ends in the caller's buffer)
// to the active segment, and indexes them.
func (s *Store) writeActive(evs []*event.Event, data []byte, ends []int) error {
	sg := &s.segs[len(s.segs)-1]
	base := sg.size
	n, err := s.active.Write(data)
	sg.size += int64(n)
	s.total += int64(n)
	if err != nil {
		return fmt.Errorf("appending to a segment: %w", err) // err names the file
	}
	sg.last = evs[len(evs)-1].Seq
	// ends are offsets in the caller's buffer, where data starts at ends[0]-len(line 0).
	shift := int64(ends[len(ends)-1]) - int64(len(data))
	lineOff := base
	for i, e := range evs {
		sg.index = extendIndex(sg.index, e.Seq, lineOff)
		lineOff = base + int64(ends[i]) - shift
	}
	return nil
}

// rotate closes the active segment (synced, whatever the policy: it will not be written
// again) and starts a new one whose name is first.
func (s *Store) rotate(first uint64) error {
	if s.active != nil {
		if err := s.syncActive(); err != nil {
			return err
		}
		if err := s.active.Close(); err != nil {
			return fmt.Errorf("closing %s: %w", s.active.Name(), err)
		}
		s.active = nil
	}
	path := filepath.Join(s.dir, segmentName(first))
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY|os.O_APPEND, 0o640)
	if err != nil {
		return fmt.Errorf("creating segment: %w", err)
	}
	// The new name must survive a crash as well as the data written into it.
	if err := syncDir(s.dir); err != nil {
		f.Close()
		os.Remove(path)
		return err
	}
	s.active = f
	s.segs = append(s.segs, segment{first: first, path: path, indexed: true})
	return nil
}

func (s *Store) syncActive() error {
	if s.active == nil || !s.dirty {
		return nil
	}
	t := time.Now()
	if err := s.active.Sync(); err != nil {
		return fmt.Errorf("syncing %s: %w", s.active.Name(), err)
	}
	s.m.fsync.Observe(time.Since(t).Seconds())
	s.dirty = false
	s.lastSync = time.Now()
	return nil
}

// undo is the state before a write, for rollback.
type undo struct {
	nsegs    int
	lastSize int64
	lastSeq  uint64
}

func (s *Store) checkpoint() undo {
	u := undo{nsegs: len(s.segs)}
	if u.nsegs > 0 {
		u.lastSize = s.segs[u.nsegs-1].size
		u.lastSeq = s.segs[u.nsegs-1].last
	}
	return u
}

// rollback removes what a failed write left — segments it created, bytes it appended — so
// that the store holds exactly what it held before and the batch can be retried.
func (s *Store) rollback(u undo, cause error) error {
	err := func() error {
		if s.active != nil {
			s.active.Close()
			s.active = nil
		}
		for _, sg := range s.segs[u.nsegs:] {
			if err := os.Remove(sg.path); err != nil && !errors.Is(err, os.ErrNotExist) {
				return err
			}
		}
		s.segs = s.segs[:u.nsegs]
		if u.nsegs == 0 {
			s.total = 0
			return nil
		}
		sg := &s.segs[u.nsegs-1]
		if err := os.Truncate(sg.path, u.lastSize); err != nil {
			return err
		}
		sg.size, sg.last = u.lastSize, u.lastSeq
		sg.index = slices.DeleteFunc(sg.index, func(e indexEntry) bool { return e.off >= u.lastSize })
		f, err := os.OpenFile(sg.path, os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			return err
		}
		s.active = f
		s.total = 0
		for _, sg := range s.segs {
			s.total += sg.size
		}
		return nil
	}()
	if err != nil {
		s.broken = err
		s.log.Error("rolling back a failed append left the store unusable", "err", err, "cause", cause)
		return fmt.Errorf("local store %s: %w (rollback failed: %v)", s.dir, cause, err)
	}
	return fmt.Errorf("local store %s: %w", s.dir, cause)
}

// enforceCap deletes the oldest segments while the store is over its cap, never the
// active one. In spool mode a segment with events not yet shipped is still deleted — the
// cap protects the disk — but its unshipped events are counted and reported as a loss.
func (s *Store) enforceCap() {
	for s.total > s.opts.MaxBytes && len(s.segs) > 1 {
		old := s.segs[0]
		reason := reasonRetention
		var l loss
		if s.opts.Spool {
			reason = reasonShipped
			if old.last > s.shipped {
				reason = reasonUnshipped
				var err error
				l, err = countUnshipped(old, s.shipped)
				if err != nil {
					s.log.Error("counting unshipped events in a segment about to be deleted", "file", old.path, "err", err)
				}
			}
		}
		if err := os.Remove(old.path); err != nil && !errors.Is(err, os.ErrNotExist) {
			s.log.Error("deleting segment over the cap", "file", old.path, "err", err)
			return
		}
		s.segs = s.segs[1:]
		s.total -= old.size
		s.m.deletedSegs.WithLabelValues(reason).Inc()
		s.log.Info("deleted segment over the cap", "file", old.path, "bytes", old.size, "reason", reason,
			"first_seq", old.first, "last_seq", old.last)
		if reason == reasonUnshipped {
			l.detail = fmt.Sprintf("the local store, over its cap of %d bytes, deleted %d events that were not shipped",
				s.opts.MaxBytes, l.lost)
			if l.carried > 0 {
				l.detail += fmt.Sprintf(", among them gap events that reported %d earlier losses (counted here again)", l.carried)
				l.lost += l.carried
			}
			s.m.lostEvents.Add(float64(l.lost))
			s.log.Error("deleted events that were never shipped", "first_seq", l.first, "last_seq", l.last, "lost", l.lost)
			if s.onLoss != nil {
				s.onLoss(l.first, l.last, l.lost, l.detail)
			} else {
				s.losses = append(s.losses, l)
			}
		}
	}
	s.updateGauges()
}

// countUnshipped counts what deleting sg loses: its events with seq > shipped, plus what
// the gap events among them reported — a gap event deleted before it was shipped passes
// its count on, so the surviving reports still add up to every loss. The range starts at
// the shipped floor, not at sg: everything since the floor is gone by now, and the newest
// report then covers the ranges of older ones that were deleted in turn.
func countUnshipped(sg segment, shipped uint64) (loss, error) {
	l := loss{first: shipped + 1, last: sg.last}
	f, err := os.Open(sg.path)
	if err != nil {
		// Count the seq range, the best estimate left.
		l.lost = sg.last - max(sg.first, shipped+1) + 1
		return l, err
	}
	defer f.Close()
	lr := newLineReader(f, 0)
	for {
		line, _, err := lr.line()
		if err != nil {
			return l, nil
		}
		if seq, ok := lineSeq(line); ok && seq <= shipped {
			continue
		}
		l.lost++
		if bytes.Contains(line, gapType) {
			if e, err := decodeLine(line); err == nil && e.Type == event.TypeGap {
				l.carried += e.Lost
			}
		}
	}
}

var gapType = []byte(`"type":"gap"`)

func (s *Store) updateGauges() {
	s.m.bytes.Set(float64(s.total))
	s.m.segments.Set(float64(len(s.segs)))
}

func (s *Store) syncLoop() {
	defer close(s.syncDone)
	t := time.NewTicker(s.opts.SyncInterval)
	defer t.Stop()
	for {
		select {
		case <-s.stopSync:
			return
		case <-t.C:
			s.mu.Lock()
			if !s.closed {
				if err := s.syncActive(); err != nil {
					s.log.Error("periodic fsync", "err", err)
				}
			}
			s.mu.Unlock()
		}
	}
}

// Close syncs and closes the store and releases the directory.
func (s *Store) Close() error {
	s.stopOnce.Do(func() {
		if s.stopSync != nil {
			close(s.stopSync)
			<-s.syncDone
		}
	})
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	close(s.notify)
	var errs []error
	if s.active != nil {
		errs = append(errs, s.syncActive(), s.active.Close())
		s.active = nil
	}
	if s.lock != nil {
		errs = append(errs, s.lock.Close()) // closing drops the flock
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("closing local store %s: %w", s.dir, err)
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("opening directory to sync: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("syncing directory %s: %w", dir, err)
	}
	return nil
}
