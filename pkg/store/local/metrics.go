package local

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	bytes        prometheus.Gauge
	segments     prometheus.Gauge
	fsync        prometheus.Histogram
	tornLines    prometheus.Counter
	corruptLines prometheus.Counter
	deletedSegs  *prometheus.CounterVec
	lostEvents   prometheus.Counter
}

// Reasons a segment is deleted, the label of vigil_store_local_deleted_segments_total.
const (
	reasonShipped   = "shipped"   // every event in it was shipped (spool mode)
	reasonRetention = "retention" // over the cap, and the store is the store of record
	reasonUnshipped = "unshipped" // over the cap with events not yet shipped: a loss
)

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		bytes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "vigil_store_local_bytes",
			Help: "Bytes held in the local store's segments.",
		}),
		segments: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "vigil_store_local_segments",
			Help: "Segment files in the local store.",
		}),
		fsync: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "vigil_store_local_fsync_seconds",
			Help:    "Time to fsync a local store segment.",
			Buckets: prometheus.ExponentialBuckets(50e-6, 4, 9),
		}),
		tornLines: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "vigil_store_local_torn_lines_total",
			Help: "Torn or undecodable lines cut from a segment's tail when the store was opened after a crash.",
		}),
		corruptLines: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "vigil_store_local_corrupt_lines_total",
			Help: "Lines that a read skipped because they do not decode.",
		}),
		deletedSegs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vigil_store_local_deleted_segments_total",
			Help: "Segments deleted to keep the local store under its size cap, by reason (shipped, retention, unshipped).",
		}, []string{"reason"}),
		lostEvents: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "vigil_store_local_lost_events_total",
			Help: "Events deleted from the local store before they were shipped (the spool overflowed its cap).",
		}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.bytes, m.segments, m.fsync, m.tornLines, m.corruptLines, m.deletedSegs, m.lostEvents} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}
