package enforce

import (
	"context"
	"fmt"
	"sort"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/vigil-db/vigil/pkg/policy"
)

// Finding is one sensitive column and why, as `vigil pii scan` prints it.
type Finding struct {
	Schema string `json:"schema"`
	Table  string `json:"table"`
	Column string `json:"column"`
	Type   string `json:"type"`
	policy.Sensitivity
	// Share and Sampled: for discovered columns, the share of the sampled non-NULL values
	// the detector recognized, out of how many.
	Share   float64 `json:"share,omitempty"`
	Sampled int     `json:"sampled,omitempty"`
}

// scanColumnsSQL lists every column of the database's tables, views and materialized views.
const scanColumnsSQL = `SELECT n.nspname, c.relname, a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod)
FROM pg_catalog.pg_attribute a
JOIN pg_catalog.pg_class c ON c.oid = a.attrelid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE a.attnum > 0 AND NOT a.attisdropped AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
 AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\_%'`

// Scan finds the sensitive columns of conn's database as the proxy does: by name (the
// policy's columns and dictionary), by the catalog's tags, and by sampling values (bounded
// by the policy's discovery settings, run even when the proxy's discovery is off). It also
// returns the tables it could not sample, with why.
func Scan(ctx context.Context, conn *pgconn.PgConn, pol Policy) (_ []Finding, skipped []string, _ error) {
	sp, ok := pol.(SensitivePolicy)
	if !ok {
		return nil, nil, fmt.Errorf("pii scan: the policy does not classify columns by name")
	}
	cfg := sp.Discovery()
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout+catalogTimeout)
	defer cancel()
	res := conn.ExecParams(ctx, scanColumnsSQL, nil, nil, nil, nil).Read()
	if res.Err != nil {
		return nil, nil, fmt.Errorf("pii scan: listing columns: %w", res.Err)
	}
	tagRows := conn.ExecParams(ctx, tagsSQL, [][]byte{[]byte(tagPrefilter)}, nil, nil, nil).Read()
	if tagRows.Err != nil {
		return nil, nil, fmt.Errorf("pii scan: reading column tags: %w", tagRows.Err)
	}
	tags := map[colName]colTag{}
	for _, r := range tagRows.Rows {
		if t, ok := classifyTags(string(r[3]), string(r[4]), pol.Strategy()); ok {
			tags[colName{string(r[0]), string(r[1]), string(r[2])}] = t
		}
	}
	dctx, dcancel := context.WithTimeout(ctx, cfg.Timeout)
	found, skipped, derr := discover(dctx, conn, pol.Masker(), sp, cfg)
	dcancel()
	disc := map[colName]finding{}
	for _, f := range found {
		disc[f.col] = f
	}
	var out []Finding
	for _, r := range res.Rows {
		n := colName{string(r[0]), string(r[1]), string(r[2])}
		t, tagged := tags[n]
		f, discovered := disc[n]
		byName, named := sp.ColumnSensitivity(n.schema, n.table, n.column)
		s, pii := resolveSensitivity(byName, named, t, tagged, f.sens, discovered)
		if !pii {
			continue
		}
		fd := Finding{Schema: n.schema, Table: n.table, Column: n.column, Type: string(r[3]), Sensitivity: s}
		if s.Source == policy.SourceDiscovered {
			fd.Share, fd.Sampled = f.share, f.sampled
		}
		out = append(out, fd)
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.Schema != b.Schema {
			return a.Schema < b.Schema
		}
		if a.Table != b.Table {
			return a.Table < b.Table
		}
		return a.Column < b.Column
	})
	if derr != nil {
		return out, skipped, fmt.Errorf("pii scan: sampling values (findings so far are listed): %w", derr)
	}
	return out, skipped, nil
}

// resolveSensitivity orders what is known about a column: the policy's own columns, the
// catalog's tags (which may also say a column is not PII), the name dictionary, discovery.
func resolveSensitivity(byName policy.Sensitivity, named bool, t colTag, tagged bool, disc policy.Sensitivity, discovered bool) (policy.Sensitivity, bool) {
	switch {
	case named && byName.Source == policy.SourcePolicy:
		return byName, true
	case tagged:
		return t.sens, t.pii
	case named:
		return byName, true
	case discovered:
		return disc, true
	}
	return policy.Sensitivity{}, false
}
