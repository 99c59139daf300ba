// Package testsink is the event.Sink that tests hand to capture and to the proxy: it keeps
// every event and waits for the ones a test expects.
package testsink

import (
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vigil-db/vigil/pkg/event"
)

// Collector keeps every event emitted to it. The zero value is ready.
type Collector struct {
	mu     sync.Mutex
	events []*event.Event
}

// Emit implements event.Sink.
func (c *Collector) Emit(e *event.Event) {
	c.mu.Lock()
	c.events = append(c.events, e)
	c.mu.Unlock()
}

// Events returns the events so far.
func (c *Collector) Events() []*event.Event {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*event.Event(nil), c.events...)
}

// Reset forgets the events so far.
func (c *Collector) Reset() {
	c.mu.Lock()
	c.events = nil
	c.mu.Unlock()
}

// Wait returns the events matching match once there are at least n of them, failing t
// after 10 s with every event collected.
func (c *Collector) Wait(t testing.TB, n int, what string, match func(*event.Event) bool) []*event.Event {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var got []*event.Event
		for _, e := range c.Events() {
			if match(e) {
				got = append(got, e)
			}
		}
		if len(got) >= n {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d events after 10s, want %d; all events:\n%s", what, len(got), n, Dump(c.Events()))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Find waits for the first event whose statement contains sub.
func (c *Collector) Find(t testing.TB, sub string) *event.Event {
	t.Helper()
	return c.Wait(t, 1, "an event for "+sub, func(e *event.Event) bool { return strings.Contains(e.Statement, sub) })[0]
}

// StatementContains matches statement events whose text contains s.
func StatementContains(s string) func(*event.Event) bool {
	return func(e *event.Event) bool { return e.Type == event.TypeStatement && strings.Contains(e.Statement, s) }
}

// Dump renders events as JSON lines, for failure messages.
func Dump(evs []*event.Event) string {
	var b strings.Builder
	for _, e := range evs {
		j, _ := json.Marshal(e)
		b.Write(j)
		b.WriteByte('\n')
	}
	return b.String()
}
