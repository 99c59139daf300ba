package event

// Sink receives finished events: capture and the enforcing proxy both hand their events to
// one, and the agent wires it to the audit trail. It lives here, beside the event, so that
// producers and the consumer meet without importing each other. Emit must not block for
// long (it runs on the capture and proxy paths) and takes ownership of e.
type Sink interface {
	Emit(e *Event)
}

// SinkFunc adapts a function to Sink.
type SinkFunc func(e *Event)

// Emit calls f(e).
func (f SinkFunc) Emit(e *Event) { f(e) }
