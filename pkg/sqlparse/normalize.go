package sqlparse

import (
	"strconv"
	"strings"

	pg "github.com/pganalyze/pg_query_go/v6"
)

// redactedUnreadable replaces a statement whose literals cannot be located.
const redactedUnreadable = "/* vigil: statement redacted, literals could not be located */"

// NormalizePostgres replaces the literals of sql with $1, $2, ... (pg_query's Normalize) so
// that a statement can be stored without the values it carried. Text the grammar rejects is
// normalized token by token with PostgreSQL's scanner; text even the scanner rejects (an
// unterminated quote) is replaced entirely, because its literals cannot be told apart.
func NormalizePostgres(sql string) string {
	if out, err := pg.Normalize(sql); err == nil {
		return out
	}
	return replaceConstants(sql)
}

// replaceConstants replaces every constant token PostgreSQL's scanner finds with $1, $2, ...
// It is stricter than pg_query's Normalize, which leaves some constants of utility
// statements in place (the values of ALTER SERVER … OPTIONS (SET …)); text the scanner
// rejects is replaced entirely.
func replaceConstants(sql string) string {
	res, err := pg.Scan(sql)
	if err != nil {
		return redactedUnreadable
	}
	var b strings.Builder
	last, n := 0, 0
	for _, t := range res.Tokens {
		switch t.Token {
		case pg.Token_SCONST, pg.Token_USCONST, pg.Token_ICONST, pg.Token_FCONST,
			pg.Token_BCONST, pg.Token_XCONST:
		default:
			continue
		}
		start, end := int(t.Start), int(t.End)
		if start < last || end > len(sql) {
			return redactedUnreadable
		}
		n++
		b.WriteString(sql[last:start])
		b.WriteString("$" + strconv.Itoa(n))
		last = end
	}
	b.WriteString(sql[last:])
	return b.String()
}
