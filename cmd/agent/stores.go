package main

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/pflag"

	"github.com/vigil-db/vigil/pkg/config"
	"github.com/vigil-db/vigil/pkg/health"
	"github.com/vigil-db/vigil/pkg/store"
	"github.com/vigil-db/vigil/pkg/store/local"
)

// addStoreFlags adds --store and --state-dir, shared by the commands that read the trail.
func addStoreFlags(f *pflag.FlagSet, storeURL, stateDir *string) {
	f.StringVar(storeURL, "store", "", "store URL: local:DIR or clickhouse://host:port/db (default local:<state-dir>/events)")
	f.StringVar(stateDir, "state-dir", config.Default().StateDir, "the agent's state directory (signing key, head file, default store)")
}

// resolveStore applies the default store for a state dir.
func resolveStore(storeURL, stateDir string) string {
	if storeURL != "" {
		return storeURL
	}
	return "local:" + filepath.Join(stateDir, "events")
}

// openReader opens a store for reading without disturbing a running agent.
func openReader(ctx context.Context, storeURL, stateDir string) (store.Reader, func(), error) {
	u := resolveStore(storeURL, stateDir)
	switch {
	case strings.HasPrefix(u, "local:"):
		s, err := local.Open(strings.TrimPrefix(u, "local:"), local.Options{ReadOnly: true}, nil)
		if err != nil {
			return nil, nil, fmt.Errorf("opening %s: %w", u, err)
		}
		return s, func() { s.Close() }, nil
	case strings.HasPrefix(u, "clickhouse://"):
		return openClickHouseReader(ctx, u)
	}
	return nil, nil, fmt.Errorf("store %q: want local:DIR or clickhouse://host:port/db", u)
}

// agentStore is the store the agent writes to, and what it needs run and closed.
type agentStore struct {
	appender store.Appender
	// run, when set, runs alongside the agent (the ClickHouse exporter draining the spool).
	run   func(ctx context.Context, status *health.Status)
	close func() error
}

// openStore opens the agent's store for writing. For ClickHouse, the local store in the
// state directory is the spool and an exporter ships it.
func openStore(ctx context.Context, cfg *config.Config, reg prometheus.Registerer, log *slog.Logger) (*agentStore, error) {
	switch {
	case strings.HasPrefix(cfg.Store, "local:"):
		dir := strings.TrimPrefix(cfg.Store, "local:")
		s, err := local.Open(dir, localOptions(cfg, false, log), reg)
		if err != nil {
			return nil, fmt.Errorf("opening store %s: %w", cfg.Store, err)
		}
		return &agentStore{appender: s, close: s.Close}, nil
	case strings.HasPrefix(cfg.Store, "clickhouse://"):
		return openClickHouseStore(ctx, cfg, reg, log)
	}
	return nil, fmt.Errorf("store %q: want local:DIR or clickhouse://host:port/db", cfg.Store)
}

// localOptions are the local store's options from the configuration.
func localOptions(cfg *config.Config, spool bool, log *slog.Logger) local.Options {
	return local.Options{
		SegmentBytes: cfg.LocalStore.SegmentBytes,
		MaxBytes:     cfg.LocalStore.MaxBytes,
		SyncInterval: cfg.LocalStore.SyncInterval,
		Spool:        spool,
		Logger:       log.With("component", "store"),
	}
}
