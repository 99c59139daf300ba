package clickhouse

import (
	"context"
	"fmt"
	"time"

	ch "github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

// migration is one versioned step of the schema. Its statements are idempotent (IF NOT
// EXISTS), so a migration interrupted half-way is simply run again.
type migration struct {
	version uint32
	name    string
	ddl     func(Layout) []string
}

// migrations in order. Append new versions; never edit an applied one.
var migrations = []migration{
	{1, "audit events", Layout.eventsDDL},
	{2, "per-minute activity rollup", Layout.activityDDL},
	{3, "first and last seen of process and database user pairs", Layout.actorsDDL},
}

// SchemaVersion is the newest schema version this binary knows.
func SchemaVersion() uint32 { return migrations[len(migrations)-1].version }

// Render returns every statement a fresh migration would run, for review
// (`vigil store migrate --print`) or for running by hand.
func Render(l Layout) ([]string, error) {
	if err := l.validate(); err != nil {
		return nil, err
	}
	out := l.migrationsDDL()
	for _, m := range migrations {
		out = append(out, m.ddl(l)...)
	}
	return append(out, l.retentionDDL()...), nil
}

// migrate brings the schema to SchemaVersion and applies the configured retention. It is
// safe to run concurrently from several agents (every statement is idempotent and the
// version rows are a ReplacingMergeTree) and to run again. It returns the versions it applied.
func migrate(ctx context.Context, conn driver.Conn, l Layout) ([]uint32, error) {
	if err := l.validate(); err != nil {
		return nil, err
	}
	// The version is read before any DDL: in cluster mode every ON CLUSTER statement waits
	// for all the cluster's hosts (up to distributed_ddl_task_timeout, 180s by default), so
	// an agent starting while a replica is away would hang on a schema that is already there.
	current, err := schemaVersion(ctx, conn, l)
	if isUnknownTable(err) {
		for _, stmt := range l.migrationsDDL() {
			if err := conn.Exec(ctx, stmt); err != nil {
				return nil, fmt.Errorf("creating the migrations table: %w", err)
			}
		}
		current, err = schemaVersion(ctx, conn, l)
	}
	if err != nil {
		return nil, fmt.Errorf("reading the schema version: %w", err)
	}
	if current > SchemaVersion() {
		return nil, fmt.Errorf("schema version %d in %s is newer than this binary's %d: upgrade vigil before pointing it at this database",
			current, l.Database, SchemaVersion())
	}
	var applied []uint32
	for _, m := range migrations {
		if m.version <= current {
			continue
		}
		for _, stmt := range m.ddl(l) {
			if err := conn.Exec(ctx, stmt); err != nil {
				return applied, fmt.Errorf("schema migration %d (%s): %w", m.version, m.name, err)
			}
		}
		if err := recordMigration(ctx, conn, l, m); err != nil {
			return applied, fmt.Errorf("recording schema migration %d: %w", m.version, err)
		}
		applied = append(applied, m.version)
	}
	for _, stmt := range l.retentionDDL() {
		if err := conn.Exec(ctx, stmt); err != nil {
			return applied, fmt.Errorf("applying retention of %d days: %w", l.RetentionDays, err)
		}
	}
	return applied, nil
}

func schemaVersion(ctx context.Context, conn driver.Conn, l Layout) (uint32, error) {
	var v uint32
	err := conn.QueryRow(ctx, "SELECT max(version) FROM "+l.Table(TableMigrations)).Scan(&v)
	return v, err
}

// recordMigration inserts the version row through a batch: 18.16 does not take an
// INSERT with inline VALUES over the native protocol from this driver.
func recordMigration(ctx context.Context, conn driver.Conn, l Layout, m migration) error {
	if l.Cluster != "" && l.Features.DistributedSyncSetting != "" {
		// On the shards before the next migration reads it, not queued on this node.
		ctx = ch.Context(ctx, ch.WithSettings(ch.Settings{l.Features.DistributedSyncSetting: 1}))
	}
	b, err := conn.PrepareBatch(ctx, "INSERT INTO "+l.Table(TableMigrations)+" (version, name, applied_at)")
	if err != nil {
		return err
	}
	if err := b.Append(m.version, m.name, time.Now().UTC().Truncate(time.Second)); err != nil {
		_ = b.Abort()
		return err
	}
	return b.Send()
}
