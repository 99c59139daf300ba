package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vigil-db/vigil/internal/testenv"
	"github.com/vigil-db/vigil/pkg/bpffs"
	"github.com/vigil-db/vigil/pkg/capture/ebpf"
)

// TestStateDirLock: a second agent on a state directory is refused, naming the first one's
// pid, and the directory is free again once the first lets go; `vigil unpin` refuses too
// while an agent runs there.
func TestStateDirLock(t *testing.T) {
	dir := t.TempDir()
	lock, err := lockStateDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	_, err = lockStateDir(dir)
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("in use by another agent (pid %d)", os.Getpid())) {
		t.Fatalf("second lock: %v, want a refusal naming pid %d", err, os.Getpid())
	}
	if _, err := vigil(t, context.Background(), "unpin", "--state-dir", dir); err == nil || !strings.Contains(err.Error(), "stop it before unpinning") {
		t.Fatalf("unpin under a running agent: %v, want a refusal", err)
	}
	lock.Close()
	again, err := lockStateDir(dir)
	if err != nil {
		t.Fatalf("lock after the first was released: %v", err)
	}
	again.Close()
	out, err := vigil(t, context.Background(), "unpin", "--state-dir", dir)
	if err != nil || !strings.Contains(out, "nothing pinned") {
		t.Fatalf("unpin with nothing pinned: %q, %v", out, err)
	}
}

// TestPinDirFor: one pin directory per state directory, however it is spelled.
func TestPinDirFor(t *testing.T) {
	a, err := pinDirFor("/var/lib/vigil")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := pinDirFor("/var/lib/vigil/")
	c, _ := pinDirFor("/var/lib/vigil2")
	if a != b || a == c || filepath.Dir(a) != pinRoot || len(filepath.Base(a)) != 16 {
		t.Fatalf("pin dirs %s, %s, %s", a, b, c)
	}
	wd, _ := os.Getwd()
	rel, _ := pinDirFor(".")
	abs, _ := pinDirFor(wd)
	if rel != abs {
		t.Fatalf("relative %s, absolute %s", rel, abs)
	}
}

// TestUnpinCommand: `vigil unpin` removes what an agent left pinned for its state
// directory.
func TestUnpinCommand(t *testing.T) {
	testenv.RequireBPF(t)
	state := t.TempDir()
	dir, err := pinDirFor(state)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = bpffs.Unpin(dir) })
	tr, err := ebpf.Load(ebpf.Config{PinDir: dir, RingBytes: 1 << 20}, ignore{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := tr.Close(); err != nil {
		t.Fatal(err)
	}
	if ents, err := os.ReadDir(dir); err != nil || len(ents) == 0 {
		t.Fatalf("pins in %s after the tracer closed: %v, %v", dir, ents, err)
	}
	out, err := vigil(t, context.Background(), "unpin", "--state-dir", state)
	if err != nil || !strings.Contains(out, "removed the capture pinned") {
		t.Fatalf("unpin: %q, %v", out, err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("pin directory after unpin: %v", err)
	}
}

// ignore is a tracer handler for a tracer that is never run.
type ignore struct{}

func (ignore) Segment(*ebpf.Segment)         {}
func (ignore) TLS(*ebpf.ProcData)            {}
func (ignore) TLSSocket(*ebpf.TLSSocket)     {}
func (ignore) Unix(*ebpf.ProcData)           {}
func (ignore) Connect(*ebpf.ConnEvent)       {}
func (ignore) UnixConnect(*ebpf.UnixConnect) {}
func (ignore) Idle()                         {}
