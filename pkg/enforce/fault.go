package enforce

import (
	"fmt"
	"runtime/debug"
	"time"

	"github.com/vigil-db/vigil/internal/fault"
	"github.com/vigil-db/vigil/pkg/event"
)

// A panic on one session's goroutines is a bug in the proxy (or in the policy it calls).
// It must close that session, fail closed, and leave the agent and every other session
// running, as Vitess's handle() does for a MySQL connection: net/http-style recovery, but
// recorded, because an audit trail that loses a session to a crash must say so.

// faultMessage is what the client is told; the details stay in the agent's log.
const faultMessage = "Vigil proxy internal error: the session was closed (the agent log says where)"

// guard recovers a panic on the goroutine that defers it and turns it into a session error
// (reason "internal") in *err. side names the goroutine for the log and the trail.
func (ss *session) guard(side string, err *error) {
	r := recover()
	if r == nil {
		return
	}
	what, where := fault.Describe(r)
	ss.srv.log.Error("proxy session failed with an internal error; closing it", "session_id", ss.id,
		"client_addr", ss.clientAddr, "db_user", ss.user, "side", side, "panic", what, "at", where,
		"stack", string(debug.Stack()))
	ss.setFatal("XX000", faultMessage)
	e := ss.eventBase(time.Now())
	e.Type = event.TypeFault
	e.Detail = fmt.Sprintf("proxy session closed by an internal error on the %s side: %s at %s", side, what, where)
	ss.srv.sink.Emit(e)
	*err = &sessionError{reason: reasonInternal, resp: errorMsg("FATAL", "XX000", faultMessage, ""),
		err: fmt.Errorf("internal error on the %s side: %s at %s", side, what, where)}
	if side == "startup" {
		// Before the relay, which writes the fatal error on its way out.
		ss.tellClient(*err)
	}
}
