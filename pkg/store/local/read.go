package local

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/vigil-db/vigil/pkg/event"
	"github.com/vigil-db/vigil/pkg/store"
)

// snapshot returns the segments a read may see. A writer's sizes are what it has fully
// written, so a read never meets half a line; a read-only open sees the files as they are
// and skips a partial last line instead.
func (s *Store) snapshot() ([]segment, error) {
	if s.opts.ReadOnly {
		return listSegments(s.dir)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrClosed
	}
	return append([]segment(nil), s.segs...), nil
}

// Read calls fn for each stored event that matches q, in seq order. With q.AfterSeq it
// starts in the segment that holds the next seq, near it (the writer keeps a sparse seq
// index), so a spool consumer's read costs what it reads, not the segment. With q.Limit it
// returns the last Limit matches, decoding segments from their end backwards until it has
// them. A line that does not decode is skipped, logged with its file and line and counted
// (vigil_store_local_corrupt_lines_total); the seq gap it leaves is what `vigil verify`
// reports.
func (s *Store) Read(ctx context.Context, q store.Query, fn func(*event.Event) error) error {
	segs, err := s.snapshot()
	if err != nil {
		return err
	}
	first := 0
	if q.AfterSeq > 0 {
		// The last segment starting at or before AfterSeq+1 holds it; all before hold less.
		for i, sg := range segs {
			if sg.first <= q.AfterSeq+1 {
				first = i
			}
		}
	}
	segs = segs[first:]
	var start int64
	if q.AfterSeq > 0 && len(segs) > 0 {
		start = s.seek(&segs[0], q.AfterSeq)
	}
	if q.Limit <= 0 {
		for i := range segs {
			if err := s.scan(ctx, segs[i], start, i == len(segs)-1, &q, fn); err != nil {
				return err
			}
			start = 0
		}
		return nil
	}

	// Newest segment first, until there are Limit matches.
	var picked []*event.Event // newest first
	for i := len(segs) - 1; i >= 0 && len(picked) < q.Limit; i-- {
		from := int64(0)
		if i == 0 {
			from = start
		}
		var err error
		if picked, err = s.scanBack(ctx, segs[i], from, i == len(segs)-1, &q, picked); err != nil {
			return err
		}
	}
	for i := len(picked) - 1; i >= 0; i-- {
		if err := fn(picked[i]); err != nil {
			return err
		}
	}
	return nil
}

// seek returns where in sg the events after seq start, at most indexEvery before them.
// The writer indexes what it appends; a segment from before it opened the store is
// indexed on the first seek into it. A read-only open reads from the segment's start.
func (s *Store) seek(sg *segment, seq uint64) int64 {
	if s.opts.ReadOnly || sg.size < indexEvery {
		return 0
	}
	if !sg.indexed {
		index, err := buildIndex(sg.path, sg.size)
		if err != nil {
			s.log.Warn("indexing segment", "file", sg.path, "err", err)
			return 0
		}
		s.mu.Lock()
		for i := range s.segs {
			// Keep what the writer indexed since the snapshot.
			if cur := &s.segs[i]; cur.first == sg.first {
				for _, e := range cur.index {
					if len(index) == 0 || e.off > index[len(index)-1].off {
						index = append(index, e)
					}
				}
				cur.index, cur.indexed = index, true
			}
		}
		s.mu.Unlock()
		sg.index = index
	}
	return seekOffset(sg.index, seq)
}

// openAt opens sg for reading from offset start; ok is false when retention deleted it
// since the snapshot: those events are gone for every reader.
func (s *Store) openAt(sg segment, start int64) (f *os.File, ok bool, err error) {
	f, err = os.Open(sg.path)
	if errors.Is(err, os.ErrNotExist) {
		s.log.Debug("segment deleted while reading", "file", sg.path)
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("reading local store: %w", err)
	}
	if _, err := f.Seek(start, io.SeekStart); err != nil {
		f.Close()
		return nil, false, fmt.Errorf("reading %s: %w", sg.path, err)
	}
	return f, true, nil
}

