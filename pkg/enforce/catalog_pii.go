package enforce

import (
	"context"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/vigil-db/vigil/pkg/mask"
	"github.com/vigil-db/vigil/pkg/policy"
)

// What the catalog and the data say about PII, per (upstream, database): column tags
// (COMMENT and SECURITY LABEL), loaded for the whole database in one query and refreshed
// after catalogTTL, and discovery findings, from sampling each table's values with the
// detectors in the background every Discovery.Interval.

// Catalog tags. In a COMMENT: vigil:pii, vigil:pii:<strategy>, [pii], [pii:<strategy>]
// mark a column PII; vigil:nopii or [nopii] say it is not (against the dictionary and
// discovery, not against the policy's own columns). <strategy> is full, null, token or
// partial:N. Any other text in the comment is left alone ("no PII here" is not a tag).
var tagRe = regexp.MustCompile(`(?i)(?:\bvigil:(no)?pii(?::(full|null|token|partial)(?::(\d+))?)?\b|\[(no)?pii(?::(full|null|token|partial)(?::(\d+))?)?\])`)

// tagPrefilter is what the catalog query selects comments by before tagRe reads them.
const tagPrefilter = `pii`

// publicLabels are SECURITY LABEL values that say a column is not sensitive; any other
// label makes it PII.
var publicLabels = map[string]bool{"public": true, "unclassified": true, "nopii": true, "none": true}

// colTag is what a column's tags say.
type colTag struct {
	pii  bool
	sens policy.Sensitivity
}

// parseTag reads the tag in a comment or label text.
func parseTag(text string, def mask.Strategy) (pii bool, s mask.Strategy, ok bool) {
	m := tagRe.FindStringSubmatch(text)
	if m == nil {
		return false, def, false
	}
	no, kind, keep := m[1], m[2], m[3]
	if m[0][0] == '[' {
		no, kind, keep = m[4], m[5], m[6]
	}
	if no != "" {
		return false, def, true
	}
	s = def
	if kind != "" {
		s = mask.Strategy{Kind: strings.ToLower(kind)}
		if s.Kind == mask.Partial {
			s.KeepLast = 4
			if n, err := strconv.Atoi(keep); err == nil {
				s.KeepLast = n
			}
		}
		if s.Validate() != nil {
			s = def
		}
	}
	return true, s, true
}

// classifyTags turns a column's comment and labels ("provider=label; …") into a tag.
func classifyTags(comment, labels string, def mask.Strategy) (colTag, bool) {
	if pii, s, ok := parseTag(comment, def); ok {
		return colTag{pii: pii, sens: policy.Sensitivity{Source: policy.SourceComment, Strategy: s, Detail: "comment " + strconv.Quote(tagRe.FindString(comment))}}, true
	}
	if labels == "" {
		return colTag{}, false
	}
	for _, l := range strings.Split(labels, "; ") {
		_, val, _ := strings.Cut(l, "=")
		if pii, s, ok := parseTag(val, def); ok {
			return colTag{pii: pii, sens: policy.Sensitivity{Source: policy.SourceLabel, Strategy: s, Detail: "security label " + l}}, true
		}
		if publicLabels[strings.ToLower(strings.TrimSpace(val))] {
			continue
		}
		return colTag{pii: true, sens: policy.Sensitivity{Source: policy.SourceLabel, Strategy: def, Detail: "security label " + l}}, true
	}
	return colTag{pii: false, sens: policy.Sensitivity{Source: policy.SourceLabel, Detail: "security label " + labels}}, true
}

// tagsSQL reads the columns of the database whose comment may carry a tag or that have a
// security label. pg_seclabel is empty unless a label provider (sepgsql, anon) is loaded.
const tagsSQL = `SELECT n.nspname, c.relname, a.attname, coalesce(d.description, ''),
 coalesce((SELECT pg_catalog.string_agg(l.provider || '=' || l.label, '; ' ORDER BY l.provider) FROM pg_catalog.pg_seclabel l
   WHERE l.classoid = 'pg_catalog.pg_class'::pg_catalog.regclass AND l.objoid = a.attrelid AND l.objsubid = a.attnum), '')
FROM pg_catalog.pg_attribute a
JOIN pg_catalog.pg_class c ON c.oid = a.attrelid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_catalog.pg_description d ON d.objoid = a.attrelid AND d.classoid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.objsubid = a.attnum
WHERE a.attnum > 0 AND NOT a.attisdropped AND n.nspname NOT IN ('pg_catalog', 'information_schema')
 AND (d.description ~* $1 OR EXISTS (SELECT 1 FROM pg_catalog.pg_seclabel l
   WHERE l.classoid = 'pg_catalog.pg_class'::pg_catalog.regclass AND l.objoid = a.attrelid AND l.objsubid = a.attnum))`

// piiState is one database's tags and discovery findings.
type piiState struct {
	loadMu sync.Mutex // held by the one session loading tags
	mu     sync.Mutex // guards the fields below
	tags   map[colName]colTag
	tagsAt time.Time
	found  map[colName]policy.Sensitivity
	// discAt is when discovery last started; discovering, that it runs now.
	discAt      time.Time
	discovering bool
}

