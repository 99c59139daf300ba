package enforce

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// The catalog resolves a result column's table OID and attribute number (from RowDescription)
// to schema, table and column names, and a FunctionCall's function OID to its name. It asks
// the upstream on side connections per (upstream, database), logged in with Config.Catalog,
// and caches the answers: OIDs are stable while a table exists, and entries are refreshed
// after catalogTTL so renames are picked up. No lock is held across a lookup: a slow
// catalog query delays the sessions that need its answer, not every session of the
// database, and cached answers never wait.

const (
	catalogTTL     = time.Minute
	catalogTimeout = 5 * time.Second
	// catalogConns bounds the side connections per (upstream, database), so a burst of
	// new sessions cannot open one each.
	catalogConns = 4
)

type attKey struct {
	table uint32
	att   uint16
}

type colName struct{ schema, table, column string }

type catalog struct {
	srv *Server
	mu  sync.Mutex
	dbs map[[2]string]*catalogDB
	// runs are the PII discovery runs (catalog_pii.go).
	runs piiRuns
}

type catalogDB struct {
	mu     sync.Mutex // guards the caches only
	cols   map[attKey]colName
	loaded map[uint32]time.Time
	funcs  map[uint32]string
	rels   map[string]relEntry // by name, for the taint analysis
	fns    map[string]fnEntry  // by function name
	// idle holds open side connections not in use (a pgconn serves one query at a time);
	// a token in slots is one connection open, idle or in use.
	idle  chan *pgconn.PgConn
	slots chan struct{}
	// pii holds the database's PII tags and discovery findings (catalog_pii.go).
	pii piiState
}

func newCatalog(s *Server) *catalog { return &catalog{srv: s, dbs: make(map[[2]string]*catalogDB)} }

func (c *catalog) db(upstream, database string) *catalogDB {
	c.mu.Lock()
	defer c.mu.Unlock()
	k := [2]string{upstream, database}
	d := c.dbs[k]
	if d == nil {
		d = &catalogDB{cols: make(map[attKey]colName), loaded: make(map[uint32]time.Time), funcs: make(map[uint32]string),
			rels: make(map[string]relEntry), fns: make(map[string]fnEntry),
			idle: make(chan *pgconn.PgConn, catalogConns), slots: make(chan struct{}, catalogConns)}
		c.dbs[k] = d
	}
	return d
}

// close ends the idle side connections; it runs once every session has ended.
func (c *catalog) close() {
	c.runs.stop()
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, d := range c.dbs {
		for drained := false; !drained; {
			select {
			case conn := <-d.idle:
				d.discard(conn)
			default:
				drained = true
			}
		}
	}
}

// acquire takes an idle side connection, opens one if fewer than catalogConns are open, or
// waits for one to be released.
func (c *catalog) acquire(ctx context.Context, ss *session, d *catalogDB) (*pgconn.PgConn, error) {
	for {
		select {
		case conn := <-d.idle:
			if !conn.IsClosed() {
				return conn, nil
			}
			<-d.slots
			continue
		default:
		}
		select {
		case conn := <-d.idle:
			if !conn.IsClosed() {
				return conn, nil
			}
			<-d.slots
		case d.slots <- struct{}{}:
			conn, err := c.connect(ctx, ss)
			if err != nil {
				<-d.slots
				return nil, err
			}
			return conn, nil
		case <-ctx.Done():
			return nil, fmt.Errorf("catalog: waiting for a side connection to %s/%s: %w", ss.upstream, ss.database, ctx.Err())
		}
	}
}

// release returns a connection acquire gave out; broken ones free their slot.
func (d *catalogDB) release(conn *pgconn.PgConn) {
	if conn.IsClosed() {
		<-d.slots
		return
	}
	d.idle <- conn // never blocks: at most catalogConns connections exist
}

// discard closes a connection acquire gave out whose state is unknown (a query on it
// failed mid-way).
func (d *catalogDB) discard(conn *pgconn.PgConn) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	conn.Close(ctx)
	cancel()
	<-d.slots
}

