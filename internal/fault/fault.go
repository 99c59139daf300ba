// Package fault describes a recovered panic for the log and the audit trail without
// leaking what the panic value may quote: capture and the proxy recover per connection, and
// both name the bug the same way.
package fault

import (
	"fmt"
	"runtime"
	"strings"
)

// Describe says what panicked and where, for a recover() in a deferred function that
// calls Describe directly. A panic value may quote client data (a statement, a parameter),
// so only a runtime error's own message, which holds none, is kept; other values are named
// by their type. where is the innermost frame outside the runtime, "function file:line".
func Describe(r any) (what, where string) {
	what = fmt.Sprintf("panic with a %T value", r)
	if re, ok := r.(runtime.Error); ok {
		what = re.Error()
	}
	pc := make([]uintptr, 32)
	n := runtime.Callers(3, pc) // runtime.Callers, Describe, the deferred function
	frames := runtime.CallersFrames(pc[:n])
	for {
		f, more := frames.Next()
		if !strings.HasPrefix(f.Function, "runtime.") {
			file := f.File
			if i := strings.LastIndex(file, "/"); i >= 0 {
				file = file[i+1:]
			}
			return what, fmt.Sprintf("%s %s:%d", f.Function, file, f.Line)
		}
		if !more {
			return what, "unknown"
		}
	}
}
