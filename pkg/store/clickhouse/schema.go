package clickhouse

import (
	"fmt"
	"regexp"
	"strings"
)

// Table names. In cluster mode these are Distributed tables over <name>_local on every
// node, so queries read the same names in both modes.
const (
	TableEvents     = "audit_events"
	TableActivity   = "audit_activity_1m"
	TableActors     = "audit_actor_pairs"
	TableMigrations = "vigil_schema_migrations"
	TableHeads      = "vigil_heads"
)

// Layout is where and how the schema is laid out on a server or cluster.
type Layout struct {
	Database string
	// Cluster, when set, renders ReplicatedMergeTree tables named <table>_local on every
	// node of the cluster, Distributed tables under the plain names, and ON CLUSTER DDL.
	Cluster string
	// RetentionDays keeps events (and rollups) this many days; 0 keeps them forever.
	RetentionDays int
	Features      Features
}

var identRe = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// validate rejects names that would need quoting: they are spliced into DDL, where no
// parameter binding exists.
func (l Layout) validate() error {
	if !identRe.MatchString(l.Database) {
		return fmt.Errorf("database name %q: use letters, digits and underscores", l.Database)
	}
	if l.Cluster != "" && !identRe.MatchString(l.Cluster) {
		return fmt.Errorf("cluster name %q: use letters, digits and underscores", l.Cluster)
	}
	if l.RetentionDays < 0 {
		return fmt.Errorf("retention of %d days: must be 0 (forever) or more", l.RetentionDays)
	}
	return nil
}

// column is one column of the logical schema. lc and codec apply only where the server
// supports them; the type is the same everywhere.
type column struct {
	name  string
	typ   string
	lc    bool
	codec string
}

// eventColumns is the audit event as columns: every field of event.Event has one (nested
// structs flattened with a has_ flag so that a nil pointer and an empty struct stay
// distinct, which the hash chain needs). The time column comes first and depends on the
// server; see timeColumns.
var eventColumns = []column{
	{name: "type", typ: "String", lc: true},
	{name: "source", typ: "String", lc: true},
	{name: "protocol", typ: "String", lc: true},
	{name: "host", typ: "String", lc: true},
	{name: "agent_id", typ: "String", lc: true},
	{name: "chain_id", typ: "String", lc: true},
	{name: "seq", typ: "UInt64", codec: "Delta, ZSTD(1)"},
	{name: "db_user", typ: "String", lc: true},
	{name: "database", typ: "String", lc: true},
	{name: "application", typ: "String", lc: true},
	{name: "client_addr", typ: "String"},
	{name: "server_addr", typ: "String", lc: true},
	{name: "session_id", typ: "String", codec: "ZSTD(1)"},
	{name: "backend_pid", typ: "Int32"},
	{name: "tls", typ: "UInt8"},
	{name: "steered", typ: "UInt8"},
	{name: "steered_by", typ: "String", lc: true},
	{name: "has_process", typ: "UInt8"},
	{name: "process_pid", typ: "Int32"},
	{name: "process_uid", typ: "Nullable(Int32)"},
	{name: "process_comm", typ: "String", lc: true},
	{name: "process_exe", typ: "String", lc: true},
	{name: "process_container_id", typ: "String", lc: true},
	{name: "process_pod", typ: "String", lc: true},
	{name: "process_namespace", typ: "String", lc: true},
	{name: "process_service_account", typ: "String", lc: true},
	{name: "process_image", typ: "String", lc: true},
	{name: "process_cgroup", typ: "String", lc: true},
	{name: "has_identity", typ: "UInt8"},
	{name: "identity_issuer", typ: "String", lc: true},
	{name: "identity_subject", typ: "String", lc: true},
	{name: "identity_email", typ: "String", lc: true},
	{name: "identity_groups", typ: "Array(String)"},
	{name: "statement", typ: "String", codec: "ZSTD(3)"},
	{name: "statement_truncated", typ: "UInt8"},
	{name: "params", typ: "Array(String)", codec: "ZSTD(3)"},
	{name: "fingerprint", typ: "String"},
	{name: "kind", typ: "String", lc: true},
	{name: "tables", typ: "Array(String)"},
	{name: "rows", typ: "Int64"},
	{name: "duration_us", typ: "Int64"},
	{name: "error", typ: "String", lc: true},
	{name: "error_message", typ: "String"},
	{name: "decision", typ: "String", lc: true},
	{name: "rule", typ: "String", lc: true},
	{name: "pii_columns", typ: "Array(String)"},
	{name: "masked_columns", typ: "Array(String)"},
	{name: "approval_id", typ: "String"},
	{name: "lost", typ: "UInt64"},
	{name: "detail", typ: "String"},
	{name: "signature", typ: "String"},
	{name: "key_id", typ: "String", lc: true},
	{name: "prev_hash", typ: "String"},
	{name: "hash", typ: "String"},
}

