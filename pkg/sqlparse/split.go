package sqlparse

import (
	"strings"

	pg_query "github.com/pganalyze/pg_query_go/v6"
)

// SplitPostgres splits a simple-query message into its statements the way the server's
// scanner does (quotes, dollar quotes and comments respected), so that the i-th
// CommandComplete of a multi-statement Query can be paired with the i-th statement. Text
// the scanner rejects comes back whole as one statement: the caller still records it, and
// classification then marks it unparseable (high risk).
func SplitPostgres(sql string) []string {
	parts, err := pg_query.SplitWithScanner(sql, true)
	if err != nil || len(parts) == 0 {
		return []string{sql}
	}
	out := parts[:0]
	for _, p := range parts {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	if len(out) == 0 {
		return []string{sql}
	}
	return out
}
