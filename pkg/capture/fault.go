package capture

import (
	"fmt"
	"log/slog"
	"runtime"
	"runtime/debug"
	"strings"
	"time"

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
			cn.fail(r, ts)
		}
	}()
	f()
}

func (cn *conn) fail(r any, ts time.Time) {
	cn.failed = true
	c := cn.c
	c.m.decoderFaults.Inc()
	where := panicSite()
	// The panic value may quote captured bytes (statements, parameters): only a runtime
	// error's own message, which holds none, is logged or recorded.
	what := fmt.Sprintf("panic with a %T value", r)
	if re, ok := r.(runtime.Error); ok {
		what = re.Error()
	}
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

// panicSite is the innermost frame of the panicking code outside the runtime, as
// "function file:line".
func panicSite() string {
	pc := make([]uintptr, 32)
	n := runtime.Callers(4, pc) // runtime.Callers, panicSite, fail, the deferred func
	frames := runtime.CallersFrames(pc[:n])
	for {
		f, more := frames.Next()
		if !strings.HasPrefix(f.Function, "runtime.") {
			file := f.File
			if i := strings.LastIndex(file, "/"); i >= 0 {
				file = file[i+1:]
			}
			return fmt.Sprintf("%s %s:%d", f.Function, file, f.Line)
		}
		if !more {
			return "unknown"
		}
	}
}