// timeColumns: DateTime64(9) where the server has it, else seconds plus nanoseconds.
func timeColumns(f Features) []column {
	if f.DateTime64 {
		return []column{{name: "time", typ: "DateTime64(9, 'UTC')", codec: "Delta, ZSTD(1)"}}
	}
	return []column{{name: "time", typ: "DateTime('UTC')"}, {name: "time_ns", typ: "UInt32"}}
}

// columnNames lists the event table's columns in insert and select order.
func columnNames(f Features) []string {
	var out []string
	for _, c := range append(timeColumns(f), eventColumns...) {
		out = append(out, c.name)
	}
	return out
}

func (c column) ddl(f Features) string {
	t := c.typ
	if c.lc && f.LowCardinality {
		t = "LowCardinality(" + t + ")"
	}
	s := c.name + " " + t
	if c.codec != "" && f.Codecs {
		s += " CODEC(" + c.codec + ")"
	}
	return s
}

// name is a table's name on the node: <table>_local in cluster mode.
func (l Layout) local(table string) string {
	if l.Cluster != "" {
		return l.Database + "." + table + "_local"
	}
	return l.Database + "." + table
}

// Table is the name queries and inserts use: the Distributed table in cluster mode.
func (l Layout) Table(table string) string { return l.Database + "." + table }

func (l Layout) onCluster() string {
	if l.Cluster != "" {
		return " ON CLUSTER " + l.Cluster
	}
	return ""
}

// engine renders a MergeTree-family engine, replicated in cluster mode. family may carry
// the engine's own arguments ("ReplacingMergeTree(seq)"), which follow the replication
// ones.
func (l Layout) engine(family, table string) string {
	args := ""
	if i := strings.IndexByte(family, '('); i >= 0 {
		family, args = family[:i], strings.TrimSuffix(family[i+1:], ")")
	}
	if l.Cluster != "" {
		repl := fmt.Sprintf("'/clickhouse/tables/{shard}/%s/%s_local', '{replica}'", l.Database, table)
		if args != "" {
			repl += ", " + args
		}
		return "Replicated" + family + "(" + repl + ")"
	}
	return family + "(" + args + ")"
}

// settings: every non-replicated table, MV targets included, drops a retried identical
// insert block where the server can (replicated tables do so by default). The schema does
// not rely on it — see ReplacingMergeTree keys below — but it keeps duplicates off disk.
func (l Layout) settings() string {
	s := "SETTINGS index_granularity = 8192"
	if l.Cluster == "" && l.Features.NonReplicatedDedup {
		s += ", non_replicated_deduplication_window = 1000"
	}
	return s
}

// createTable renders the table (and in cluster mode its Distributed front).
func (l Layout) createTable(table string, cols []string, indexes []string, engineFamily, tail, shardKey string) []string {
	body := strings.Join(cols, ",\n    ")
	if len(indexes) > 0 && l.Features.SkipIndexes {
		body += ",\n    " + strings.Join(indexes, ",\n    ")
	}
	stmts := []string{fmt.Sprintf("CREATE TABLE IF NOT EXISTS %s%s (\n    %s\n) ENGINE = %s\n%s\n%s",
		l.local(table), l.onCluster(), body, l.engine(engineFamily, table), tail, l.settings())}
	if l.Cluster != "" {
		stmts = append(stmts, fmt.Sprintf("CREATE TABLE IF NOT EXISTS %s%s AS %s ENGINE = Distributed(%s, %s, %s_local, %s)",
			l.Table(table), l.onCluster(), l.local(table), l.Cluster, l.Database, table, shardKey))
	}
	return stmts
}

