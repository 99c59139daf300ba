package clickhouse

import (
	"context"
	"fmt"
	"strings"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

// Features is what the server supports, detected from its system tables rather than its
// version string: vendors backport, forks renumber, and what matters is whether the server
// accepts a type, setting or table setting, which those tables say directly.
type Features struct {
	// Version is the server's version, for messages only.
	Version string
	// DateTime64 stores time with nanoseconds in one column; without it, time is a
	// DateTime (seconds) plus a time_ns column (nanoseconds within the second).
	DateTime64 bool
	// LowCardinality is usable without an experimental flag.
	LowCardinality bool
	// Codecs: per-column compression codecs (CODEC(Delta, ZSTD)).
	Codecs bool
	// TTL: table TTL for retention; without it, retention drops whole day partitions.
	TTL bool
	// SkipIndexes: data-skipping indexes (bloom_filter, set, minmax).
	SkipIndexes bool
	// NonReplicatedDedup: the merge tree setting non_replicated_deduplication_window, which
	// makes MergeTree drop a retried identical insert block.
	NonReplicatedDedup bool
	// DistributedSyncSetting is the name of the setting that makes an INSERT into a
	// Distributed table return only once the shards have the rows ("" when none).
	DistributedSyncSetting string
}

// Legacy is what Debian's 18.16 offers; Modern is what a current release (26.x) offers.
// Both are for rendering DDL without a server (vigil store migrate --print, tests).
var (
	Legacy = Features{Version: "18.16", DistributedSyncSetting: "insert_distributed_sync"}
	Modern = Features{Version: "26.5", DateTime64: true, LowCardinality: true, Codecs: true, TTL: true,
		SkipIndexes: true, NonReplicatedDedup: true, DistributedSyncSetting: "insert_distributed_sync"}
)

func (f Features) String() string {
	var on []string
	for _, x := range []struct {
		name string
		ok   bool
	}{{"DateTime64", f.DateTime64}, {"LowCardinality", f.LowCardinality}, {"codecs", f.Codecs},
		{"TTL", f.TTL}, {"skip indexes", f.SkipIndexes}, {"non-replicated dedup", f.NonReplicatedDedup}} {
		if x.ok {
			on = append(on, x.name)
		}
	}
	if len(on) == 0 {
		on = []string{"none of the optional features"}
	}
	return fmt.Sprintf("ClickHouse %s: %s", f.Version, strings.Join(on, ", "))
}

// DetectFeatures asks the server's system tables what it supports.
func DetectFeatures(ctx context.Context, conn driver.Conn) (Features, error) {
	var f Features
	if err := conn.QueryRow(ctx, "SELECT version()").Scan(&f.Version); err != nil {
		return f, fmt.Errorf("reading server version: %w", err)
	}
	families, err := names(ctx, conn, "SELECT name FROM system.data_type_families")
	if err != nil {
		return f, fmt.Errorf("reading system.data_type_families: %w", err)
	}
	settings := map[string]string{}
	rows, err := conn.Query(ctx, "SELECT name, value FROM system.settings WHERE name IN ('allow_experimental_low_cardinality_type', 'allow_suspicious_codecs', 'allow_experimental_data_skipping_indices', 'insert_distributed_sync', 'distributed_foreground_insert')")
	if err != nil {
		return f, fmt.Errorf("reading system.settings: %w", err)
	}
	for rows.Next() {
		var n, v string
		if err := rows.Scan(&n, &v); err != nil {
			rows.Close()
			return f, fmt.Errorf("reading system.settings: %w", err)
		}
		settings[n] = v
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return f, fmt.Errorf("reading system.settings: %w", err)
	}
	mts, err := names(ctx, conn, "SELECT name FROM system.merge_tree_settings WHERE name IN ('merge_with_ttl_timeout', 'non_replicated_deduplication_window')")
	if err != nil {
		return f, fmt.Errorf("reading system.merge_tree_settings: %w", err)
	}
	return detect(f.Version, families, settings, mts), nil
}

// detect derives Features from the contents of the three system tables.
func detect(version string, families map[string]bool, settings map[string]string, mts map[string]bool) Features {
	f := Features{Version: version}
	f.DateTime64 = families["DateTime64"]
	// 18.x/19.x have the type behind a flag that defaults to off; later releases either
	// default it to on or dropped the flag.
	lcFlag, hasLCFlag := settings["allow_experimental_low_cardinality_type"]
	f.LowCardinality = families["LowCardinality"] && (!hasLCFlag || lcFlag == "1")
	// allow_suspicious_codecs came with codec validation; a server that has it has codecs.
	_, f.Codecs = settings["allow_suspicious_codecs"]
	f.TTL = mts["merge_with_ttl_timeout"]
	// Skip indexes were behind allow_experimental_data_skipping_indices until the flag
	// became obsolete; TTL arrived in the same era, so a TTL server without the flag has
	// them generally available.
	skipFlag, hasSkipFlag := settings["allow_experimental_data_skipping_indices"]
	f.SkipIndexes = hasSkipFlag && skipFlag == "1" || !hasSkipFlag && f.TTL
	f.NonReplicatedDedup = mts["non_replicated_deduplication_window"]
	switch {
	case hasKey(settings, "insert_distributed_sync"):
		f.DistributedSyncSetting = "insert_distributed_sync"
	case hasKey(settings, "distributed_foreground_insert"):
		f.DistributedSyncSetting = "distributed_foreground_insert"
	}
	return f
}

func hasKey(m map[string]string, k string) bool { _, ok := m[k]; return ok }

func names(ctx context.Context, conn driver.Conn, q string) (map[string]bool, error) {
	rows, err := conn.Query(ctx, q)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]bool{}
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			return nil, err
		}
		out[n] = true
	}
	return out, rows.Err()
}
