package ebpf

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"sync/atomic"
	"testing"

	"github.com/vigil-db/vigil/internal/testenv"
	"github.com/vigil-db/vigil/internal/testpg"
)

// counter is the cheapest possible Handler: it only counts, so the measurement shows the
// kernel side and the reader, not a consumer.
type counter struct{ n atomic.Uint64 }

func (c *counter) Segment(s *Segment)         { c.n.Add(1) }
func (c *counter) TLS(d *ProcData)            { c.n.Add(1) }
func (c *counter) TLSSocket(k *TLSSocket)     { c.n.Add(1) }
func (c *counter) Unix(d *ProcData)           { c.n.Add(1) }
func (c *counter) Connect(e *ConnEvent)       { c.n.Add(1) }
func (c *counter) UnixConnect(u *UnixConnect) { c.n.Add(1) }
func (c *counter) Idle()                      {}

var tpsRe = regexp.MustCompile(`tps = ([0-9.]+)`)

// TestMeasureOverhead compares pgbench -S TPS over TCP without capture, with TCX capture,
// and with the Unix syscall tracepoints attached too, in interleaved rounds. It takes about
// a minute, so it runs only with VIGIL_MEASURE=1.
func TestMeasureOverhead(t *testing.T) {
	if os.Getenv("VIGIL_MEASURE") != "1" {
		t.Skip("set VIGIL_MEASURE=1 to measure capture overhead (about a minute)")
	}
	testenv.RequireBPF(t)
	srv := testpg.Start(t)
	port := strconv.Itoa(srv.Port)
	if out, err := exec.Command("pgbench", "-i", "-q", "-s", "1", "-h", srv.Host, "-p", port, "-U", "postgres", "postgres").CombinedOutput(); err != nil {
		t.Fatalf("pgbench -i: %v\n%s", err, out)
	}
	bench := func() float64 {
		out, err := exec.Command("pgbench", "-S", "-c", "8", "-j", "2", "-T", "5", "-h", srv.Host, "-p", port, "-U", "postgres", "postgres").CombinedOutput()
		if err != nil {
			t.Fatalf("pgbench: %v\n%s", err, out)
		}
		m := tpsRe.FindSubmatch(out)
		if m == nil {
			t.Fatalf("no tps in pgbench output:\n%s", out)
		}
		tps, _ := strconv.ParseFloat(string(m[1]), 64)
		return tps
	}
	modes := []string{"none", "tcx", "tcx+unix"}
	sum := map[string]float64{}
	const rounds = 3
	for r := 0; r < rounds; r++ {
		for _, mode := range modes {
			var tr *Tracer
			c := &counter{}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			if mode != "none" {
				var err error
				if tr, err = Load(Config{ServerPorts: []uint16{uint16(srv.Port)}}, c, slog.New(slog.DiscardHandler)); err != nil {
					t.Fatal(err)
				}
				go func() { done <- tr.Run(ctx) }()
				if mode == "tcx+unix" {
					if err := tr.WatchProcess(postmasterPID(t, srv)); err != nil {
						t.Fatal(err)
					}
					if err := tr.EnableUnix(true); err != nil {
						t.Fatal(err)
					}
				}
			}
			tps := bench()
			sum[mode] += tps
			line := fmt.Sprintf("round %d %-9s %8.0f tps", r+1, mode, tps)
			if tr != nil {
				cancel()
				<-done
				st := tr.Stats()
				line += fmt.Sprintf("  (%d records, lost %d)", c.n.Load(), st.TCX.LostRecords+st.Unix.LostRecords)
				tr.Close()
			}
			cancel()
			t.Log(line)
		}
	}
	for _, mode := range modes {
		t.Logf("%-9s mean %8.0f tps  ratio to none %.3f", mode, sum[mode]/rounds, sum[mode]/sum["none"])
	}
}