// eventsKey is the events table's sort key, and so its dedup key: a batch that reaches the
// server twice leaves identical rows with the same key, which merges collapse and which
// queries read once with FINAL. (agent_id, chain_id, seq) names an event: several chains
// can share an agent id (a fresh state directory starts again at seq 1). chain_id comes
// last because a ClickHouse that had the key without it can only append a new column to
// a sort key (schema 4); the primary key (the index) stays without it.
const (
	eventsPrimaryKey = "toStartOfHour(time), agent_id, seq"
	eventsKey        = eventsPrimaryKey + ", chain_id"
)

// eventsDDL: one row per event, ReplacingMergeTree by eventsKey. Partitions are days, so
// retention on a server without TTL drops whole partitions.
func (l Layout) eventsDDL() []string {
	f := l.Features
	var cols []string
	for _, c := range append(timeColumns(f), eventColumns...) {
		cols = append(cols, c.ddl(f))
	}
	indexes := []string{
		"INDEX idx_tables tables TYPE bloom_filter(0.01) GRANULARITY 4",
		"INDEX idx_db_user db_user TYPE set(1000) GRANULARITY 4",
		"INDEX idx_session session_id TYPE bloom_filter(0.01) GRANULARITY 4",
		"INDEX idx_decision decision TYPE set(16) GRANULARITY 4",
	}
	tail := "PARTITION BY toYYYYMMDD(time)\nPRIMARY KEY (" + eventsPrimaryKey + ")\nORDER BY (" + eventsKey + ")"
	// cityHash64(agent_id): all copies of one event land on one shard, where
	// ReplacingMergeTree and FINAL can see them together.
	return l.createTable(TableEvents, cols, indexes, "ReplacingMergeTree", tail+l.ttl("time"), "cityHash64(agent_id)")
}

// activityDDL: per-minute counts for dashboards, fed by a materialized view. A view sees
// one insert block, so a retried batch would count twice in a summing table; instead each
// row is keyed by the first seq of the block it came from (first_seq). The exporter resends
// exactly the same batch after a failure, so a retry produces rows identical in key and
// value, which ReplacingMergeTree (and FINAL) keep once. Different batches have disjoint
// seq ranges and so different keys; readers sum over them.
func (l Layout) activityDDL() []string {
	f := l.Features
	lc := func(n string) string { return column{name: n, typ: "String", lc: true}.ddl(f) }
	cols := []string{"minute DateTime('UTC')", lc("agent_id"), lc("chain_id"), lc("type"), lc("decision"), lc("kind"), lc("database"), lc("db_user"),
		"first_seq UInt64", "statements UInt64", "errors UInt64", "rows_total Int64", "duration_us_sum Int64", "duration_us_max Int64",
		"pii_statements UInt64", "pii_columns_total UInt64", "masked_columns_total UInt64", "lost_total UInt64"}
	tail := "PARTITION BY toYYYYMMDD(minute)\nPRIMARY KEY (" + activityPrimaryKey + ")\nORDER BY (" + activityKey + ")"
	stmts := l.createTable(TableActivity, cols, nil, "ReplacingMergeTree", tail+l.ttl("minute"), "rand()")
	return append(stmts, l.activityView())
}

// activityKey: chain_id last, as in eventsKey (two chains' batches can share a first_seq).
const (
	activityPrimaryKey = "minute, agent_id, type, decision, kind, database, db_user, first_seq"
	activityKey        = activityPrimaryKey + ", chain_id"
)

