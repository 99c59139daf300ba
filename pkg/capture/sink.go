// Package capture turns what the kernel hooks see into statement events: per-connection
// stream reassembly, protocol decoding, identity enrichment and classification. It knows
// nothing of where events go; the agent hands it a Sink.
package capture

import "github.com/vigil-db/vigil/pkg/event"

// Sink receives finished events. Emit must not block for long: it runs on the capture
// path. It takes ownership of e.
type Sink interface {
	Emit(e *event.Event)
}

// SinkFunc adapts a function to Sink.
type SinkFunc func(e *event.Event)

// Emit calls f(e).
func (f SinkFunc) Emit(e *event.Event) { f(e) }
