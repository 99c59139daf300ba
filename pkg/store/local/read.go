package local

import (
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
// starts at the segment that holds the next seq; with q.Limit it returns the last Limit
// matches, reading segments from the newest back until it has them. A line that does not
// decode is skipped, logged with its file and line and counted
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
	if q.Limit <= 0 {
		for i := range segs {
			if err := s.scan(ctx, segs[i], i == len(segs)-1, &q, fn); err != nil {
				return err
			}
		}
		return nil
	}

	// Newest segment first, keeping the last Limit matches of each, until there are enough.
	var picked []*event.Event // in seq order
	for i := len(segs) - 1; i >= 0 && len(picked) < q.Limit; i-- {
		var matches []*event.Event
		need := q.Limit - len(picked)
		err := s.scan(ctx, segs[i], i == len(segs)-1, &q, func(e *event.Event) error {
			matches = append(matches, e)
			if len(matches) > need {
				matches[0] = nil
				matches = matches[1:]
			}
			return nil
		})
		if err != nil {
			return err
		}
		picked = append(matches, picked...)
	}
	for _, e := range picked {
		if err := fn(e); err != nil {
			return err
		}
	}
	return nil
}

// scan reads one segment, calling fn for each matching event. last says whether it is
// the newest segment seen, where a read-only open may meet a line still being written.
func (s *Store) scan(ctx context.Context, sg segment, last bool, q *store.Query, fn func(*event.Event) error) error {
	f, err := os.Open(sg.path)
	if errors.Is(err, os.ErrNotExist) {
		// Deleted by retention since the snapshot: those events are gone for every reader.
		s.log.Debug("segment deleted while reading", "file", sg.path)
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading local store: %w", err)
	}
	defer f.Close()
	lr := newLineReader(io.LimitReader(f, sg.size))
	for n := 0; ; n++ {
		if n%1024 == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		line, complete, err := lr.next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("reading %s: %w", sg.path, err)
		}
		if !complete {
			if last && s.opts.ReadOnly {
				return nil // the writer is mid-append, or crashed there; its next open cuts it
			}
			s.corrupt(sg.path, lr.line, errors.New("line has no newline"))
			return nil
		}
		if q.AfterSeq > 0 {
			if seq, ok := lineSeq(line); ok && seq <= q.AfterSeq {
				continue
			}
		}
		e, err := decodeLine(line)
		if err != nil {
			s.corrupt(sg.path, lr.line, err)
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

func (s *Store) corrupt(path string, line int, err error) {
	s.m.corruptLines.Inc()
	s.log.Error("skipping undecodable line", "file", path, "line", line, "err", err)
}
