// Package local is Vigil's embedded audit store and the spool in front of ClickHouse:
// append-only segments of JSON lines (one event per line) in one directory, fsynced per
// policy, rotated at a size and capped as a whole. A torn last line left by a crash is cut
// on the next open, so a reopened store holds exactly the events that Append acknowledged.
// One process writes (an exclusive lock on the directory enforces it); any number of
// read-only opens, such as the `vigil events` CLI, read alongside it without changing a byte.
package local

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
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