func (l Layout) activityView() string {
	return fmt.Sprintf(`CREATE MATERIALIZED VIEW IF NOT EXISTS %s%s TO %s AS
SELECT toStartOfMinute(time) AS minute, agent_id, chain_id, type, decision, kind, database, db_user,
    min(seq) AS first_seq, count() AS statements, countIf(error != '') AS errors, sum(rows) AS rows_total,
    sum(duration_us) AS duration_us_sum, max(duration_us) AS duration_us_max,
    countIf(notEmpty(pii_columns)) AS pii_statements, sum(length(pii_columns)) AS pii_columns_total,
    sum(length(masked_columns)) AS masked_columns_total, sum(lost) AS lost_total
FROM %s
GROUP BY minute, agent_id, chain_id, type, decision, kind, database, db_user`, l.activityViewName(), l.onCluster(), l.local(TableActivity), l.local(TableEvents))
}

func (l Layout) activityViewName() string { return l.local(TableActivity) + "_mv" }

// actorsDDL: when each (process, db user, database) pair was first and last seen. min and
// max are idempotent, so duplicates cannot skew it; AggregatingMergeTree keeps it small.
func (l Layout) actorsDDL() []string {
	f := l.Features
	lc := func(n string) string { return column{name: n, typ: "String", lc: true}.ddl(f) }
	cols := []string{lc("agent_id"), lc("process_comm"), lc("process_exe"), lc("db_user"), lc("database"),
		"first_seen AggregateFunction(min, DateTime('UTC'))", "last_seen AggregateFunction(max, DateTime('UTC'))"}
	tail := "ORDER BY (db_user, database, process_exe, process_comm, agent_id)"
	stmts := l.createTable(TableActors, cols, nil, "AggregatingMergeTree", tail, "rand()")
	return append(stmts, fmt.Sprintf(`CREATE MATERIALIZED VIEW IF NOT EXISTS %s_mv%s TO %s AS
SELECT agent_id, process_comm, process_exe, db_user, database,
    minState(toDateTime(time, 'UTC')) AS first_seen, maxState(toDateTime(time, 'UTC')) AS last_seen
FROM %s
WHERE type = 'statement'
GROUP BY agent_id, process_comm, process_exe, db_user, database`, l.local(TableActors), l.onCluster(), l.local(TableActors), l.local(TableEvents)))
}

// headsDDL: the chains' signed heads, published by the exporter once the store holds the
// event a head names, so that a ClickHouse store can be verified from another machine
// (the signature, not the table, is what a verifier trusts). The newest head per chain is
// kept: ReplacingMergeTree versioned by seq.
func (l Layout) headsDDL() []string {
	f := l.Features
	lc := func(n string) string { return column{name: n, typ: "String", lc: true}.ddl(f) }
	cols := []string{lc("agent_id"), lc("chain_id"), "seq UInt64", "published DateTime('UTC')", "head String"}
	return l.createTable(TableHeads, cols, nil, "ReplacingMergeTree(seq)", "ORDER BY (agent_id, chain_id)", "cityHash64(agent_id)")
}

func (l Layout) migrationsDDL() []string {
	return l.createTable(TableMigrations, []string{"version UInt32", "name String", "applied_at DateTime('UTC')"}, nil,
		"ReplacingMergeTree", "ORDER BY version", "version")
}

// ttl renders a TTL clause at creation, where the server has TTL and retention is set.
func (l Layout) ttl(col string) string {
	if !l.Features.TTL || l.RetentionDays == 0 {
		return ""
	}
	return fmt.Sprintf("\nTTL toDateTime(%s) + INTERVAL %d DAY", col, l.RetentionDays)
}

// retentionDDL re-applies the configured retention to existing tables (it may have
// changed since they were created). Without TTL, retention is enforced by dropping day
// partitions (Store.EnforceRetention).
func (l Layout) retentionDDL() []string {
	if !l.Features.TTL || l.RetentionDays == 0 {
		return nil
	}
	return []string{
		fmt.Sprintf("ALTER TABLE %s%s MODIFY TTL toDateTime(time) + INTERVAL %d DAY", l.local(TableEvents), l.onCluster(), l.RetentionDays),
		fmt.Sprintf("ALTER TABLE %s%s MODIFY TTL minute + INTERVAL %d DAY", l.local(TableActivity), l.onCluster(), l.RetentionDays),
	}
}
