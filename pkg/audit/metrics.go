package audit

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/vigil-db/vigil/pkg/event"
)

type metrics struct {
	events   *prometheus.CounterVec
	byType   map[event.Type]prometheus.Counter // the known types, resolved once
	dropped  prometheus.Counter
	lost     prometheus.Counter
	diskFull prometheus.Gauge
	write    prometheus.Histogram
}

func newMetrics(reg prometheus.Registerer, backlog func() float64) (*metrics, error) {
	m := &metrics{
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vigil_events_total",
			Help: "Events written to the audit trail, by type.",
		}, []string{"type"}),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "vigil_audit_dropped_total",
			Help: "Events dropped because the audit queue was full (each drop is reported by a gap event).",
		}),
		lost: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "vigil_audit_lost_events_total",
			Help: "Events the trail numbered and let go because the store could not take them (each seq range is reported by a gap event once the store writes again).",
		}),
		diskFull: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "vigil_store_disk_full",
			Help: "1 while the store refuses the trail's events because its disk is full.",
		}),
		write: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "vigil_store_write_seconds",
			Help:    "Time to append one batch of events to the store.",
			Buckets: prometheus.ExponentialBuckets(100e-6, 4, 9),
		}),
		byType: map[event.Type]prometheus.Counter{},
	}
	for _, typ := range []event.Type{event.TypeStatement, event.TypeGap, event.TypeApproval, event.TypeAnchor, event.TypeFlag, event.TypeFault, event.TypeChain} {
		m.byType[typ] = m.events.WithLabelValues(string(typ))
	}
	backlogGauge := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "vigil_store_backlog_events",
		Help: "Events queued for the audit trail writer, not yet stored.",
	}, backlog)
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.events, m.dropped, m.lost, m.diskFull, m.write, backlogGauge} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func (m *metrics) countEvent(typ event.Type) {
	c, ok := m.byType[typ]
	if !ok {
		c = m.events.WithLabelValues(string(typ))
	}
	c.Inc()
}
