// Package clickhouse is Vigil's audit store of record for fleets: the audit event as
// columns in ClickHouse, versioned migrations with DDL gated on what the server supports
// (Debian's 18.16 up to current releases, single server or cluster), batched inserts that
// are idempotent when retried, a store.Reader that returns events exactly as they were
// stored (so the hash chain verifies), retention, and the Exporter that ships the local
// spool here without loss.
package clickhouse

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	ch "github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/vigil-db/vigil/pkg/event"
	"github.com/vigil-db/vigil/pkg/store"
)

// Config says where the store is.
type Config struct {
	Addr     []string // host:port of the native protocol (default port 9000; 9440 with Secure)
	Database string
	Username string
	Password string
	Secure   bool
	// Cluster: see Layout.Cluster.
	Cluster string
	// RetentionDays: see Layout.RetentionDays.
	RetentionDays int
	DialTimeout   time.Duration
}

// ParseURL reads clickhouse://[user[:password]@]host[:port][,host2:port...]/database
// [?cluster=NAME&retention_days=N&secure=true&dial_timeout=5s].
func ParseURL(raw string) (Config, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return Config{}, fmt.Errorf("store URL: %w", err)
	}
	if u.Scheme != "clickhouse" {
		return Config{}, fmt.Errorf("store URL %q: scheme must be clickhouse://", u.Redacted())
	}
	cfg := Config{Database: strings.Trim(u.Path, "/"), Username: "default", DialTimeout: 5 * time.Second}
	if u.User != nil {
		cfg.Username = u.User.Username()
		cfg.Password, _ = u.User.Password()
	}
	q := u.Query()
	for k := range q {
		switch k {
		case "cluster", "retention_days", "secure", "dial_timeout":
		default:
			return Config{}, fmt.Errorf("store URL %q: unknown parameter %q (known: cluster, retention_days, secure, dial_timeout)", u.Redacted(), k)
		}
	}
	cfg.Cluster = q.Get("cluster")
	if v := q.Get("secure"); v != "" {
		if cfg.Secure, err = strconv.ParseBool(v); err != nil {
			return Config{}, fmt.Errorf("store URL: secure=%q: %w", v, err)
		}
	}
	if v := q.Get("retention_days"); v != "" {
		if cfg.RetentionDays, err = strconv.Atoi(v); err != nil {
			return Config{}, fmt.Errorf("store URL: retention_days=%q: %w", v, err)
		}
	}
	if v := q.Get("dial_timeout"); v != "" {
		if cfg.DialTimeout, err = time.ParseDuration(v); err != nil {
			return Config{}, fmt.Errorf("store URL: dial_timeout=%q: %w", v, err)
		}
	}
	port := "9000"
	if cfg.Secure {
		port = "9440"
	}
	for _, h := range strings.Split(u.Host, ",") {
		if h == "" {
			continue
		}
		if !strings.Contains(h, ":") || strings.HasSuffix(h, "]") {
			h += ":" + port
		}
		cfg.Addr = append(cfg.Addr, h)
	}
	if len(cfg.Addr) == 0 {
		return Config{}, fmt.Errorf("store URL %q: no host", u.Redacted())
	}
	if cfg.Database == "" {
		return Config{}, fmt.Errorf("store URL %q: no database (clickhouse://host:port/DATABASE)", u.Redacted())
	}
	return cfg, (Layout{Database: cfg.Database, Cluster: cfg.Cluster, RetentionDays: cfg.RetentionDays}).validate()
}

// Store is a ClickHouse audit store. Open does no network I/O, so an agent starts (and
// spools) while ClickHouse is away; the first use connects, detects features and, for
// writers, migrates.
type Store struct {
	cfg  Config
	conn driver.Conn
	log  *slog.Logger

	mu         sync.Mutex
	layout     *Layout // nil until the server was asked what it supports
	migrated   bool
	legacyTime bool // the events table stores time as DateTime + time_ns
}