// piiRuns are the proxy's background discovery runs: they end with it. gen counts changes
// to what any database's tags or findings say, so that sessions drop the plans they built
// before.
type piiRuns struct {
	mu     sync.Mutex
	ctx    context.Context
	cancel context.CancelFunc
	closed bool
	wg     sync.WaitGroup
	gen    atomic.Uint64
}

// start registers a background run; false once the proxy is closing.
func (r *piiRuns) start() (context.Context, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil, false
	}
	if r.ctx == nil {
		r.ctx, r.cancel = context.WithCancel(context.Background())
	}
	r.wg.Add(1)
	return r.ctx, true
}

// stop ends the runs and waits for them.
func (r *piiRuns) stop() {
	r.mu.Lock()
	r.closed = true
	if r.cancel != nil {
		r.cancel()
	}
	r.mu.Unlock()
	r.wg.Wait()
}

// tag returns what n's catalog tags say, loading the database's tags when they are older
// than catalogTTL. While another session reloads them, the previous ones are used.
func (c *catalog) tag(ss *session, d *catalogDB, n colName, def mask.Strategy) (colTag, bool) {
	p := &d.pii
	p.mu.Lock()
	fresh, loaded := time.Since(p.tagsAt) <= catalogTTL, !p.tagsAt.IsZero()
	p.mu.Unlock()
	if !fresh {
		if loaded {
			if p.loadMu.TryLock() {
				c.loadTags(ss, d, def)
				p.loadMu.Unlock()
			}
		} else {
			p.loadMu.Lock()
			c.loadTags(ss, d, def)
			p.loadMu.Unlock()
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	t, ok := p.tags[n]
	return t, ok
}

func (c *catalog) loadTags(ss *session, d *catalogDB, def mask.Strategy) {
	p := &d.pii
	p.mu.Lock()
	fresh := time.Since(p.tagsAt) <= catalogTTL
	p.mu.Unlock()
	if fresh {
		return // loaded by the session that held loadMu before
	}
	rows, err := c.query(ss, d, tagsSQL, tagPrefilter)
	if err != nil {
		// Try again in a few seconds, not on every column: the catalog may be down.
		ss.srv.log.Warn("reading column PII tags (COMMENT, SECURITY LABEL)", "session_id", ss.id, "err", err)
		p.mu.Lock()
		p.tagsAt = time.Now().Add(-catalogTTL + 5*time.Second)
		p.mu.Unlock()
		return
	}
	tags := make(map[colName]colTag, len(rows))
	for _, r := range rows {
		if t, ok := classifyTags(string(r[3]), string(r[4]), def); ok {
			tags[colName{string(r[0]), string(r[1]), string(r[2])}] = t
		}
	}
	p.mu.Lock()
	changed := len(tags) != len(p.tags)
	for k, v := range tags {
		if o, ok := p.tags[k]; !ok || o != v {
			changed = true
		}
	}
	p.tags, p.tagsAt = tags, time.Now()
	p.mu.Unlock()
	if changed {
		c.runs.gen.Add(1)
	}
}

// discovered returns what the last discovery run found about n.
func (p *piiState) discovered(n colName) (policy.Sensitivity, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	s, ok := p.found[n]
	return s, ok
}

// scheduleDiscovery starts a discovery run on the database of ss in the background when
// the last one started more than the policy's interval ago. A run lasts at most the
// policy's timeout and ends with the proxy.
func (c *catalog) scheduleDiscovery(ss *session, d *catalogDB, sp SensitivePolicy) {
	cfg := sp.Discovery()
	if cfg.Enabled != nil && !*cfg.Enabled {
		return
	}
	p := &d.pii
	p.mu.Lock()
	if p.discovering || (!p.discAt.IsZero() && time.Since(p.discAt) < cfg.Interval) {
		p.mu.Unlock()
		return
	}
	p.discovering, p.discAt = true, time.Now()
	p.mu.Unlock()
	ctx, ok := c.runs.start()
	if !ok {
		p.mu.Lock()
		p.discovering = false
		p.mu.Unlock()
		return
	}
	// The run outlives the session that started it: it keeps only the names it needs.
	who := &session{srv: ss.srv, id: ss.id, upstream: ss.upstream, database: ss.database, ctx: ctx}
	go func() {
		defer c.runs.wg.Done()
		start := time.Now()
		found, err := c.discover(ctx, who, d, sp, cfg)
		c.srv.m.discoveryRuns.WithLabelValues(outcome(err)).Inc()
		if err != nil {
			c.srv.log.Warn("PII discovery", "upstream", who.upstream, "database", who.database, "err", err)
		} else {
			c.srv.log.Info("PII discovery", "upstream", who.upstream, "database", who.database, "found", len(found), "took", time.Since(start))
		}
		m := make(map[colName]policy.Sensitivity, len(found))
		for _, f := range found {
			m[f.col] = f.sens
		}
		p.mu.Lock()
		changed := len(m) != len(p.found)
		for k := range m {
			if _, ok := p.found[k]; !ok {
				changed = true
			}
		}
		if err == nil || len(m) > 0 {
			p.found = m
		}
		p.discovering = false
		p.mu.Unlock()
		if changed {
			c.runs.gen.Add(1)
		}
	}()
}

func outcome(err error) string {
	if err != nil {
		return "error"
	}
	return "ok"
}

// discover runs one bounded discovery over the database of ss on a catalog connection.
func (c *catalog) discover(ctx context.Context, ss *session, d *catalogDB, sp SensitivePolicy, cfg policy.Discovery) ([]finding, error) {
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	conn, err := c.acquire(ctx, ss, d)
	if err != nil {
		return nil, err
	}
	found, skipped, err := discover(ctx, conn, c.srv.policy.Masker(), sp, cfg)
	if conn.IsBusy() || ctx.Err() != nil {
		d.discard(conn)
	} else {
		d.release(conn)
	}
	if len(skipped) > 0 {
		c.srv.log.Warn("PII discovery could not sample some tables (grant the catalog login SELECT on them)",
			"upstream", ss.upstream, "database", ss.database, "skipped", len(skipped), "first", skipped[0])
	}
	return found, err
}

// finding is one column discovery flagged.
type finding struct {
	col     colName
	sens    policy.Sensitivity
	share   float64
	sampled int
}

// discoverTablesSQL lists the tables discovery samples, largest first, with the columns of
// each (bytea and large-object columns are skipped: no detector reads them).
const discoverTablesSQL = `SELECT n.nspname, c.relname, pg_catalog.string_agg(a.attname, ',' ORDER BY a.attnum)
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
WHERE c.relkind IN ('r', 'p', 'm') AND NOT c.relispartition
 AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\_%'
 AND a.atttypid NOT IN ('pg_catalog.bytea'::pg_catalog.regtype, 'pg_catalog.oid'::pg_catalog.regtype)
GROUP BY n.nspname, c.relname, c.reltuples
ORDER BY c.reltuples DESC, n.nspname, c.relname
LIMIT $1`

// discoverValueLen bounds each sampled value: detectors match whole identifiers, which are
// short.
const discoverValueLen = 256

// discover samples up to cfg.MaxTables tables, cfg.SampleRows rows each, and returns the
// columns where one detector recognizes at least cfg.MinShare of the non-NULL values, and
// the tables it could not sample (no privilege, a broken view: the message says), which it
// skips. The run stops at ctx's deadline with what it found so far.
func discover(ctx context.Context, conn *pgconn.PgConn, m *mask.Masker, sp SensitivePolicy, cfg policy.Discovery) (out []finding, skipped []string, err error) {
	res := conn.ExecParams(ctx, discoverTablesSQL, [][]byte{[]byte(strconv.Itoa(cfg.MaxTables))}, nil, nil, nil).Read()
	if res.Err != nil {
		return nil, nil, fmt.Errorf("listing tables to sample: %w", res.Err)
	}
	perTable := max(cfg.Timeout/10, time.Second)
	for i, r := range res.Rows {
		if ctx.Err() != nil {
			return out, skipped, fmt.Errorf("discovery stopped after %d of %d tables: %w", i, len(res.Rows), ctx.Err())
		}
		schema, table, cols := string(r[0]), string(r[1]), strings.Split(string(r[2]), ",")
		exprs := make([]string, len(cols))
		for i, col := range cols {
			exprs[i] = fmt.Sprintf("pg_catalog.left(%s::pg_catalog.text, %d)", quoteIdent(col), discoverValueLen)
		}
		q := fmt.Sprintf("SELECT %s FROM %s.%s LIMIT %d", strings.Join(exprs, ", "), quoteIdent(schema), quoteIdent(table), cfg.SampleRows)
		tctx, cancel := context.WithTimeout(ctx, perTable)
		sample := conn.ExecParams(tctx, q, nil, nil, nil, nil).Read()
		cancel()
		if sample.Err != nil {
			if conn.IsClosed() {
				return out, skipped, fmt.Errorf("sampling %s.%s: %w", schema, table, sample.Err)
			}
			skipped = append(skipped, fmt.Sprintf("%s.%s: %v", schema, table, sample.Err))
			continue
		}
		for i, col := range cols {
			counts := map[string]int{}
			values := 0
			for _, row := range sample.Rows {
				if row[i] == nil {
					continue
				}
				values++
				if name, ok := m.Detect(row[i]); ok {
					counts[name]++
				}
			}
			best, bestN := "", 0
			for name, n := range counts {
				if n > bestN || (n == bestN && name < best) {
					best, bestN = name, n
				}
			}
			if values < cfg.MinValues || bestN == 0 {
				continue
			}
			share := float64(bestN) / float64(values)
			if share < cfg.MinShare {
				continue
			}
			out = append(out, finding{
				col: colName{schema, table, col}, share: share, sampled: values,
				sens: policy.Sensitivity{Source: policy.SourceDiscovered, Category: best, Strategy: sp.CategoryStrategy(best),
					Detail: fmt.Sprintf("%d of %d sampled values are %s", bestN, values, best)},
			})
		}
	}
	return out, skipped, nil
}
