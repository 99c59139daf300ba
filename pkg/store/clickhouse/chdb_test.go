//go:build chdb

// The modern side of the schema, the forensic library and the dashboards, checked on a
// current ClickHouse (26.5) running in-process through chDB. Needs libchdb.so: set
// CHDB_LIB_PATH (chDB's package init panics without it, hence the build tag).
//
//	CHDB_LIB_PATH=/var/cache/vigil-chdb/package/libchdb.so go test -tags chdb -run Chdb ./pkg/store/clickhouse/

package clickhouse

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/chdb-io/chdb-go/chdb"

	"github.com/vigil-db/vigil/dashboards"
	"github.com/vigil-db/vigil/pkg/forensics"
)

type chdbSession struct {
	t *testing.T
	s *chdb.Session
}

func (c chdbSession) query(sql string) (string, error) {
	r, err := c.s.Query(sql, "TSV")
	if err != nil {
		return "", err
	}
	defer r.Free()
	if err := r.Error(); err != nil {
		return "", err
	}
	return strings.TrimSpace(r.String()), nil
}

func (c chdbSession) must(sql string) string {
	c.t.Helper()
	out, err := c.query(sql)
	if err != nil {
		c.t.Fatalf("%v\n%s", err, sql)
	}
	return out
}

func (c chdbSession) set(sql string) map[string]string {
	m := map[string]string{}
	for _, line := range strings.Split(c.must(sql), "\n") {
		k, v, _ := strings.Cut(line, "\t")
		if k != "" {
			m[k] = v
		}
	}
	return m
}

// literal renders a bound value as ClickHouse does for clickhouse-go's client-side
// binding; chDB takes no bound parameters.
func literal(v any) string {
	switch x := v.(type) {
	case string:
		return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(x) + "'"
	default:
		return fmt.Sprint(x)
	}
}

func TestChdbModern(t *testing.T) {
	s, err := chdb.NewSession(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	c := chdbSession{t: t, s: s}
	version := c.must("SELECT version()")

	// Feature detection reads the same system tables as DetectFeatures.
	fam := map[string]bool{}
	for k := range c.set("SELECT name FROM system.data_type_families") {
		fam[k] = true
	}
	mts := map[string]bool{}
	for k := range c.set("SELECT name FROM system.merge_tree_settings WHERE name IN ('merge_with_ttl_timeout', 'non_replicated_deduplication_window')") {
		mts[k] = true
	}
	settings := c.set("SELECT name, value FROM system.settings WHERE name IN ('allow_experimental_low_cardinality_type', 'allow_suspicious_codecs', 'allow_experimental_data_skipping_indices', 'insert_distributed_sync', 'distributed_foreground_insert')")
	f := detect(version, fam, settings, mts)
	want := Modern
	want.Version, want.DistributedSyncSetting = f.Version, f.DistributedSyncSetting
	if f != want {
		t.Fatalf("ClickHouse %s detected as %+v, want %+v", version, f, want)
	}
	t.Log(f)

	// The modern DDL runs, twice (idempotent), with retention.
	l := Layout{Database: "default", RetentionDays: 30, Features: f}
	stmts, err := Render(l)
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		for _, stmt := range stmts {
			c.must(stmt)
		}
	}
	ddl := c.must("SELECT create_table_query FROM system.tables WHERE database = 'default' AND name = 'audit_events'")
	for _, w := range []string{"DateTime64(9", "LowCardinality(String)", "CODEC(", "TTL ", "bloom_filter", "non_replicated_deduplication_window"} {
		if !strings.Contains(ddl, w) {
			t.Errorf("events table lacks %q: %s", w, ddl)
		}
	}
	for _, tbl := range []string{"audit_activity_1m", "audit_actor_pairs"} {
		if !strings.Contains(c.must("SELECT create_table_query FROM system.tables WHERE database = 'default' AND name = '"+tbl+"'"), "non_replicated_deduplication_window") {
			t.Errorf("rollup %s lacks non_replicated_deduplication_window", tbl)
		}
	}

	// The cluster rendering of the same schema parses on 26.5 (running it needs Keeper).
	cl := l
	cl.Cluster = "vigil_cluster"
	cstmts, err := Render(cl)
	if err != nil {
		t.Fatal(err)
	}
	for _, stmt := range cstmts {
		c.must("SELECT formatQuery(" + literal(stmt) + ")")
	}

	// A retried identical batch counts once in the trail and the rollups.
	now := time.Now().UTC()
	insert := fmt.Sprintf(`INSERT INTO default.audit_events (time, type, agent_id, seq, db_user, database, kind, tables, decision,
		pii_columns, masked_columns, rows, duration_us, session_id, has_process, process_comm, process_exe, statement, approval_id, identity_email)
		VALUES (toDateTime64('%[1]s', 9, 'UTC'), 'statement', 'a', 1, 'alice', 'shop', 'SELECT', ['customers'], 'block', ['email'], [], 3, 1200, 's-1', 1, 'psql', '/usr/bin/psql', 'SELECT email FROM customers', 'apr-1', 'alice@example.com'),
		(toDateTime64('%[1]s', 9, 'UTC'), 'gap', 'a', 3, '', '', '', [], '', [], [], 0, 0, '', 0, '', '', '', '', '')`,
		now.Add(-10*time.Minute).Format("2006-01-02 15:04:05.000000000"))
	c.must(insert)
	c.must(insert)
	for sql, want := range map[string]string{
		"SELECT count() FROM default.audit_events FINAL":              "2",
		"SELECT sum(statements) FROM default.audit_activity_1m FINAL": "2",
		"SELECT count() FROM default.audit_actor_pairs":               "1",
	} {
		if got := c.must(sql); got != want {
			t.Errorf("%s = %s, want %s", sql, got, want)
		}
	}

	// Every forensic query and every dashboard panel query is valid on 26.5.
	for _, q := range forensics.List() {
		params := map[string]string{}
		for _, p := range q.Params {
			if p.Required {
				params[p.Name] = "alice"
			}
		}
		sql, args, err := q.Bind(params, now)
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range args {
			sql = strings.Replace(sql, "?", literal(a), 1)
		}
		if _, err := c.query(sql); err != nil {
			t.Errorf("forensic query %s: %v", q.Name, err)
		}
	}
	panels, err := dashboards.Queries()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range panels {
		if p.Datasource != dashboards.ClickHouseDatasource {
			continue
		}
		if _, err := c.query(dashboards.Expand(p.Query, now.Add(-time.Hour), now, time.Minute)); err != nil {
			t.Errorf("panel %q: %v", p.Panel, err)
		}
	}
}
