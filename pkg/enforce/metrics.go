package enforce

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/vigil-db/vigil/pkg/event"
)

// Reasons a session ends in error (the values of the "reason" label). A fixed set, so that
// bad input can never create label values.
const (
	reasonClientProtocol = "client_protocol" // the client sent something that is not protocol
	reasonServerProtocol = "server_protocol" // the upstream did
	reasonUpstream       = "upstream"        // the upstream could not be reached or refused TLS
	reasonTLS            = "tls"             // TLS handshake with the client failed
	reasonRefused        = "refused"         // the proxy refused the session (startup policy)
	reasonAuth           = "auth"            // the client's token was refused (or sent without TLS)
	reasonTokenExpired   = "token_expired"   // the session's token expired
	reasonIO             = "io"              // a connection broke mid-session
	reasonInternal       = "internal"        // a bug: the session's code panicked (see fault.go)
	reasonTooMany        = "max_connections" // over the proxy's max_connections (53300)
)

type metrics struct {
	connections   prometheus.Counter
	active        prometheus.Gauge
	sessionErrors *prometheus.CounterVec
	statements    *prometheus.CounterVec
	// byDecision holds statements' children for the known decisions: resolving a label
	// value per statement (hashing, validation, a lock) showed in profiles.
	byDecision     map[string]prometheus.Counter
	duration       prometheus.Histogram
	maskedValues   prometheus.Counter
	redactedErrors prometheus.Counter
	cancels        *prometheus.CounterVec
	catalogLookups *prometheus.CounterVec
	estimates      *prometheus.CounterVec
	unanswered     prometheus.Counter
	discoveryRuns  *prometheus.CounterVec
	unanalysed     prometheus.Counter
}

// newMetrics registers the proxy's metrics; the listener label keeps several proxies in one
// agent apart.
func newMetrics(reg prometheus.Registerer, listener string) (*metrics, error) {
	cl := prometheus.Labels{"listener": listener}
	m := &metrics{
		connections: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "vigil_proxy_connections_total", Help: "Client connections accepted.", ConstLabels: cl}),
		active: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "vigil_proxy_sessions_active", Help: "Client sessions currently open.", ConstLabels: cl}),
		sessionErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vigil_proxy_session_errors_total", Help: "Sessions closed because of an error, by reason.", ConstLabels: cl},
			[]string{"reason"}),
		statements: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vigil_proxy_statements_total", Help: "Statements judged by the proxy, by decision.", ConstLabels: cl},
			[]string{"decision"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "vigil_proxy_statement_duration_seconds", Help: "Time from a statement's arrival to its completion.",
			ConstLabels: cl, Buckets: prometheus.ExponentialBuckets(50e-6, 4, 10)}),
		maskedValues: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "vigil_proxy_masked_values_total", Help: "Result values masked before leaving the proxy.", ConstLabels: cl}),
		redactedErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "vigil_proxy_redacted_messages_total", Help: "Error and notice messages redacted for masked sessions.", ConstLabels: cl}),
		cancels: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vigil_proxy_cancel_requests_total", Help: "Cancel requests, by result (forwarded, unknown_key, failed, withdrew_approval).", ConstLabels: cl},
			[]string{"result"}),
		catalogLookups: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vigil_proxy_catalog_lookups_total", Help: "Catalog queries for result-column sources, by result (ok, error).", ConstLabels: cl},
			[]string{"result"}),
		estimates: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vigil_proxy_planner_estimates_total", Help: "EXPLAIN estimates asked for by estimate rules, by result (ok, error: counted as over the threshold).", ConstLabels: cl},
			[]string{"result"}),
		unanswered: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "vigil_proxy_statements_unanswered_total", Help: "Statements recorded without the server's answer because the session ended first (outcome unknown).", ConstLabels: cl}),
		discoveryRuns: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vigil_proxy_pii_discovery_runs_total", Help: "Background PII discovery runs (sampling table values with the detectors), by result (ok, error).", ConstLabels: cl},
			[]string{"result"}),
		unanalysed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "vigil_proxy_results_unanalysed_total", Help: "Masked results whose columns the taint analysis could not trace to their sources: every column was masked.", ConstLabels: cl}),
	}
	m.byDecision = make(map[string]prometheus.Counter)
	for _, d := range []string{event.DecisionAllow, event.DecisionAlert, event.DecisionBlock, event.DecisionMask, event.DecisionApprovalRequired} {
		m.byDecision[d] = m.statements.WithLabelValues(d)
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.connections, m.active, m.sessionErrors, m.statements, m.duration,
		m.maskedValues, m.redactedErrors, m.cancels, m.catalogLookups, m.estimates, m.unanswered, m.discoveryRuns, m.unanalysed} {
		if err := reg.Register(c); err != nil {
			var are prometheus.AlreadyRegisteredError
			if errors.As(err, &are) {
				return nil, fmt.Errorf("enforce: metrics for listener %q already registered", listener)
			}
			return nil, fmt.Errorf("enforce: registering metrics: %w", err)
		}
	}
	return m, nil
}

// countStatement counts one statement under its decision.
func (m *metrics) countStatement(decision string) {
	if c, ok := m.byDecision[decision]; ok {
		c.Inc()
		return
	}
	m.statements.WithLabelValues(decision).Inc()
}
