package enforce

import (
	"strings"
	"time"

	"github.com/vigil-db/vigil/pkg/lineage"
)

// Catalog lookups for the taint analysis (pkg/lineage): relations by name with their column
// lists and view definitions, and functions by name with their language and SQL bodies.
// Cached per (upstream, database) for catalogTTL, like the column names. The proxy does not
// follow the client session's search_path, so an unqualified name stands for every relation
// or function of that name, whatever its schema.

type relEntry struct {
	rels []lineage.Relation
	at   time.Time
}

type fnEntry struct {
	fns []lineage.Function
	at  time.Time
}

// lineageCatalog is lineage.Catalog over a session's catalog connection.
type lineageCatalog struct{ ss *session }

// Relations returns the relations of that name: in schema, or with schema "" in every
// schema, since which one the client's session reads depends on its search_path.
func (lc lineageCatalog) Relations(schema, name string) ([]lineage.Relation, error) {
	ss := lc.ss
	d := ss.srv.cat.db(ss.upstream, ss.database)
	d.mu.Lock()
	e, hit := d.rels[name]
	d.mu.Unlock()
	if hit && time.Since(e.at) < catalogTTL {
		return inSchema(e.rels, schema), nil
	}
	rows, err := ss.srv.cat.query(ss, d, `SELECT n.nspname, c.relname,
  CASE WHEN c.relkind IN ('v', 'm') THEN pg_catalog.pg_get_viewdef(c.oid) END, a.attname
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
WHERE c.relname = $1 AND c.relkind IN ('r', 'v', 'm', 'f', 'p')
ORDER BY n.nspname, a.attnum`, name)
	if err != nil {
		return nil, err
	}
	e = relEntry{at: time.Now()}
	var cur *lineage.Relation
	for _, r := range rows {
		if cur == nil || cur.Schema != string(r[0]) {
			e.rels = append(e.rels, lineage.Relation{Schema: string(r[0]), Name: string(r[1]), View: string(r[2])})
			cur = &e.rels[len(e.rels)-1]
		}
		if r[3] != nil {
			cur.Columns = append(cur.Columns, string(r[3]))
		}
	}
	d.mu.Lock()
	d.rels[name] = e
	d.mu.Unlock()
	return inSchema(e.rels, schema), nil
}

func inSchema(rels []lineage.Relation, schema string) []lineage.Relation {
	if schema == "" {
		return rels
	}
	var out []lineage.Relation
	for _, r := range rels {
		if r.Schema == schema {
			out = append(out, r)
		}
	}
	return out
}

// Functions returns the functions schema.name may call. Unqualified, every schema's
// function of that name counts: a session can put its own schema before pg_catalog.
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
	if schema == "" {
		return e.fns, nil
	}
	var out []lineage.Function
	for _, f := range e.fns {
		if f.Schema == schema {
			out = append(out, f)
		}
	}
	return out, nil
}
