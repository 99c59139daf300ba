// Package testenv holds what tests need to know about the machine they run on.
package testenv

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"syscall"
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

// Tmpfs mounts a tmpfs of size bytes on a new temporary directory and returns the
// directory; the mount goes when the test ends. A small filesystem is how a test fills a
// disk for real. It needs root like eBPF does: skipped without it, failed when
// VIGIL_REQUIRE_BPF=1.
func Tmpfs(t testing.TB, size int64) string {
	t.Helper()
	dir := t.TempDir()
	out, err := exec.Command("mount", "-t", "tmpfs", "-o", fmt.Sprintf("size=%d", size), "tmpfs", dir).CombinedOutput()
	if err != nil {
		msg := fmt.Sprintf("mounting a tmpfs on %s: %v: %s", dir, err, bytes.TrimSpace(out))
		if os.Getenv("VIGIL_REQUIRE_BPF") == "1" {
			t.Fatal(msg + " (VIGIL_REQUIRE_BPF=1)")
		}
		t.Skip(msg)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("unmounting the tmpfs on %s: %v: %s", dir, err, bytes.TrimSpace(out))
		}
	})
	return dir
}

// FillDisk writes path until the filesystem holding it has no space left (ENOSPC); any
// other error fails t. Remove path to give the space back.
func FillDisk(t testing.TB, path string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	chunk := make([]byte, 4096)
	for {
		if _, err := f.Write(chunk); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("filling the disk: %v", err)
			}
			return
		}
	}
}

// Chromium returns the path of Debian's Chromium, which browser tests drive. Without it
// the test skips, or fails when VIGIL_REQUIRE_BPF=1 says the environment must be complete
// (CI, where scripts/deps.sh installs it).
func Chromium(t testing.TB) string {
	t.Helper()
	p, err := exec.LookPath("chromium")
	if err != nil {
		if os.Getenv("VIGIL_REQUIRE_BPF") == "1" {
			t.Fatalf("chromium is required (apt-get install chromium, as scripts/deps.sh does; VIGIL_REQUIRE_BPF=1): %v", err)
		}
		t.Skipf("no chromium (set VIGIL_REQUIRE_BPF=1 to make this a failure): %v", err)
	}
	return p
}
