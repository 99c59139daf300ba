package enforce

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/vigil-db/vigil/pkg/event"
)

// procHWM reads a process's peak resident set (VmHWM) in bytes.
func procHWM(t *testing.T, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmHWM:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	t.Fatal("no VmHWM")
	return 0
}

// TestProxyProcess is not a test: TestBigStatementMemory runs it in a child process (the
// proxy alone, so that its resident set is the proxy's), which serves until its stdin closes.
func TestProxyProcess(t *testing.T) {
	upstream := os.Getenv("VIGIL_TEST_PROXY_UPSTREAM")
	if upstream == "" {
		t.Skip("run by TestBigStatementMemory")
	}
	srv, err := New(Config{Listen: "127.0.0.1:0", Upstream: upstream}, testPolicy(t), event.SinkFunc(func(*event.Event) {}), nil, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	<-srv.Ready()
	fmt.Println("listening", srv.Addr())
	_, _ = io.Copy(io.Discard, os.Stdin)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestBigStatementMemory measures the proxy's peak resident set, in a process of its own,
// while it judges and relays one large statement (16 and 64 MiB, each in a fresh process).
// Warm, a statement of a shape seen before (the classifier's template cache: no parse), must
// cost one copy of the statement and the garbage collector's headroom, not a copy per step
// of the path. Cold, a new shape is parsed in full by pg_query (the parser's own copies of
// the text, in C and in Go), which is logged, not bounded here.
func TestBigStatementMemory(t *testing.T) {
	pg := startPG(t)
	for _, c := range []struct {
		size int
		warm bool
	}{{16 << 20, true}, {64<<20 - 64, true}, {16 << 20, false}, {64<<20 - 64, false}} {
		cmd := exec.Command(os.Args[0], "-test.run=^TestProxyProcess$")
		cmd.Env = append(os.Environ(), "VIGIL_TEST_PROXY_UPSTREAM="+pg.Addr())
		stdin, err := cmd.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		line, err := bufio.NewReader(stdout).ReadString('\n')
		if err != nil || !strings.HasPrefix(line, "listening ") {
			t.Fatalf("child proxy: %q %v", line, err)
		}
		rs := rawDial(t, strings.TrimSpace(strings.TrimPrefix(line, "listening ")), "analyst")
		if c.warm {
			rs.write(wire(t, &pgproto3.Query{String: "SELECT length('x')"}))
			rs.read(1)
		}
		msg := wire(t, &pgproto3.Query{String: "SELECT length('" + string(bytes.Repeat([]byte("x"), c.size-64)) + "')"})
		base := procHWM(t, cmd.Process.Pid)
		rs.write(msg)
		got := rs.readWithin(1, 30*time.Second)
		peak := procHWM(t, cmd.Process.Pid)
		rs.c.Close()
		stdin.Close()
		if err := cmd.Wait(); err != nil {
			t.Fatalf("child proxy: %v", err)
		}
		t.Logf("%d MiB statement (warm %v): proxy peak RSS %d MiB (%d MiB before it)", c.size>>20, c.warm, peak>>20, base>>20)
		if !strings.HasSuffix(got, "TDCZ") {
			t.Fatalf("answer %q", got)
		}
		if limit := base + 2*int64(c.size); c.warm && peak > limit {
			t.Errorf("peak RSS %d MiB for a %d MiB statement: more than 2 copies of it", peak>>20, c.size>>20)
		}
	}
}
