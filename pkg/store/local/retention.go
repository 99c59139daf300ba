package local

// Retention and loss accounting: the cap on the directory deletes shipped segments first,
// and every unshipped event it deletes is counted and reported to the loss handler, which
// turns it into a gap event, so that the trail names each loss.

import (
	"bytes"
	"errors"
	"fmt"
	"os"

	"github.com/vigil-db/vigil/pkg/event"
)

type loss struct {
	first, last, lost uint64
	carried           uint64 // reported by gap events among the lost
	detail            string
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
