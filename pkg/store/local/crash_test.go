package local

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vigil-db/vigil/pkg/store"
)

const crashEnv = "VIGIL_LOCAL_CRASH_CHILD"

// crashChild appends batches until it is killed, printing the last seq of every batch
// that Append acknowledged.
func crashChild(dir string, interval time.Duration) {
	s, err := Open(dir, Options{SegmentBytes: 64 << 10, SyncInterval: interval}, nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	next, _ := s.Last()
	next++
	deadline := time.Now().Add(20 * time.Second) // never outlive a parent that forgot us
	for n := uint64(1); time.Now().Before(deadline); n = n%17 + 1 {
		evs := mkEvents(next, next+n-1)
		if err := s.Append(context.Background(), evs); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		next += n
		fmt.Printf("ack %d\n", next-1)
	}
	os.Exit(3)
}

func TestCrash(t *testing.T) {
	if dir := os.Getenv(crashEnv); dir != "" {
		interval, _ := time.ParseDuration(os.Getenv(crashEnv + "_INTERVAL"))
		crashChild(dir, interval)
	}
	for _, interval := range []time.Duration{0, 5 * time.Millisecond} {
		t.Run(fmt.Sprintf("sync_interval=%s", interval), func(t *testing.T) {
			dir := t.TempDir()
			var acked uint64
			for round := range 3 {
				acked = max(acked, runAndKill(t, dir, interval, acked))
				t.Logf("round %d: acknowledged up to seq %d", round, acked)
			}

			// A power cut can also leave half a line: add one, as the disk would.
			segs, _ := listSegments(dir)
			f, err := os.OpenFile(segs[len(segs)-1].path, os.O_WRONLY|os.O_APPEND, 0)
			if err != nil {
				t.Fatal(err)
			}
			f.WriteString(`{"time":"2026-11-25T10:00:00Z","type":"stat`)
			f.Close()

			s := open(t, dir, Options{SegmentBytes: 64 << 10})
			if n := value(s.m.tornLines); n != 1 {
				t.Errorf("torn lines cut: %v, want 1", n)
			}
			got := seqs(t, s, store.Query{})
			last, _ := s.Last()
			if last < acked {
				t.Fatalf("store ends at seq %d, but seq %d was acknowledged", last, acked)
			}
			if !slices.Equal(got, span(1, last)) {
				t.Fatalf("store does not hold 1..%d exactly once (%d events)", last, len(got))
			}
			if len(segs) < 3 {
				t.Errorf("only %d segments: the test meant to cross rotations", len(segs))
			}
		})
	}
}

// runAndKill runs a child appending to dir, SIGKILLs it once it has acknowledged more
// than after+300 seqs, and returns the last seq it acknowledged.
func runAndKill(t *testing.T, dir string, interval time.Duration, after uint64) uint64 {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrash$")
	cmd.Env = append(os.Environ(), crashEnv+"="+dir, crashEnv+"_INTERVAL="+interval.String())
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var acked uint64
	killed := false
	sc := bufio.NewScanner(out)
	timer := time.AfterFunc(10*time.Second, func() { cmd.Process.Kill() })
	defer timer.Stop()
	for sc.Scan() {
		seq, err := strconv.ParseUint(strings.TrimPrefix(sc.Text(), "ack "), 10, 64)
		if err != nil {
			continue // the test framework's own lines
		}
		acked = seq
		if !killed && seq > after+300 {
			// Killed mid-stream: the lines already in the pipe are still read below.
			cmd.Process.Signal(syscall.SIGKILL)
			killed = true
		}
	}
	err = cmd.Wait()
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() {
		t.Fatalf("child did not die by the signal: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, lockName)); err != nil {
		t.Fatal(err)
	}
	return acked
}
