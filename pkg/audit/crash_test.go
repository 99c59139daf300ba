package audit

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/vigil-db/vigil/pkg/event"
	"github.com/vigil-db/vigil/pkg/store/local"
)

const crashEnv = "VIGIL_AUDIT_CRASH_CHILD"

// crashChild runs a trail over a local store, emitting until it is killed.
func crashChild(stateDir, storeDir string) {
	st, err := local.Open(storeDir, local.Options{SegmentBytes: 256 << 10}, nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	tr, err := New(Config{Host: "db1", AgentID: "agent-1", StateDir: stateDir, BatchWait: 2 * time.Millisecond}, st, prometheus.NewRegistry())
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	go tr.Run(context.Background())
	deadline := time.Now().Add(20 * time.Second) // never outlive a parent that forgot us
	for i := 0; time.Now().Before(deadline); i++ {
		tr.Emit(stmt(i))
		if i%200 == 0 {
			time.Sleep(time.Millisecond)
		}
	}
	os.Exit(3)
}

func TestCrashKeepsChain(t *testing.T) {
	if dir := os.Getenv(crashEnv); dir != "" {
		crashChild(filepath.Join(dir, "state"), filepath.Join(dir, "store"))
	}
	e := newEnv(t, Config{}, local.Options{SegmentBytes: 256 << 10})
	e.st.Close() // the children write; this process only checks
	base := filepath.Dir(e.stateDir)

	for round := range 3 {
		before := uint64(0)
		if h, err := ReadHead(filepath.Join(e.stateDir, HeadFile)); err == nil {
			before = h.Seq
		}
		cmd := exec.Command(os.Args[0], "-test.run=^TestCrashKeepsChain$")
		cmd.Env = append(os.Environ(), crashEnv+"="+base)
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// Kill it once it has flushed a good many events beyond the last round.
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) {
			if h, err := ReadHead(filepath.Join(e.stateDir, HeadFile)); err == nil && h.Seq > before+3000 {
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
		cmd.Process.Signal(syscall.SIGKILL)
		cmd.Wait()
		if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() {
			t.Fatalf("child did not die by the signal: %v", cmd.ProcessState)
		}

		// Everything the head acknowledges is stored once, in order, and chains.
		head, err := ReadHead(filepath.Join(e.stateDir, HeadFile))
		if err != nil {
			t.Fatal(err)
		}
		evs := e.events()
		for i, ev := range evs {
			if ev.Seq != uint64(i+1) {
				t.Fatalf("round %d: event %d has seq %d", round, i, ev.Seq)
			}
		}
		if uint64(len(evs)) < head.Seq {
			t.Fatalf("round %d: head acknowledges seq %d, store ends at %d", round, head.Seq, len(evs))
		}
		rep := e.verify()
		requireOK(t, rep)
		for _, p := range rep.Problems {
			if p.Kind != KindUnsigned && p.Kind != KindGap {
				t.Fatalf("round %d: %v", round, p)
			}
		}
		t.Logf("round %d: %d events, head at %d", round, len(evs), head.Seq)
	}

	// A normal start after the crashes continues the same chain.
	e.open(Config{})
	e.start()
	e.tr.Emit(stmt(1))
	e.stop()
	rep := e.verify()
	requireOK(t, rep)
	for _, p := range rep.Problems {
		if p.Kind != KindGap { // the children may have overflowed their queue
			t.Fatalf("after a clean stop: %v", p)
		}
	}
	if evs := e.events(); evs[len(evs)-1].Type != event.TypeAnchor {
		t.Fatal("no final anchor")
	}
}
