package capture

import (
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/vigil-db/vigil/pkg/event"
)

// Unix-socket capture is switched on by a client's connect() (see unixGate), so a short
// session can end before the tracepoints are attached, leaving nothing to decode. Every
// connect to a watched server's socket is therefore kept until capture sees its session,
// and reported as a gap event if it never does: the trail must say what it lacks.
//
// All of this runs on the capture goroutine.

// unixConnect is a client's connect() to a watched server's Unix socket, as the kernel
// reported it.
type unixConnect struct {
	proc *event.Process
	path string // as the client named it
	at   time.Time
}

// unixMissAfter is how long a connect waits for its session before it counts as missed:
// far beyond the few milliseconds from a connect to the backend's first read, so that
// records delayed by a loaded host still arrive first.
const unixMissAfter = 5 * time.Second

// awaitUnixSession keeps a connect until its session is seen. Past maxPending waiting
// connects it is reported at once rather than followed, which keeps the bookkeeping
// bounded without dropping anything unsaid.
func (c *Capturer) awaitUnixSession(client uint32, u unixConnect) {
	if c.unixPendN >= maxPending {
		c.unixMissed(u, u.at, "was not followed (too many Unix-socket connects awaiting their sessions): its statements may not have been recorded")
		return
	}
	c.unixPend[client] = append(c.unixPend[client], u)
	c.unixPendN++
}

// unixAccounted settles the oldest waiting connect of a Unix-socket session's client once
// the session is in the trail: seen from its startup message, or with an event recorded.
// Once per session, so a client's later connects stay waiting for their own sessions.
func (c *Capturer) unixAccounted(cn *conn) {
	cn.accounted = true
	q := c.unixPend[cn.peer]
	switch len(q) {
	case 0:
		return // connected before the agent started, or unknown client
	case 1:
		delete(c.unixPend, cn.peer)
	default:
		c.unixPend[cn.peer] = q[1:]
	}
	c.unixPendN--
}

// sweepUnixConnects reports the connects whose sessions capture has not seen within
// unixMissAfter. A client still running keeps its connects waiting: its session may be
// idle since before capture attached, and will be joined late when it next talks.
func (c *Capturer) sweepUnixConnects(now time.Time) {
	if len(c.unixPend) == 0 || now.Sub(c.lastUnixSweep) < 250*time.Millisecond {
		return
	}
	c.lastUnixSweep = now
	for client, q := range c.unixPend {
		n := 0
		for n < len(q) && now.Sub(q[n].at) > unixMissAfter {
			n++
		}
		if n == 0 {
			continue
		}
		if _, err := os.Stat("/proc/" + strconv.Itoa(int(client))); err == nil {
			continue
		}
		for _, u := range q[:n] {
			c.unixMissed(u, now, "ended before Unix-socket capture attached: its statements were not recorded")
		}
		if n == len(q) {
			delete(c.unixPend, client)
		} else {
			c.unixPend[client] = q[n:]
		}
		c.unixPendN -= n
	}
}

// unixMissed writes the gap event for a Unix-socket session capture did not see.
func (c *Capturer) unixMissed(u unixConnect, now time.Time, what string) {
	c.m.unixMissed.Inc()
	uid := "unknown"
	if u.proc.UID != nil {
		uid = strconv.Itoa(int(*u.proc.UID))
	}
	c.sink.Emit(&event.Event{
		Time:       now,
		Type:       event.TypeGap,
		Source:     event.SourceEBPF,
		Lost:       1,
		ServerAddr: u.path,
		Process:    u.proc,
		Detail: fmt.Sprintf("the Unix-socket session of client process %q (pid %d, uid %s) to %s %s",
			u.proc.Comm, u.proc.PID, uid, u.path, what),
	})
}
