package enforce

import (
	"strings"
	"time"

	"github.com/vigil-db/vigil/pkg/lineage"
)

// Catalog lookups for the taint analysis (pkg/lineage): relations by name with their column
// lists and view definitions, and functions by name with their language and SQL bodies.
// Cached per (upstream, database) for catalogTTL, like the column names. Unqualified names
// resolve along the catalog role's search path, not the client session's (which the proxy
// does not follow): a documented limit.

type relEntry struct {
	rel lineage.Relation
	ok  bool
	at  time.Time
}

type fnEntry struct {
	fns []lineage.Function
	at  time.Time
}

// lineageCatalog is lineage.Catalog over a session's catalog connection.
type lineageCatalog struct{ ss *session }

func (lc lineageCatalog) Relation(schema, name string) (lineage.Relation, bool, error) {
	ss := lc.ss
	d := ss.srv.cat.db(ss.upstream, ss.database)
	key := schema + "\x00" + name
	d.mu.Lock()
	e, hit := d.rels[key]
	d.mu.Unlock()
	if hit && time.Since(e.at) < catalogTTL {
		return e.rel, e.ok, nil
	}
	qname := quoteIdent(name)
	if schema != "" {
		qname = quoteIdent(schema) + "." + qname
	}
	rows, err := ss.srv.cat.query(ss, d, `SELECT n.nspname, c.relname,
  CASE WHEN c.relkind IN ('v', 'm') THEN pg_catalog.pg_get_viewdef(c.oid) END, a.attname
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
WHERE c.oid = pg_catalog.to_regclass($1)
ORDER BY a.attnum`, qname)
	if err != nil {
		return lineage.Relation{}, false, err
	}
	e = relEntry{ok: len(rows) > 0, at: time.Now()}
	for i, r := range rows {
		if i == 0 {
			e.rel = lineage.Relation{Schema: string(r[0]), Name: string(r[1]), View: string(r[2])}
		}
		if r[3] != nil {
			e.rel.Columns = append(e.rel.Columns, string(r[3]))
		}
	}
	d.mu.Lock()
	d.rels[key] = e
	d.mu.Unlock()
	return e.rel, e.ok, nil
}

// Functions returns the functions schema.name may call. Unqualified, a name pg_catalog has
// is taken as the builtin (pg_catalog is searched first unless a session puts it later);
// otherwise every schema's function of that name counts, whichever the session would call.
func (lc lineageCatalog) Functions(schema, name string) ([]lineage.Function, error) {
	ss := lc.ss
	d := ss.srv.cat.db(ss.upstream, ss.database)
	d.mu.Lock()
	e, hit := d.fns[name]
	d.mu.Unlock()
	if !hit || time.Since(e.at) >= catalogTTL {
		rows, err := ss.srv.cat.query(ss, d, `SELECT n.nspname, l.lanname, p.prosrc, pg_catalog.array_to_string(p.proargnames, ',')
FROM pg_catalog.pg_proc p
JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
JOIN pg_catalog.pg_language l ON l.oid = p.prolang
WHERE p.proname = $1`, name)
		if err != nil {
			return nil, err
		}
		e = fnEntry{at: time.Now()}
		for _, r := range rows {
			f := lineage.Function{Schema: string(r[0]), Language: string(r[1]), Body: string(r[2])}
			if len(r[3]) > 0 {
				f.ArgNames = strings.Split(string(r[3]), ",")
			}
			e.fns = append(e.fns, f)
		}
		d.mu.Lock()
		d.fns[name] = e
		d.mu.Unlock()
	}
	var out, builtin []lineage.Function
	for _, f := range e.fns {
		switch {
		case schema != "" && f.Schema == schema:
			out = append(out, f)
		case schema == "" && f.Schema == "pg_catalog":
			builtin = append(builtin, f)
		case schema == "":
			out = append(out, f)
		}
	}
	if len(builtin) > 0 {
		return builtin, nil
	}
	return out, nil
}
