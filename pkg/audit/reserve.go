package audit

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/vigil-db/vigil/pkg/event"
)

// ReserveFile, in the state directory, holds space for the last record of an agent that
// stops while its disk is full.
const ReserveFile = "reserve"

// reserveBytes is ample for what the reserve must hold: one gap event, one anchor and the
// head file, each well under a page, plus the pages a filesystem rounds them up to.
const reserveBytes = 64 << 10

// makeReserve creates the reserve file, written out so that its blocks are allocated (a
// sparse file would free nothing). Without it (a disk already full at start) the trail
// works the same, except that a stop on a full disk cannot record its loss.
func (t *Trail) makeReserve() {
	if info, err := os.Stat(t.reserve); err == nil && info.Size() == reserveBytes {
		return
	}
	err := func() error {
		f, err := os.OpenFile(t.reserve, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
		if err != nil {
			return err
		}
		_, werr := f.Write(make([]byte, reserveBytes))
		serr := f.Sync()
		return errors.Join(werr, serr, f.Close())
	}()
	if err != nil {
		os.Remove(t.reserve)
		t.log.Warn("cannot reserve space for the trail's last record: if the agent stops while the store's disk is full, "+
			"what it could not store is not recorded in the trail", "file", t.reserve, "err", err)
	}
}

// lastResort runs when the trail stops while the store's disk is still full (cause is
// the store's error): it deletes the reserve file and, in the space that frees, writes
// one gap event for everything it could not store — the batch it held, the events it
// let go, what is still queued — and an anchor, then the head. So even this loss is in
// the chain, under the seqs the lost events had, and signed. It returns nil once that is
// stored; cause if there is no reserve or the record does not fit either.
func (t *Trail) lastResort(ctx context.Context, cause error) error {
	held := t.unstored
	if len(held) == 0 || !diskFull(cause) {
		return cause
	}
	if err := os.Remove(t.reserve); err != nil {
		return cause
	}
	first := held[0].Seq
	var lost uint64
	for _, e := range held {
		switch e.Type {
		case event.TypeAnchor:
		case event.TypeGap:
			// The losses it recorded are lost with it, and so is the range it named.
			lost += e.Lost
			if r, ok := gapRange(e); ok {
				first = min(first, r.from)
			}
		default:
			lost++
			t.m.lost.Inc()
		}
	}
	for drained := false; !drained; {
		select {
		case e := <-t.queue:
			t.letGo(e)
		default:
			drained = true
		}
	}
	lost += t.lostN
	t.lostN, t.unstored = 0, nil
	if t.cfg.Recycle {
		for _, e := range t.batch {
			event.Recycle(e)
		}
	}
	clear(t.batch)
	t.batch = t.batch[:0]

	now := time.Now()
	gap := &event.Event{Time: now, Type: event.TypeGap, Lost: lost, Detail: lostRange(first, t.seq,
		fmt.Sprintf("the agent stopped while the store's disk was full (%v); this record was written into the space of its reserve file", t.failErr))}
	t.lines, t.arena = t.lines[:0], t.arena[:0]
	var sealed []*event.Event
	for _, e := range []*event.Event{gap, {Time: now, Type: event.TypeAnchor, KeyID: t.keyID}} {
		line, err := t.seal(e)
		if err != nil {
			return fmt.Errorf("%w; sealing the record of the loss: %v", cause, err)
		}
		sealed = append(sealed, e)
		t.lines = append(t.lines, line)
	}
	t.unanchored = 0
	if err := t.write(ctx, sealed); err != nil {
		return fmt.Errorf("%w; the record of the loss (seqs %d..%d) did not fit in the reserve either: %v", cause, first, gap.Seq-1, err)
	}
	t.writeHead(true)
	t.log.Error("the agent stopped while the store's disk was full: a gap event records what it could not store",
		"lost_first_seq", first, "lost_last_seq", gap.Seq-1, "lost_events", lost)
	return nil
}
