// Package testenv holds what tests need to know about the machine they run on.
package testenv

import (
	"os"
	"testing"
)

// RequireBPF skips a test that needs root to load eBPF programs, or fails it when
// VIGIL_REQUIRE_BPF=1 says the environment must provide them (CI runs as root: a skip there
// would hide that the kernel side was never tested).
func RequireBPF(t testing.TB) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("VIGIL_REQUIRE_BPF") == "1" {
		t.Fatal("this test loads eBPF programs and needs root (VIGIL_REQUIRE_BPF=1)")
	}
	t.Skip("needs root to load eBPF programs (set VIGIL_REQUIRE_BPF=1 to make this a failure)")
}
