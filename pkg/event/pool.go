package event

import "sync"

// Statement events are allocated as fast as statements run, and each is garbage once the
// trail has stored it. Recycling them takes the largest allocation off the capture path
// and with it a share of the garbage collector's work.
var pool = sync.Pool{New: func() any { return new(Event) }}

// New returns an empty event, a recycled one when there is one.
func New() *Event { return pool.Get().(*Event) }

// Recycle empties e and keeps it for New. Only e's last holder may call it — the audit
// trail, once e is stored: whoever emits an event hands it over and keeps no reference.
func Recycle(e *Event) {
	*e = Event{}
	pool.Put(e)
}
