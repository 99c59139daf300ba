package local

// Appending: one write per segment per batch, rotation at the segment size, the fsync
// policy, and the rollback that leaves a segment as it was when a write fails half-way,
// so that what Append acknowledged is exactly what a reopen finds.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"time"

	"github.com/vigil-db/vigil/pkg/event"
)

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
