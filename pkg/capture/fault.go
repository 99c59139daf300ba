package capture

import (
	"fmt"
	"log/slog"
	"runtime/debug"
	"time"

	"github.com/vigil-db/vigil/internal/fault"
	"github.com/vigil-db/vigil/pkg/event"
)

// One connection's bytes must never take capture down: a panic in its decoder (or in the
// classification and labelling its statements go through) is a bug met by that
// connection. guarded recovers it, stops decoding that connection only, and records the
// rest of the session as lost — a gap event that verify counts — while every other
// connection and the trail go on.

// guarded runs f, one step of cn's decoding, unless cn has failed before.
func (cn *conn) guarded(ts time.Time, f func()) {
	if cn.failed {
		return
	}
	defer func() {
		if r := recover(); r != nil {
			what, where := fault.Describe(r)
			cn.fail(what, where, ts)
		}
	}()
	f()
}

func (cn *conn) fail(what, where string, ts time.Time) {
	cn.failed = true
	c := cn.c
	c.m.decoderFaults.Inc()
	c.log.Error("capture failed on one connection with an internal error; it is no longer decoded",
		"session_id", cn.id, "client_addr", cn.clientStr.get(cn.client), "server_addr", cn.serverAddr(),
		"panic", what, "at", where, slog.String("stack", string(debug.Stack())))
	e := &event.Event{
		Time: ts, Type: event.TypeGap, Source: event.SourceEBPF, Lost: 1,
		SessionID: cn.id, ServerAddr: cn.serverAddr(), Process: cn.proc,
		Detail: fmt.Sprintf("capture stopped decoding this session after an internal error (%s at %s): its statements from here on are not recorded", what, where),
	}
	if cn.client.IsValid() {
		e.ClientAddr = cn.clientStr.get(cn.client)
	}
	c.sink.Emit(e)
}

func (cn *conn) serverAddr() string {
	if cn.path != "" {
		return cn.path
	}
	if cn.server.IsValid() {
		return cn.serverStr.get(cn.server)
	}
	return ""
}