// Open prepares a store. It fails only on a bad configuration that no retry can fix.
func Open(cfg Config, log *slog.Logger) (*Store, error) {
	if log == nil {
		log = slog.Default()
	}
	if err := (Layout{Database: cfg.Database, Cluster: cfg.Cluster, RetentionDays: cfg.RetentionDays}).validate(); err != nil {
		return nil, err
	}
	conn, err := ch.Open(options(cfg, cfg.Database))
	if err != nil {
		return nil, fmt.Errorf("opening ClickHouse %v: %w", cfg.Addr, err)
	}
	return &Store{cfg: cfg, conn: conn, log: log.With("store", "clickhouse")}, nil
}

// options are the driver's options for a connection whose current database is db.
func options(cfg Config, db string) *ch.Options {
	opts := &ch.Options{
		Addr:            cfg.Addr,
		Auth:            ch.Auth{Database: db, Username: cfg.Username, Password: cfg.Password},
		DialTimeout:     cfg.DialTimeout,
		ReadTimeout:     5 * time.Minute,
		MaxOpenConns:    4,
		MaxIdleConns:    2,
		ConnMaxLifetime: time.Hour,
		Compression:     &ch.Compression{Method: ch.CompressionLZ4},
	}
	if cfg.Secure {
		opts.TLS = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	return opts
}

// Conn is the underlying connection, for forensic queries.
func (s *Store) Conn() driver.Conn { return s.conn }

// Config is the configuration the store was opened with.
func (s *Store) Config() Config { return s.cfg }

// Close closes the connections.
func (s *Store) Close() error { return s.conn.Close() }

// Layout connects if needed and returns the layout with the server's features.
func (s *Store) Layout(ctx context.Context) (Layout, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.layoutLocked(ctx)
}

func (s *Store) layoutLocked(ctx context.Context) (Layout, error) {
	if s.layout != nil {
		return *s.layout, nil
	}
	f, err := DetectFeatures(ctx, s.conn)
	if err != nil {
		return Layout{}, describe(err, s.cfg)
	}
	l := Layout{Database: s.cfg.Database, Cluster: s.cfg.Cluster, RetentionDays: s.cfg.RetentionDays, Features: f}
	s.layout = &l
	s.log.Info("connected", "addr", s.cfg.Addr, "database", s.cfg.Database, "features", f.String())
	return l, nil
}

// Migrate creates the database if it is missing and the user may (see createDatabase),
// brings the schema up to date (see migrate) and returns the versions applied.
func (s *Store) Migrate(ctx context.Context) ([]uint32, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	applied, err := s.migrateLocked(ctx)
	if isUnknownDatabase(err) {
		if cerr := s.createDatabase(ctx); cerr != nil {
			return nil, cerr
		}
		applied, err = s.migrateLocked(ctx)
	}
	if err != nil {
		return applied, err
	}
	if err := s.readTimeLayoutLocked(ctx); err != nil {
		return applied, err
	}
	s.migrated = true
	if len(applied) > 0 {
		s.log.Info("schema migrated", "applied", applied, "version", SchemaVersion())
	}
	return applied, nil
}

func (s *Store) migrateLocked(ctx context.Context) ([]uint32, error) {
	l, err := s.layoutLocked(ctx)
	if err != nil {
		return nil, err
	}
	applied, err := migrate(ctx, s.conn, l)
	return applied, describe(err, s.cfg)
}

// createDatabase runs CREATE DATABASE IF NOT EXISTS (ON CLUSTER in cluster mode), so that
// an agent pointed at a fresh server starts shipping by itself, as the schema does. The
// store's own connections name the missing database and fail at login, so this one logs
// in to system, which every user may use. A user without the right gets an error that says
// so, which `vigil store migrate` prints and the exporter reports on /readyz.
func (s *Store) createDatabase(ctx context.Context) error {
	conn, err := ch.Open(options(s.cfg, "system"))
	if err != nil {
		return fmt.Errorf("opening ClickHouse %v: %w", s.cfg.Addr, err)
	}
	defer conn.Close()
	l := Layout{Database: s.cfg.Database, Cluster: s.cfg.Cluster}
	if err := conn.Exec(ctx, "CREATE DATABASE IF NOT EXISTS "+l.Database+l.onCluster()); err != nil {
		if classify(err) == kindConfig {
			return fmt.Errorf("ClickHouse at %v: the database %q does not exist and user %q may not create it (create it as a user who may: CREATE DATABASE %s%s; or fix the store URL): %w",
				s.cfg.Addr, s.cfg.Database, s.cfg.Username, l.Database, l.onCluster(), err)
		}
		return describe(fmt.Errorf("creating the database: %w", err), s.cfg)
	}
	s.log.Info("created the database", "addr", s.cfg.Addr, "database", s.cfg.Database, "cluster", s.cfg.Cluster)
	return nil
}

// readTimeLayoutLocked looks at the events table itself: a table created on 18.16 keeps
// its DateTime + time_ns columns after the server is upgraded to one with DateTime64.
func (s *Store) readTimeLayoutLocked(ctx context.Context) error {
	var n uint64
	table := TableEvents
	if s.cfg.Cluster != "" {
		table += "_local"
	}
	err := s.conn.QueryRow(ctx, "SELECT count() FROM system.columns WHERE database = ? AND table = ? AND name = 'time_ns'",
		s.cfg.Database, table).Scan(&n)
	if err != nil {
		return describe(fmt.Errorf("reading the events table's columns: %w", err), s.cfg)
	}
	var exists uint64
	err = s.conn.QueryRow(ctx, "SELECT count() FROM system.tables WHERE database = ? AND name = ?", s.cfg.Database, table).Scan(&exists)
	if err != nil {
		return describe(fmt.Errorf("looking for the events table: %w", err), s.cfg)
	}
	if exists == 0 {
		return fmt.Errorf("ClickHouse at %v: database %q has no %s table (run `vigil store migrate`)", s.cfg.Addr, s.cfg.Database, table)
	}
	s.legacyTime = n > 0
	return nil
}

// readyForReading connects and learns the table layout without migrating: readers may
// be read-only users.
func (s *Store) readyForReading(ctx context.Context) (Layout, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	l, err := s.layoutLocked(ctx)
	if err != nil {
		return l, false, err
	}
	if !s.migrated {
		if err := s.readTimeLayoutLocked(ctx); err != nil {
			return l, false, err
		}
	}
	return l, s.legacyTime, nil
}

// Append inserts events as one batch (migrating first if this store has not yet). The
// batch is idempotent: inserting the same events again leaves the audit trail and the
// rollups as they were (see activityDDL), provided the retry is the same batch.
func (s *Store) Append(ctx context.Context, events []*event.Event) error {
	if len(events) == 0 {
		return nil
	}
	var cols eventColumnsBuf
	cols.reset(len(events))
	for _, e := range events {
		cols.add(e)
	}
	return s.insert(ctx, &cols, events[0].Seq, events[len(events)-1].Seq)
}

// insert sends a batch already in columns (first..last is its seq range, for errors). The
// columns are only read, so a failed insert can be retried with the same buffer.
func (s *Store) insert(ctx context.Context, cols *eventColumnsBuf, first, last uint64) error {
	s.mu.Lock()
	migrated, legacy := s.migrated, s.legacyTime
	var l Layout
	if s.layout != nil {
		l = *s.layout
	}
	s.mu.Unlock()
	if !migrated {
		if _, err := s.Migrate(ctx); err != nil {
			return err
		}
		return s.insert(ctx, cols, first, last)
	}
	if l.Cluster != "" {
		// insert_deduplicate = 0: a replicated table drops a block whose checksum it has
		// already seen, and a dropped block does not feed the materialized views. When a
		// replica dies after committing the events block but before its views' blocks,
		// the retry (through another replica) was dropped as a duplicate and the rollups
		// lost that batch for good. Every table is idempotent under a resent batch
		// (ReplacingMergeTree keyed by seq or first_seq, min/max states), so resent rows
		// are correct, not double-counted.
		settings := ch.Settings{"insert_deduplicate": 0}
		if l.Features.DistributedSyncSetting != "" {
			// An acknowledged insert must be on the shards, not in a local queue that a
			// crash of this node would lose.
			settings[l.Features.DistributedSyncSetting] = 1
		}
		ctx = ch.Context(ctx, ch.WithSettings(settings))
	}
	names, data := cols.columns(legacy)
	batch, err := s.conn.PrepareBatch(ctx, "INSERT INTO "+l.Table(TableEvents)+" ("+strings.Join(names, ", ")+")")
	if err != nil {
		return fmt.Errorf("preparing insert of %d events: %w", cols.len(), err)
	}
	for from := 0; from < cols.len(); from += insertBlockRows {
		to := min(from+insertBlockRows, cols.len())
		if from > 0 {
			if err := batch.Flush(); err != nil {
				_ = batch.Abort()
				return fmt.Errorf("inserting %d events (seq %d..%d): %w", cols.len(), first, last, err)
			}
		}
		for i, d := range data {
			if err := appendColumn(batch.Column(i), rowRange(d, from, to)); err != nil {
				_ = batch.Abort()
				return fmt.Errorf("filling column %s: %w", names[i], err)
			}
		}
	}
	if err := batch.Send(); err != nil {
		return fmt.Errorf("inserting %d events (seq %d..%d): %w", cols.len(), first, last, err)
	}
	return nil
}

// insertBlockRows: an insert is sent as blocks of this many rows (Flush), not as one block
// of the whole batch. clickhouse-go builds a fresh block for every insert and grows its
// string buffers by appending, so one 50,000-row block meant ~25 MB of new memory touched,
// copied on every growth and left to the GC, each batch; a 2,000-row block is reused
// after each Flush and stays in cache. This cut the exporter's CPU per event by about a
// third. The server squashes the blocks of one INSERT back into one (18.16 and current
// releases, up to min_insert_block_size_rows/bytes), so the table and the materialized
// views still see the batch as one block; and a retried batch is cut at the same rows, so
// its copies stay identical either way.
const insertBlockRows = 2_000

// rowRange is rows from..to of a column from eventColumnsBuf.columns.
func rowRange(data any, from, to int) any {
	switch d := data.(type) {
	case []time.Time:
		return d[from:to]
	case []uint32:
		return d[from:to]
	case []string:
		return d[from:to]
	case []uint64:
		return d[from:to]
	case []int32:
		return d[from:to]
	case []*int32:
		return d[from:to]
	case []uint8:
		return d[from:to]
	case []int64:
		return d[from:to]
	case [][]string:
		return d[from:to]
	}
	panic(fmt.Sprintf("clickhouse: no row range for %T", data))
}

// appendColumn appends a whole column. clickhouse-go's Append of [][]string reflects on
// every element of every row (a third of the insert's CPU time with five array columns);
// its AppendRow of one []string takes a reflection-free path.
func appendColumn(col driver.BatchColumn, data any) error {
	arrays, ok := data.([][]string)
	if !ok {
		return col.Append(data)
	}
	for _, a := range arrays {
		if err := col.AppendRow(a); err != nil {
			return err
		}
	}
	return nil
}

// Read implements store.Reader: matching events in ascending (agent_id, chain_id, seq)
// order, each event once even before ClickHouse has merged away retried duplicates (FINAL).
func (s *Store) Read(ctx context.Context, q store.Query, fn func(*event.Event) error) error {
	l, legacy, err := s.readyForReading(ctx)
	if err != nil {
		return err
	}
	var where []string
	var args []any
	add := func(cond string, a ...any) { where = append(where, cond); args = append(args, a...) }
	nanos := "toUnixTimestamp64Nano(time)"
	if legacy {
		nanos = "(toUInt64(toUInt32(time)) * 1000000000 + time_ns)"
	}
	if !q.Since.IsZero() {
		// The coarse condition lets ClickHouse prune partitions and granules; the exact one
		// decides at the nanosecond.
		add("time >= toDateTime(?, 'UTC') AND "+nanos+" >= ?", q.Since.Unix(), uint64(q.Since.UnixNano()))
	}
	if !q.Until.IsZero() {
		add("time < toDateTime(?, 'UTC') AND "+nanos+" < ?", q.Until.Unix()+1, uint64(q.Until.UnixNano()))
	}
	for _, f := range []struct{ col, v string }{{"db_user", q.DBUser}, {"database", q.Database}, {"kind", q.Kind},
		{"type", string(q.Type)}, {"decision", q.Decision}, {"session_id", q.SessionID}, {"agent_id", q.AgentID}} {
		if f.v != "" {
			add(f.col+" = ?", f.v)
		}
	}
	if q.Table != "" {
		add("has(tables, ?)", q.Table)
	}
	if q.AfterSeq != 0 {
		add("seq > ?", q.AfterSeq)
	}
	names := columnNames(Features{DateTime64: !legacy})
	sql := "SELECT " + strings.Join(names, ", ") + " FROM " + l.Table(TableEvents) + " FINAL"
	if len(where) > 0 {
		sql += " WHERE " + strings.Join(where, " AND ")
	}
	if q.Limit > 0 {
		sql = fmt.Sprintf("SELECT * FROM (%s ORDER BY time DESC, agent_id DESC, chain_id DESC, seq DESC LIMIT %d) ORDER BY agent_id, chain_id, seq", sql, q.Limit)
	} else {
		sql += " ORDER BY agent_id, chain_id, seq"
	}
	rows, err := s.conn.Query(ctx, sql, args...)
	if err != nil {
		return describe(fmt.Errorf("reading events: %w", err), s.cfg)
	}
	defer rows.Close()
	sc := newScanner(legacy)
	for rows.Next() {
		e, err := sc.scan(rows)
		if err != nil {
			return fmt.Errorf("reading events: %w", err)
		}
		if err := fn(e); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return describe(fmt.Errorf("reading events: %w", err), s.cfg)
	}
	return nil
}

// EnforceRetention drops day partitions older than the retention on servers without TTL
// (with TTL, ClickHouse expires rows itself and this does nothing). The agent calls it
// periodically; it returns the partitions dropped.
func (s *Store) EnforceRetention(ctx context.Context, now time.Time) ([]string, error) {
	l, err := s.Layout(ctx)
	if err != nil {
		return nil, err
	}
	if l.Features.TTL || l.RetentionDays == 0 {
		return nil, nil
	}
	cutoff, _ := strconv.Atoi(now.UTC().AddDate(0, 0, -l.RetentionDays).Format("20060102"))
	var dropped []string
	for _, table := range []string{TableEvents, TableActivity} {
		local := table
		if l.Cluster != "" {
			local += "_local"
		}
		rows, err := s.conn.Query(ctx, "SELECT DISTINCT partition FROM system.parts WHERE database = ? AND table = ? AND active", l.Database, local)
		if err != nil {
			return dropped, describe(fmt.Errorf("listing partitions of %s: %w", local, err), s.cfg)
		}
		var old []string
		for rows.Next() {
			var p string
			if err := rows.Scan(&p); err != nil {
				rows.Close()
				return dropped, err
			}
			if day, err := strconv.Atoi(p); err == nil && day < cutoff {
				old = append(old, p)
			}
		}
		rows.Close()
		for _, p := range old {
			// p is digits only (checked by Atoi above), so it is safe to splice.
			if err := s.conn.Exec(ctx, fmt.Sprintf("ALTER TABLE %s.%s%s DROP PARTITION %s", l.Database, local, l.onCluster(), p)); err != nil {
				return dropped, describe(fmt.Errorf("dropping partition %s of %s: %w", p, local, err), s.cfg)
			}
			dropped = append(dropped, local+"/"+p)
		}
	}
	return dropped, nil
}

var _ store.Reader = (*Store)(nil)
var _ store.Appender = (*Store)(nil)
