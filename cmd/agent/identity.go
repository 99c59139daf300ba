package main

import (
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/vigil-db/vigil/pkg/config"
	"github.com/vigil-db/vigil/pkg/identity"
)

// identityOptions are how every part of the agent (capture, the proxies, the workload
// selectors) looks clients up: under the configured host root, with pods' labels from the
// API server when the agent runs in a Kubernetes pod and may read them.
func identityOptions(cfg *config.Config, log *slog.Logger, reg prometheus.Registerer) identity.Options {
	opts := identity.Options{HostRoot: cfg.Identity.HostRoot, Logger: log}
	if cfg.Identity.PodLabels != config.PodLabelsAuto {
		return opts
	}
	api, ok := identity.InCluster(cfg.Identity.NodeName)
	if !ok {
		return opts // not in a pod: no API server to ask
	}
	errs := prometheus.NewCounter(prometheus.CounterOpts{Name: "vigil_pod_labels_errors_total",
		Help: "Failed listings of this node's pods for their labels (selectors on labels use the last listing)."})
	reg.MustRegister(errs)
	pl, err := identity.NewPodLabels(api, log.With("component", "pod-labels"), errs.Inc)
	if err != nil {
		log.Warn("pods' labels are unavailable: selectors on labels match nothing", "err", err)
		return opts
	}
	opts.PodLabels = pl
	return opts
}
