package clickhouse

import (
	"context"
	"fmt"
	"slices"
	"time"

	ch "github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

// migration is one versioned step of the schema. Its statements are idempotent (IF NOT
// EXISTS, or checks of what is there), so a migration interrupted half-way is simply run
// again.
type migration struct {
	version uint32
	name    string
	ddl     func(Layout) []string
	// upgrade brings a table that an earlier version created to the shape its DDL now
	// creates, and leaves one created in that shape alone. Render leaves it out: a fresh
	// schema does not need it.
	upgrade func(context.Context, driver.Conn, Layout) error
}

// migrations in order. Append new versions; never change what an applied one did to an
// existing database. The DDL of a version creates its tables' current shape (CREATE IF NOT
// EXISTS leaves an existing table alone), and a later version that changes such a table
// upgrades the old shape: a fresh schema is made in one step, an old one upgraded in place.
var migrations = []migration{
	{1, "audit events", Layout.eventsDDL, nil},
	{2, "per-minute activity rollup", Layout.activityDDL, nil},
	{3, "first and last seen of process and database user pairs", Layout.actorsDDL, nil},
	{4, "chain ids in the events and activity keys", nil, upgradeChainIDs},
	{5, "signed heads of the chains", Layout.headsDDL, nil},
	{6, "steered connections", nil, upgradeSteered},
	{7, "process cgroups", nil, upgradeProcessCgroup},
	{8, "container images", nil, upgradeProcessImage},
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
		if m.ddl != nil {
			out = append(out, m.ddl(l)...)
		}
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
		var stmts []string
		if m.ddl != nil {
			stmts = m.ddl(l)
		}
		for _, stmt := range stmts {
			if err := conn.Exec(ctx, stmt); err != nil {
				return applied, fmt.Errorf("schema migration %d (%s): %w", m.version, m.name, err)
			}
		}
		if m.upgrade != nil {
			if err := m.upgrade(ctx, conn, l); err != nil {
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

// upgradeChainIDs adds chain_id to the keys of an events and an activity table made before
// chain ids (schema 1–3), and recreates the activity view to carry it. Rows stored before
// get the empty chain id, which is what their events' hashes were computed with.
func upgradeChainIDs(ctx context.Context, conn driver.Conn, l Layout) error {
	typ := column{name: "chain_id", typ: "String", lc: true}.ddl(l.Features)
	for _, t := range []struct{ table, key string }{{TableEvents, eventsKey}, {TableActivity, activityKey}} {
		has, err := hasColumn(ctx, conn, l.Database, l.local(t.table), "chain_id")
		if err != nil {
			return err
		}
		if !has {
			stmt := fmt.Sprintf("ALTER TABLE %s%s ADD COLUMN %s AFTER agent_id, MODIFY ORDER BY (%s)", l.local(t.table), l.onCluster(), typ, t.key)
			if err := conn.Exec(ctx, stmt); err != nil {
				if l.Cluster != "" && isNotImplemented(err) {
					return fmt.Errorf("this ClickHouse cannot change the sort key of the replicated table %s (it needs 20.x or later); "+
						"upgrade ClickHouse, or move the data by hand as docs/clickhouse.md describes (\"Upgrading a replicated cluster to schema 4\"): %w",
						l.local(t.table), err)
				}
				return fmt.Errorf("adding chain_id to %s: %w", l.local(t.table), err)
			}
		}
		if l.Cluster != "" {
			if err := addColumn(ctx, conn, l, l.Table(t.table), column{name: "chain_id", typ: "String", lc: true}, "agent_id"); err != nil {
				return err
			}
		}
	}
	has, err := hasColumn(ctx, conn, l.Database, l.activityViewName(), "chain_id")
	if err != nil || has {
		return err
	}
	// Inserts between the drop and the create are not counted in the rollup: a migration
	// runs before the agent's first batch, and other agents' batches in that instant are
	// the price of an in-place upgrade (docs/clickhouse.md).
	for _, stmt := range []string{fmt.Sprintf("DROP TABLE IF EXISTS %s%s", l.activityViewName(), l.onCluster()), l.activityView()} {
		if err := conn.Exec(ctx, stmt); err != nil {
			return fmt.Errorf("recreating the activity view: %w", err)
		}
	}
	return nil
}

// upgradeSteered adds the steered and steered_by columns to an events table made before
// them; rows stored before read as not steered, as their events were.
func upgradeSteered(ctx context.Context, conn driver.Conn, l Layout) error {
	return addEventColumns(ctx, conn, l, "tls", "steered", "steered_by")
}

// upgradeProcessCgroup adds process_cgroup to an events table made before it.
func upgradeProcessCgroup(ctx context.Context, conn driver.Conn, l Layout) error {
	return addEventColumns(ctx, conn, l, "process_service_account", "process_cgroup")
}

// upgradeProcessImage adds process_image to an events table made before it.
func upgradeProcessImage(ctx context.Context, conn driver.Conn, l Layout) error {
	return addEventColumns(ctx, conn, l, "process_service_account", "process_image")
}

// addEventColumns adds the named eventColumns to the events tables, in order, the first
// after the column after.
func addEventColumns(ctx context.Context, conn driver.Conn, l Layout, after string, names ...string) error {
	for _, name := range names {
		i := slices.IndexFunc(eventColumns, func(c column) bool { return c.name == name })
		if i < 0 {
			return fmt.Errorf("no event column %s", name)
		}
		for _, table := range l.tables(TableEvents) {
			if err := addColumn(ctx, conn, l, table, eventColumns[i], after); err != nil {
				return err
			}
		}
		after = name
	}
	return nil
}

// tables names a table as each node holds it: the local table, and in cluster mode the
// Distributed table over it, whose columns must follow.
func (l Layout) tables(table string) []string {
	if l.Cluster == "" {
		return []string{l.local(table)}
	}
	return []string{l.local(table), l.Table(table)}
}

// addColumn adds col after the column after, unless table has it already.
func addColumn(ctx context.Context, conn driver.Conn, l Layout, table string, col column, after string) error {
	has, err := hasColumn(ctx, conn, l.Database, table, col.name)
	if err != nil || has {
		return err
	}
	stmt := fmt.Sprintf("ALTER TABLE %s%s ADD COLUMN %s AFTER %s", table, l.onCluster(), col.ddl(l.Features), after)
	if err := conn.Exec(ctx, stmt); err != nil {
		return fmt.Errorf("adding %s to %s: %w", col.name, table, err)
	}
	return nil
}

// hasColumn reports whether the table (database.table) has the column.
func hasColumn(ctx context.Context, conn driver.Conn, database, table, col string) (bool, error) {
	var n uint64
	name := table[len(database)+1:]
	if err := conn.QueryRow(ctx, "SELECT count() FROM system.columns WHERE database = ? AND table = ? AND name = ?", database, name, col).Scan(&n); err != nil {
		return false, fmt.Errorf("reading the columns of %s: %w", table, err)
	}
	return n > 0, nil
}
