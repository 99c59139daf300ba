package ebpf

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vigil-db/vigil/internal/testenv"
	"github.com/vigil-db/vigil/pkg/bpffs"
)

// pinnedTracer loads a tracer pinned in dir and reads its ring until the test ends or stop
// is called (which closes it without unpinning, as an agent's exit does). Port 0 watches
// no port, as the agent's capture loads before it has found its servers.
func pinnedTracer(t *testing.T, dir string, port uint16, ring int) (tr *Tracer, col *collector, stop func()) {
	t.Helper()
	col = &collector{}
	var ports []uint16
	if port != 0 {
		ports = []uint16{port}
	}
	tr, err := Load(Config{ServerPorts: ports, PinDir: dir, RingBytes: ring}, col, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- tr.Run(ctx) }()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
		if err := tr.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	}
	t.Cleanup(stop)
	return tr, col, stop
}

func (c *collector) saw(port uint16, m string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, s := range c.segs {
		if s.Dst.Port() == port && bytes.Contains(s.Payload, []byte(m)) {
			return true
		}
	}
	return false
}

func pinDir(t *testing.T) string {
	dir := filepath.Join(bpffs.Root, "vigil-test-"+strings.ToLower(marker(t)))
	t.Cleanup(func() { _ = bpffs.Unpin(dir) })
	return dir
}

// loPrograms is the set of TCX ingress program IDs attached to lo. Other test packages
// attach their own there concurrently, so the tests look only at the IDs they pinned.
func loPrograms(t *testing.T) map[ebpf.ProgramID]bool {
	t.Helper()
	lo, err := net.InterfaceByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	res, err := link.QueryPrograms(link.QueryOptions{Target: lo.Index, Attach: ebpf.AttachTCXIngress})
	if err != nil {
		t.Fatalf("querying TCX programs on lo: %v", err)
	}
	ids := make(map[ebpf.ProgramID]bool, len(res.Programs))
	for _, p := range res.Programs {
		ids[p.ID] = true
	}
	return ids
}

// pinnedLoProgram is the ID of the program behind the TCX link on lo pinned in dir.
func pinnedLoProgram(t *testing.T, dir string) ebpf.ProgramID {
	t.Helper()
	lo, err := net.InterfaceByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	pins, err := filepath.Glob(filepath.Join(dir, fmt.Sprintf("%s%d_*", tcxPrefix, lo.Index)))
	if err != nil || len(pins) != 1 {
		t.Fatalf("pinned TCX links on lo in %s: %v %v, want one", dir, pins, err)
	}
	l, err := link.LoadPinnedLink(pins[0], nil)
	if err != nil {
		t.Fatalf("loading %s: %v", pins[0], err)
	}
	defer l.Close()
	info, err := l.Info()
	if err != nil {
		t.Fatalf("link info of %s: %v", pins[0], err)
	}
	return info.Program
}

