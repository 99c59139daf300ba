package fault

import (
	"strings"
	"testing"
)

func TestDescribe(t *testing.T) {
	for _, tc := range []struct {
		name      string
		panic     func()
		what      string
		notInWhat string
	}{
		{"runtime error", func() { var s []int; _ = s[len(t.Name())] }, "index out of range", ""},
		{"value that quotes data", func() { panic("SELECT secret") }, "panic with a string value", "secret"},
		{"error value", func() { panic(errString("password=hunter2")) }, "panic with a fault.errString value", "hunter2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var what, where string
			func() {
				defer func() { what, where = Describe(recover()) }()
				tc.panic()
			}()
			if !strings.Contains(what, tc.what) || tc.notInWhat != "" && strings.Contains(what, tc.notInWhat) {
				t.Errorf("what = %q", what)
			}
			if !strings.Contains(where, "fault_test.go:") || !strings.Contains(where, "TestDescribe") {
				t.Errorf("where = %q, want the panicking frame in this file", where)
			}
		})
	}
}

type errString string

func (e errString) Error() string { return string(e) }
