package capture

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/vigil-db/vigil/pkg/capture/decode"
	"github.com/vigil-db/vigil/pkg/capture/tcpstream"
	"github.com/vigil-db/vigil/pkg/event"
)

// metrics are capture's Prometheus metrics. Counters that the capture goroutine owns are
// plain Prometheus counters; the tracer's and the reassembler's are read on scrape.
type metrics struct {
	c *Capturer

	statements     *prometheus.CounterVec
	byKind         map[string]prometheus.Counter // cache: the label lookup costs more than the increment
	sessions       prometheus.Gauge
	servers        prometheus.Gauge
	streamGaps     prometheus.Counter
	ignoredConns   prometheus.Counter
	identityErrors prometheus.Counter
	unixOn         prometheus.Gauge
	unixTriggers   prometheus.Counter
	lateSessions   prometheus.Counter
	unixMissed     prometheus.Counter
	decoderFaults  prometheus.Counter

	lastHousekeep, lastSweep time.Time

	// snapshots of single-goroutine state, taken by housekeep for the scraper
	mu      sync.Mutex
	table   tcpstream.Stats
	decoder decode.Stats
}

func newMetrics(c *Capturer, reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		c: c,
		statements: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vigil_capture_statements_total", Help: "Statements captured from the kernel hooks, by kind.",
		}, []string{"kind"}),
		byKind: map[string]prometheus.Counter{},
		sessions: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "vigil_capture_sessions", Help: "Database connections capture is tracking.",
		}),
		servers: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "vigil_capture_servers", Help: "Database servers capture is attached to.",
		}),
		streamGaps: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "vigil_capture_stream_gaps_total", Help: "Holes in a connection's byte stream that never filled (the decoder resynchronized after each).",
		}),
		ignoredConns: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "vigil_capture_ignored_connections_total", Help: "Connections not captured because Vigil's proxy opened them (the proxy records their statements).",
		}),
		identityErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "vigil_capture_identity_errors_total", Help: "Connections whose client or server process could not be identified from /proc.",
		}),
		unixOn: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "vigil_capture_unix_on", Help: "1 while the Unix-socket syscall tracepoints are attached (they slow every syscall on the host).",
		}),
		unixTriggers: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "vigil_capture_unix_connects_total", Help: "Client connects to a watched server's Unix socket, each of which keeps Unix-socket capture on.",
		}),
		lateSessions: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "vigil_capture_unix_late_sessions_total", Help: "Unix-socket sessions capture joined after their start (startup not seen): user and database come from the process title, earlier statements were missed; their events say so in detail.",
		}),
		unixMissed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "vigil_capture_unix_missed_sessions_total", Help: "Unix-socket sessions capture did not see at all (most often: over before on-demand capture attached); each is also a gap event naming the client process.",
		}),
		decoderFaults: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "vigil_capture_decoder_faults_total", Help: "Connections no longer decoded because decoding them hit an internal error (a bug); each is also a gap event and an error log with the stack.",
		}),
	}
	// Series exist from the start, so rate() and dashboards see zeros rather than nothing.
	for _, k := range []string{"SELECT", "INSERT", "UPDATE", "DELETE", "MERGE", "DDL", "DCL", "TRUNCATE", "COPY", "TXN", "SET", "OTHER"} {
		m.byKind[k] = m.statements.WithLabelValues(k)
	}
	if reg == nil {
		return m, nil
	}
	for _, col := range []prometheus.Collector{m.statements, m.sessions, m.servers, m.streamGaps, m.ignoredConns, m.identityErrors, m.unixOn, m.unixTriggers, m.lateSessions, m.unixMissed, m.decoderFaults, m} {
		if err := reg.Register(col); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func (m *metrics) countStatement(e *event.Event) {
	if e.Type != event.TypeStatement {
		return
	}
	k := e.Kind
	if k == "" {
		k = "UNKNOWN"
	}
	ctr, ok := m.byKind[k]
	if !ok {
		ctr = m.statements.WithLabelValues(k)
		m.byKind[k] = ctr
	}
	ctr.Inc()
}

var (
	descRecords   = prometheus.NewDesc("vigil_capture_records_total", "Ring-buffer records delivered by each kernel hook.", []string{"hook"}, nil)
	descBytes     = prometheus.NewDesc("vigil_capture_bytes_total", "Payload bytes delivered by each kernel hook.", []string{"hook"}, nil)
	descLostRecs  = prometheus.NewDesc("vigil_capture_lost_records_total", "Records the kernel could not deliver (ring buffer full, unreadable data); each loss is also a gap event in the trail.", []string{"hook"}, nil)
	descLostBytes = prometheus.NewDesc("vigil_capture_lost_bytes_total", "Payload bytes the kernel could not deliver.", []string{"hook"}, nil)
	descMalformed = prometheus.NewDesc("vigil_capture_malformed_records_total", "Ring-buffer records the agent could not decode.", nil, nil)
	descSegments  = prometheus.NewDesc("vigil_tcp_segments_total", "TCP payload chunks fed to reassembly.", nil, nil)
	descGapBytes  = prometheus.NewDesc("vigil_tcp_gap_bytes_total", "Bytes skipped because a hole in a TCP stream never filled.", nil, nil)
	descDecErrors = prometheus.NewDesc("vigil_decoder_errors_total", "Wire-protocol messages the decoder could not read (impossible headers, malformed bodies).", []string{"protocol"}, nil)
	descResyncs   = prometheus.NewDesc("vigil_decoder_resyncs_total", "Times the decoder found a message boundary again after a gap or garbage.", []string{"protocol"}, nil)
	descNoResp    = prometheus.NewDesc("vigil_decoder_responses_not_seen_total", "Statements recorded without their response (capture gap or connection closed mid-statement); the event's detail says so.", []string{"protocol"}, nil)
	descMessages  = prometheus.NewDesc("vigil_decoder_messages_total", "Wire-protocol messages decoded.", []string{"protocol"}, nil)
)

// Describe implements prometheus.Collector.
func (m *metrics) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descRecords, descBytes, descLostRecs, descLostBytes, descMalformed, descSegments, descGapBytes, descDecErrors, descResyncs, descNoResp, descMessages} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (m *metrics) Collect(ch chan<- prometheus.Metric) {
	if tr := m.c.tracer; tr != nil {
		st := tr.Stats()
		for name, h := range map[string]struct{ r, b, lr, lb uint64 }{
			"tcx":  {st.TCX.Records, st.TCX.Bytes, st.TCX.LostRecords, st.TCX.LostBytes},
			"tls":  {st.TLS.Records, st.TLS.Bytes, st.TLS.LostRecords, st.TLS.LostBytes},
			"unix": {st.Unix.Records, st.Unix.Bytes, st.Unix.LostRecords, st.Unix.LostBytes},
			"conn": {st.Conn.Records, st.Conn.Bytes, st.Conn.LostRecords, st.Conn.LostBytes},

			"unix_connect": {st.UnixConnect.Records, st.UnixConnect.Bytes, st.UnixConnect.LostRecords, st.UnixConnect.LostBytes},
		} {
			ch <- prometheus.MustNewConstMetric(descRecords, prometheus.CounterValue, float64(h.r), name)
			ch <- prometheus.MustNewConstMetric(descBytes, prometheus.CounterValue, float64(h.b), name)
			ch <- prometheus.MustNewConstMetric(descLostRecs, prometheus.CounterValue, float64(h.lr), name)
			ch <- prometheus.MustNewConstMetric(descLostBytes, prometheus.CounterValue, float64(h.lb), name)
		}
		ch <- prometheus.MustNewConstMetric(descMalformed, prometheus.CounterValue, float64(st.Malformed))
	}
	m.mu.Lock()
	t, d := m.table, m.decoder
	m.mu.Unlock()
	ch <- prometheus.MustNewConstMetric(descDecErrors, prometheus.CounterValue, float64(d.DecodeErrors), event.ProtocolPostgres)
	ch <- prometheus.MustNewConstMetric(descResyncs, prometheus.CounterValue, float64(d.Resyncs), event.ProtocolPostgres)
	ch <- prometheus.MustNewConstMetric(descNoResp, prometheus.CounterValue, float64(d.ResponsesNotSeen), event.ProtocolPostgres)
	ch <- prometheus.MustNewConstMetric(descMessages, prometheus.CounterValue, float64(d.Messages), event.ProtocolPostgres)
	ch <- prometheus.MustNewConstMetric(descSegments, prometheus.CounterValue, float64(t.Segments))
	ch <- prometheus.MustNewConstMetric(descGapBytes, prometheus.CounterValue, float64(t.GapBytes))
}
