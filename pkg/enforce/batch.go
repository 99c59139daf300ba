package enforce

import (
	"sync"
	"time"

	"github.com/vigil-db/vigil/pkg/capture"
	"github.com/vigil-db/vigil/pkg/event"
)

// Handing each event to the sink as it happens costs a goroutine wake-up per statement (the
// trail's writer parks on its queue between events), which at a few thousand statements per
// second per session is a large share of the proxy's CPU. Events are therefore collected for
// up to batchDelay and handed over in one burst: the writer wakes once per burst. Nothing is
// dropped here; a full batch is handed over at once by the session that filled it.
const (
	batchDelay = 2 * time.Millisecond
	batchMax   = 256
)

type eventBatch struct {
	sink capture.Sink

	// emitMu serializes hand-overs, so batches reach the sink in the order they were
	// collected (the trail numbers events in the order it receives them).
	emitMu sync.Mutex

	mu     sync.Mutex
	events []*event.Event
	spare  []*event.Event
	timer  *time.Timer
	armed  bool
}

func newEventBatch(sink capture.Sink) *eventBatch {
	b := &eventBatch{sink: sink}
	b.timer = time.AfterFunc(time.Hour, b.flush)
	b.timer.Stop()
	return b
}

// add queues e for the sink, which takes ownership of it.
func (b *eventBatch) add(e *event.Event) {
	b.mu.Lock()
	b.events = append(b.events, e)
	full := len(b.events) >= batchMax
	if !full && !b.armed {
		b.armed = true
		b.timer.Reset(batchDelay)
	}
	b.mu.Unlock()
	if full {
		b.flush()
	}
}

// flush hands every queued event to the sink now.
func (b *eventBatch) flush() {
	b.emitMu.Lock()
	defer b.emitMu.Unlock()
	b.mu.Lock()
	out := b.events
	b.events, b.spare = b.spare[:0], nil
	if b.armed {
		b.armed = false
		b.timer.Stop()
	}
	b.mu.Unlock()
	for i, e := range out {
		b.sink.Emit(e)
		out[i] = nil
	}
	b.mu.Lock()
	if b.spare == nil && cap(out) <= 4*batchMax {
		b.spare = out[:0]
	}
	b.mu.Unlock()
}
