package capture

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/vigil-db/vigil/pkg/audit"
	"github.com/vigil-db/vigil/pkg/capture/ebpf"
	"github.com/vigil-db/vigil/pkg/event"
	"github.com/vigil-db/vigil/pkg/policy"
	"github.com/vigil-db/vigil/pkg/sqlparse"
	"github.com/vigil-db/vigil/pkg/store/local"
)

// BenchmarkPipeline is the agent's userspace cost per statement, from a ring-buffer
// segment to a sealed line in the local store: reassembly, decoding, policy labels,
// redaction, sealing and the append with fsync per batch — the same path `vigil run`
// takes, without the kernel and without PostgreSQL and pgbench on the same cores, so that
// changes to the hot path can be compared in seconds. It reports CPU (user+system, every
// goroutine) per statement, the figure the capture overhead target is stated in.
//
//	go test -run '^$' -bench Pipeline -benchtime 200000x ./pkg/capture/
func BenchmarkPipeline(b *testing.B) {
	for _, sc := range []struct {
		name     string
		query    func(i int) string
		response func(i int) [][]byte
	}{
		{"select-only", func(i int) string {
			return fmt.Sprintf("SELECT abalance FROM pgbench_accounts WHERE aid = %d;", i%1000000+1)
		}, selectResponse},
		{"tpcb-update", func(i int) string {
			return fmt.Sprintf("UPDATE pgbench_accounts SET abalance = abalance + %d WHERE aid = %d;", i%5000-2500, i%1000000+1)
		}, func(int) [][]byte { return [][]byte{complete("UPDATE 1"), ready('T')} }},
	} {
		b.Run(sc.name, func(b *testing.B) { benchPipeline(b, sc.query, sc.response) })
	}
}

func selectResponse(i int) [][]byte {
	rd := &pgproto3.RowDescription{Fields: []pgproto3.FieldDescription{{
		Name: []byte("abalance"), TableOID: 16390, TableAttributeNumber: 3, DataTypeOID: 23, DataTypeSize: 4, TypeModifier: -1,
	}}}
	return [][]byte{enc(rd), enc(&pgproto3.DataRow{Values: [][]byte{[]byte(fmt.Sprint(i % 5000))}}), complete("SELECT 1"), ready('I')}
}

func benchPipeline(b *testing.B, query func(int) string, response func(int) [][]byte) {
	dir := b.TempDir()
	st, err := local.Open(dir+"/events", local.Options{}, prometheus.NewRegistry())
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	log := slog.New(slog.DiscardHandler)
	trail, err := audit.New(audit.Config{
		Host: "bench", AgentID: "bench", StateDir: dir, Redact: sqlparse.RedactSecrets, RedactCredentialsOnly: true, Logger: log, Recycle: true,
	}, st, prometheus.NewRegistry())
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- trail.Run(ctx) }()

	engine, err := policy.NewEngine(policy.Default())
	if err != nil {
		b.Fatal(err)
	}
	emitted := 0
	sink := event.SinkFunc(func(e *event.Event) { emitted++; trail.Emit(e) })
	c, err := New(Config{Host: "bench"}, sink, engine, log, prometheus.NewRegistry())
	if err != nil {
		b.Fatal(err)
	}
	ports := map[uint16]bool{5432: true}
	c.ports.Store(&ports)
	h := handler{c}

	// Eight sessions, as pgbench -c 8, each opened with a startup the decoder sees.
	const conns = 8
	server := netip.MustParseAddrPort("10.0.0.1:5432")
	type flow struct {
		client     netip.AddrPort
		cseq, sseq uint32
	}
	flows := make([]flow, conns)
	ktime := uint64(time.Hour) // since boot
	seg := func(src, dst netip.AddrPort, seq *uint32, syn bool, payload []byte) {
		ktime += 1000
		s := ebpf.Segment{Src: src, Dst: dst, Seq: *seq, SYN: syn, Payload: payload, Ktime: ktime}
		h.Segment(&s)
		if syn {
			*seq++
		}
		*seq += uint32(len(payload))
	}
	for i := range flows {
		f := &flows[i]
		f.client = netip.AddrPortFrom(netip.MustParseAddr("10.0.0.2"), uint16(40000+i))
		f.cseq, f.sseq = 1000, 9000
		seg(f.client, server, &f.cseq, true, nil)
		seg(server, f.client, &f.sseq, true, nil)
		seg(f.client, server, &f.cseq, false, enc(&pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersionNumber,
			Parameters: map[string]string{"user": "bench", "database": "bench", "application_name": "pgbench"}}))
		seg(server, f.client, &f.sseq, false, join(enc(&pgproto3.AuthenticationOk{}),
			enc(&pgproto3.BackendKeyData{ProcessID: uint32(100 + i), SecretKey: []byte{0, 0, 0, 7}}), ready('I')))
	}
	// Requests and responses as the kernel delivers them: one segment per message batch.
	const variants = 4096
	reqs, resps := make([][]byte, variants), make([][]byte, variants)
	for i := range reqs {
		reqs[i] = enc(&pgproto3.Query{String: query(i)})
		resps[i] = join(response(i)...)
	}

	var ru0 syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru0)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		f := &flows[i%conns]
		seg(f.client, server, &f.cseq, false, reqs[i%variants])
		seg(server, f.client, &f.sseq, false, resps[i%variants])
	}
	cancel()
	if err := <-done; err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	var ru1 syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru1)
	cpu := time.Duration(ru1.Utime.Nano()+ru1.Stime.Nano()-ru0.Utime.Nano()-ru0.Stime.Nano()) * time.Nanosecond
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/stmt")
	if emitted != b.N {
		b.Fatalf("%d statements decoded, want %d", emitted, b.N)
	}
}

func enc(m pgproto3.Message) []byte {
	b, err := m.Encode(nil)
	if err != nil {
		panic(err)
	}
	return b
}

func complete(tag string) []byte { return enc(&pgproto3.CommandComplete{CommandTag: []byte(tag)}) }
func ready(status byte) []byte   { return enc(&pgproto3.ReadyForQuery{TxStatus: status}) }

func join(parts ...[]byte) []byte {
	var out []byte
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}