// columns returns the names of the given tables' columns.
func (c *catalog) columns(ss *session, tables []uint32) (map[attKey]colName, error) {
	out := make(map[attKey]colName)
	if len(tables) == 0 {
		return out, nil
	}
	d := c.db(ss.upstream, ss.database)
	now := time.Now()
	var missing []string
	d.mu.Lock()
	for _, t := range tables {
		if at, ok := d.loaded[t]; !ok || now.Sub(at) > catalogTTL {
			missing = append(missing, strconv.FormatUint(uint64(t), 10))
		}
	}
	d.mu.Unlock()
	if len(missing) > 0 {
		rows, err := c.query(ss, d, `SELECT a.attrelid, a.attnum, n.nspname, c.relname, a.attname
FROM pg_catalog.pg_attribute a
JOIN pg_catalog.pg_class c ON c.oid = a.attrelid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE a.attrelid = ANY($1::pg_catalog.oid[]) AND a.attnum > 0 AND NOT a.attisdropped`, "{"+strings.Join(missing, ",")+"}")
		if err != nil {
			return out, err
		}
		d.mu.Lock()
		for _, m := range missing {
			t, _ := strconv.ParseUint(m, 10, 32)
			d.loaded[uint32(t)] = now
		}
		for _, r := range rows {
			t, err1 := strconv.ParseUint(string(r[0]), 10, 32)
			a, err2 := strconv.ParseUint(string(r[1]), 10, 16)
			if err1 != nil || err2 != nil {
				continue
			}
			d.cols[attKey{uint32(t), uint16(a)}] = colName{string(r[2]), string(r[3]), string(r[4])}
		}
		d.mu.Unlock()
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for k, v := range d.cols {
		for _, t := range tables {
			if k.table == t {
				out[k] = v
				break
			}
		}
	}
	return out, nil
}

// functionName returns a function's schema-qualified, quoted name.
func (c *catalog) functionName(ss *session, oid uint32) (string, error) {
	d := c.db(ss.upstream, ss.database)
	d.mu.Lock()
	n, ok := d.funcs[oid]
	d.mu.Unlock()
	if ok {
		return n, nil
	}
	rows, err := c.query(ss, d, `SELECT pg_catalog.quote_ident(n.nspname) || '.' || pg_catalog.quote_ident(p.proname)
FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace WHERE p.oid = $1::pg_catalog.oid`,
		strconv.FormatUint(uint64(oid), 10))
	if err != nil {
		return "", err
	}
	if len(rows) != 1 {
		return "", fmt.Errorf("no function with oid %d", oid)
	}
	n = string(rows[0][0])
	d.mu.Lock()
	d.funcs[oid] = n
	d.mu.Unlock()
	return n, nil
}

// query runs one catalog query with a single text parameter, on a fresh connection once
// more if the side connection broke. It ends with the session (its context).
func (c *catalog) query(ss *session, d *catalogDB, sql, param string) ([][][]byte, error) {
	for attempt := 0; ; attempt++ {
		ctx, cancel := context.WithTimeout(ss.context(), catalogTimeout)
		conn, err := c.acquire(ctx, ss, d)
		if err != nil {
			cancel()
			c.srv.m.catalogLookups.WithLabelValues("error").Inc()
			return nil, err
		}
		res := conn.ExecParams(ctx, sql, [][]byte{[]byte(param)}, nil, nil, nil).Read()
		cancel()
		var pgErr *pgconn.PgError
		switch {
		case res.Err == nil:
			d.release(conn)
			c.srv.m.catalogLookups.WithLabelValues("ok").Inc()
			return res.Rows, nil
		case errors.As(res.Err, &pgErr):
			d.release(conn) // the server answered: the connection is fine
		default:
			d.discard(conn)
			if attempt == 0 && ss.context().Err() == nil {
				continue
			}
		}
		c.srv.m.catalogLookups.WithLabelValues("error").Inc()
		return nil, fmt.Errorf("catalog query on %s/%s: %w", ss.upstream, ss.database, res.Err)
	}
}

func (c *catalog) connect(ctx context.Context, ss *session) (*pgconn.PgConn, error) {
	host, port, err := net.SplitHostPort(ss.upstream)
	if err != nil {
		return nil, fmt.Errorf("catalog: upstream address %q: %w", ss.upstream, err)
	}
	cfg, err := pgconn.ParseConfig(fmt.Sprintf("host=%s port=%s sslmode=disable", host, port))
	if err != nil {
		return nil, fmt.Errorf("catalog: %w", err)
	}
	cfg.User, cfg.Password, cfg.Database = c.srv.cfg.Catalog.User, c.srv.cfg.Catalog.Password, ss.database
	cfg.TLSConfig = c.srv.cfg.UpstreamTLS
	cfg.Fallbacks = nil
	cfg.ConnectTimeout = c.srv.cfg.DialTimeout
	cfg.RuntimeParams = map[string]string{"application_name": "vigil-proxy-catalog"}
	cfg.DialFunc = func(ctx context.Context, _, addr string) (net.Conn, error) { return c.srv.dialUpstream(ctx, addr) }
	conn, err := pgconn.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("catalog: connecting to %s/%s as %s: %w", ss.upstream, ss.database, cfg.User, err)
	}
	return conn, nil
}
