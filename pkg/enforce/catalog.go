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
// the upstream on a side connection per (upstream, database), logged in with Config.Catalog,
// and caches the answers: OIDs are stable while a table exists, and entries are refreshed
// after catalogTTL so renames are picked up.

const (
	catalogTTL     = time.Minute
	catalogTimeout = 5 * time.Second
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
}

type catalogDB struct {
	mu     sync.Mutex // one query at a time on conn
	conn   *pgconn.PgConn
	cols   map[attKey]colName
	loaded map[uint32]time.Time
	funcs  map[uint32]string
}

func newCatalog(s *Server) *catalog { return &catalog{srv: s, dbs: make(map[[2]string]*catalogDB)} }

func (c *catalog) db(upstream, database string) *catalogDB {
	c.mu.Lock()
	defer c.mu.Unlock()
	k := [2]string{upstream, database}
	d := c.dbs[k]
	if d == nil {
		d = &catalogDB{cols: make(map[attKey]colName), loaded: make(map[uint32]time.Time), funcs: make(map[uint32]string)}
		c.dbs[k] = d
	}
	return d
}

// close ends the side connections.
func (c *catalog) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, d := range c.dbs {
		d.mu.Lock()
		if d.conn != nil {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			d.conn.Close(ctx)
			cancel()
			d.conn = nil
		}
		d.mu.Unlock()
	}
}

// columns returns the names of the given tables' columns.
func (c *catalog) columns(ss *session, tables []uint32) (map[attKey]colName, error) {
	out := make(map[attKey]colName)
	if len(tables) == 0 {
		return out, nil
	}
	d := c.db(ss.upstream, ss.database)
	d.mu.Lock()
	defer d.mu.Unlock()
	now := time.Now()
	var missing []string
	for _, t := range tables {
		if at, ok := d.loaded[t]; !ok || now.Sub(at) > catalogTTL {
			missing = append(missing, strconv.FormatUint(uint64(t), 10))
		}
	}
	if len(missing) > 0 {
		rows, err := c.query(ss, d, `SELECT a.attrelid, a.attnum, n.nspname, c.relname, a.attname
FROM pg_catalog.pg_attribute a
JOIN pg_catalog.pg_class c ON c.oid = a.attrelid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE a.attrelid = ANY($1::pg_catalog.oid[]) AND a.attnum > 0 AND NOT a.attisdropped`, "{"+strings.Join(missing, ",")+"}")
		if err != nil {
			return out, err
		}
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
	}
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
	defer d.mu.Unlock()
	if n, ok := d.funcs[oid]; ok {
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
	d.funcs[oid] = string(rows[0][0])
	return d.funcs[oid], nil
}

// query runs one catalog query with a single text parameter, reconnecting once if the side
// connection broke.
func (c *catalog) query(ss *session, d *catalogDB, sql, param string) ([][][]byte, error) {
	for attempt := 0; ; attempt++ {
		if d.conn == nil || d.conn.IsClosed() {
			conn, err := c.connect(ss)
			if err != nil {
				c.srv.m.catalogLookups.WithLabelValues("error").Inc()
				return nil, err
			}
			d.conn = conn
		}
		ctx, cancel := context.WithTimeout(context.Background(), catalogTimeout)
		res := d.conn.ExecParams(ctx, sql, [][]byte{[]byte(param)}, nil, nil, nil).Read()
		cancel()
		if res.Err == nil {
			c.srv.m.catalogLookups.WithLabelValues("ok").Inc()
			return res.Rows, nil
		}
		var pgErr *pgconn.PgError
		if attempt > 0 || errors.As(res.Err, &pgErr) {
			c.srv.m.catalogLookups.WithLabelValues("error").Inc()
			return nil, fmt.Errorf("catalog query on %s/%s: %w", ss.upstream, ss.database, res.Err)
		}
		d.conn.Close(context.Background())
		d.conn = nil
	}
}

func (c *catalog) connect(ss *session) (*pgconn.PgConn, error) {
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
	ctx, cancel := context.WithTimeout(context.Background(), catalogTimeout)
	defer cancel()
	conn, err := pgconn.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("catalog: connecting to %s/%s as %s: %w", ss.upstream, ss.database, cfg.User, err)
	}
	return conn, nil
}