// scan reads sg from offset start, calling fn for each matching event. last says whether
// it is the newest segment seen, where a read-only open may meet a line being written.
func (s *Store) scan(ctx context.Context, sg segment, start int64, last bool, q *store.Query, fn func(*event.Event) error) error {
	f, ok, err := s.openAt(sg, start)
	if !ok {
		return err
	}
	defer f.Close()
	lr := newLineReader(io.LimitReader(f, sg.size-start), start)
	for n := 0; ; n++ {
		if n%1024 == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		line, complete, err := lr.line()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("reading %s: %w", sg.path, err)
		}
		if !complete {
			if !(last && s.opts.ReadOnly) {
				s.corrupt(f, sg.path, lr.off, errors.New("line has no newline"))
			}
			// Else the writer is mid-append, or crashed there; its next open cuts it.
			return nil
		}
		if q.AfterSeq > 0 {
			if seq, ok := lineSeq(line); ok && seq <= q.AfterSeq {
				continue
			}
		}
		e, err := decodeLine(line)
		if err != nil {
			s.corrupt(f, sg.path, lr.off, err)
			continue
		}
		if !q.Match(e) {
			continue
		}
		if err := fn(e); err != nil {
			return err
		}
	}
}

// backChunk is how much scanBack reads at a time from a segment's end.
const backChunk = 256 << 10

// scanBack decodes sg from its end back to offset start, adding matches to picked
// (newest first) until there are q.Limit: a query for the last few events reads the last
// chunk of the segment, not all of it.
func (s *Store) scanBack(ctx context.Context, sg segment, start int64, last bool, q *store.Query, picked []*event.Event) ([]*event.Event, error) {
	f, ok, err := s.openAt(sg, 0)
	if !ok {
		return picked, err
	}
	defer f.Close()
	nl, err := lastNewline(f, sg.size)
	if err != nil {
		return picked, fmt.Errorf("reading %s: %w", sg.path, err)
	}
	end := nl + 1
	if end < sg.size && !(last && s.opts.ReadOnly) {
		s.corrupt(f, sg.path, end, errors.New("line has no newline"))
	}

	// carry is the end of a line that began before pos (with its newline).
	var carry []byte
	for pos := end; pos > start && len(picked) < q.Limit; {
		if err := ctx.Err(); err != nil {
			return picked, err
		}
		n := min(backChunk, pos-start)
		buf := make([]byte, n+int64(len(carry)))
		if _, err := f.ReadAt(buf[:n], pos-n); err != nil {
			return picked, fmt.Errorf("reading %s: %w", sg.path, err)
		}
		copy(buf[n:], carry)
		pos -= n
		// Only lines after the first newline are whole, unless this is the start.
		lowest := 0
		if pos > start {
			lowest = bytes.IndexByte(buf, '\n') + 1
			if lowest == 0 {
				carry = buf // a line longer than the chunk
				continue
			}
		}
		for e := len(buf); e > lowest && len(picked) < q.Limit; {
			b := bytes.LastIndexByte(buf[:e-1], '\n') + 1
			line := buf[b : e-1]
			e = b
			if q.AfterSeq > 0 {
				if seq, ok := lineSeq(line); ok && seq <= q.AfterSeq {
					return picked, nil // everything before is older still
				}
			}
			ev, err := decodeLine(line)
			if err != nil {
				s.corrupt(f, sg.path, pos+int64(b), err)
				continue
			}
			if q.Match(ev) {
				picked = append(picked, ev)
			}
		}
		carry = buf[:lowest]
	}
	return picked, nil
}

// corrupt logs and counts a line that does not decode, naming file and line.
func (s *Store) corrupt(f *os.File, path string, off int64, err error) {
	s.m.corruptLines.Inc()
	s.log.Error("skipping undecodable line", "file", path, "line", lineNumber(f, off), "offset", off, "err", err)
}