// TestPinnedCaptureSurvivesRestart: what the kernel captures while no tracer runs is
// delivered by the next one that adopts the pins.
func TestPinnedCaptureSurvivesRestart(t *testing.T) {
	testenv.RequireBPF(t)
	srv := server(t)
	port := uint16(srv.Port)
	dir := pinDir(t)

	tr, col, stop := pinnedTracer(t, dir, port, 0)
	if a := tr.Adoption(); a.Adopted || a.Discarded != "" {
		t.Fatalf("first Load: %+v, want a fresh start", a)
	}
	m1 := marker(t)
	query(t, srv.DSN("postgres", "postgres"), "SELECT '"+m1+"'")
	waitFor(t, "the first tracer's statement", func() bool { return col.saw(port, m1) })
	stop()
	first := pinnedLoProgram(t, dir)
	if !loPrograms(t)[first] {
		t.Fatalf("after the tracer closed, its program %d left lo: the pinned one must stay", first)
	}

	// Nobody reads the ring now.
	m2 := marker(t)
	query(t, srv.DSN("postgres", "postgres"), "SELECT '"+m2+"'")

	tr, col, stop = pinnedTracer(t, dir, port, 0)
	if a := tr.Adoption(); !a.Adopted {
		t.Fatalf("second Load: %+v, want the pins adopted", a)
	}
	waitFor(t, "the statement sent while no tracer ran", func() bool { return col.saw(port, m2) })
	m3 := marker(t)
	query(t, srv.DSN("postgres", "postgres"), "SELECT '"+m3+"'")
	waitFor(t, "the adopting tracer's own statement", func() bool { return col.saw(port, m3) })
	second := pinnedLoProgram(t, dir)
	on := loPrograms(t)
	if !on[second] || on[first] || second == first {
		t.Errorf("after adoption: first program %d attached %v, second %d attached %v; want the program swapped, not added",
			first, on[first], second, on[second])
	}
	stop()

	// Another ring size is another capture: not adopted.
	tr, _, stop = pinnedTracer(t, dir, port, 1<<20)
	if a := tr.Adoption(); a.Adopted || a.Discarded == "" {
		t.Errorf("Load with another ring size: %+v, want the pins discarded", a)
	}
	stop()
	third := pinnedLoProgram(t, dir)
	if err := bpffs.Unpin(dir); err != nil {
		t.Fatalf("Unpin: %v", err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("pin directory after Unpin: %v", err)
	}
	// The kernel releases an unpinned link after an RCU grace period, not at unlink.
	waitFor(t, "the unpinned programs to leave lo", func() bool {
		on := loPrograms(t)
		return !on[first] && !on[second] && !on[third]
	})
}

// TestPinnedPortsStayWatched: a tracer that adopts the pins keeps watching the previous
// one's ports until it is told which to watch: capture does not pause while the agent
// finds its servers again.
func TestPinnedPortsStayWatched(t *testing.T) {
	testenv.RequireBPF(t)
	srv := server(t)
	port := uint16(srv.Port)
	dir := pinDir(t)
	_, _, stop := pinnedTracer(t, dir, port, 0)
	stop()
	tr, col, _ := pinnedTracer(t, dir, 0, 0)
	if a := tr.Adoption(); !a.Adopted {
		t.Fatalf("second Load: %+v, want the pins adopted", a)
	}
	m := marker(t)
	query(t, srv.DSN("postgres", "postgres"), "SELECT '"+m+"'")
	waitFor(t, "the statement sent before the adopting tracer was given its ports", func() bool { return col.saw(port, m) })
	if err := tr.SetServerPorts(nil); err != nil {
		t.Fatal(err)
	}
	var v uint8
	if err := tr.objs.WatchedPorts.Lookup(uint32(port), &v); err != nil || v != 0 {
		t.Errorf("port %d after SetServerPorts(nil): %d, %v; want unwatched", port, v, err)
	}
}

// TestPinnedLossIsReportedOnce: what did not fit in the ring while no tracer ran is counted
// by the successor, and once committed, not by the next one.
func TestPinnedLossIsReportedOnce(t *testing.T) {
	testenv.RequireBPF(t)
	srv := server(t)
	port := uint16(srv.Port)
	dir := pinDir(t)
	page := os.Getpagesize()

	_, _, stop := pinnedTracer(t, dir, port, page)
	stop()
	query(t, srv.DSN("postgres", "postgres"), "SELECT '"+strings.Repeat("x", 100<<10)+"'")

	tr, _, stop := pinnedTracer(t, dir, port, page)
	st := tr.Stats()
	if st.TCX.LostRecords == 0 || st.TCX.LostBytes < 90<<10 {
		t.Fatalf("100 KB sent into a 4 KB ring while no tracer ran: the successor counts %d records, %d bytes lost", st.TCX.LostRecords, st.TCX.LostBytes)
	}
	if err := tr.CommitLoss(st); err != nil {
		t.Fatal(err)
	}
	stop()

	tr, _, _ = pinnedTracer(t, dir, port, page)
	if st := tr.Stats(); st.TCX.LostRecords != 0 {
		t.Errorf("after the loss was committed, the next tracer counts %d lost records again", st.TCX.LostRecords)
	}
}
