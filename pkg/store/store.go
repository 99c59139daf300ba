// Package store defines what every audit store offers — appending events in sequence order
// and reading them back with filters — and the filter type the CLI and forensic queries
// share. The local store (pkg/store/local) and ClickHouse (pkg/store/clickhouse) implement it.
package store

import (
	"context"
	"time"

	"github.com/vigil-db/vigil/pkg/event"
)

// Appender stores events durably, in the order given (ascending seq).
type Appender interface {
	Append(ctx context.Context, events []*event.Event) error
	Close() error
}

// Reader reads stored events in ascending seq order (per agent) that match q, calling fn for
// each until fn returns an error or the events run out.
type Reader interface {
	Read(ctx context.Context, q Query, fn func(*event.Event) error) error
}

// Query filters events. Zero fields do not filter.
type Query struct {
	Since, Until time.Time
	DBUser       string
	Database     string
	Table        string // matches when the event's tables contain it
	Kind         string
	Type         event.Type
	NotType      event.Type // leave out this type (the CLI's table hides anchors)
	Decision     string
	SessionID    string
	AgentID      string
	AfterSeq     uint64 // only events with seq > AfterSeq (a spool cursor); 0: from the start
	Limit        int    // 0: no limit; otherwise the last Limit matching events
}

// Match reports whether e passes q's filters (not Limit).
func (q *Query) Match(e *event.Event) bool {
	if q.AfterSeq != 0 && e.Seq <= q.AfterSeq {
		return false
	}
	if !q.Since.IsZero() && e.Time.Before(q.Since) {
		return false
	}
	if !q.Until.IsZero() && !e.Time.Before(q.Until) {
		return false
	}
	if q.DBUser != "" && e.DBUser != q.DBUser ||
		q.Database != "" && e.Database != q.Database ||
		q.Kind != "" && e.Kind != q.Kind ||
		q.Type != "" && e.Type != q.Type ||
		q.NotType != "" && e.Type == q.NotType ||
		q.Decision != "" && e.Decision != q.Decision ||
		q.SessionID != "" && e.SessionID != q.SessionID ||
		q.AgentID != "" && e.AgentID != q.AgentID {
		return false
	}
	if q.Table != "" {
		for _, t := range e.Tables {
			if t == q.Table {
				return true
			}
		}
		return false
	}
	return true
}
