package clickhouse

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	events     prometheus.Counter
	errors     *prometheus.CounterVec
	batch      prometheus.Histogram
	deadLetter prometheus.Counter
	shipped    prometheus.Gauge
	headSeq    prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer, backlog func() float64) (*metrics, error) {
	m := &metrics{
		events: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "vigil_export_events_total", Help: "Events ClickHouse acknowledged."}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vigil_export_errors_total", Help: "Failed batch inserts into ClickHouse, by kind (retryable, config, schema)."}, []string{"kind"}),
		batch: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "vigil_export_batch_seconds", Help: "Time to insert one batch into ClickHouse, successful attempts.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 12)}),
		deadLetter: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "vigil_export_dead_letter_events_total", Help: "Events written to the dead-letter file because ClickHouse rejected their batch for its schema."}),
		shipped: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "vigil_export_shipped_seq", Help: "Highest seq ClickHouse acknowledged (or that went to the dead-letter file)."}),
		headSeq: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "vigil_export_head_seq", Help: "Seq of the last signed head published into ClickHouse (vigil_heads): a remote verify checks the tail up to it."}),
	}
	for _, k := range []errorKind{kindRetryable, kindConfig, kindSchema} {
		m.errors.WithLabelValues(string(k))
	}
	if reg == nil {
		return m, nil
	}
	cs := []prometheus.Collector{m.events, m.errors, m.batch, m.deadLetter, m.shipped, m.headSeq,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "vigil_export_backlog_events", Help: "Events in the spool that ClickHouse has not acknowledged yet."}, backlog)}
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("registering export metrics: %w", err)
		}
	}
	return m, nil
}
