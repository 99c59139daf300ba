package sqlparse

import (
	"strings"

	pg_query "github.com/pganalyze/pg_query_go/v6"
)

// SplitPostgres splits a simple-query message into the statements the server sees, in
// order, so that the i-th CommandComplete of a multi-statement Query can be paired with
// the i-th statement. Statements end at semicolons outside quotes, dollar quotes, comments
// and BEGIN ATOMIC function bodies, as the server's scanner finds them; a statement that
// does not parse is kept (the server answers it with a syntax error, and an auditor must
// see what was sent). Statements come back trimmed of surrounding space and of their
// semicolon; empty ones (nothing but space and comments) are left out, as the server runs
// nothing for them. Text with no statement at all, and text the scanner rejects (an
// unterminated quote or comment: the server rejects the whole message), come back whole,
// trimmed, as one statement, which classification then marks unparseable.
func SplitPostgres(sql string) []string {
	if single, ok := splitFast(sql); ok {
		return []string{single}
	}
	return splitScan(sql)
}

// splitScan splits with the scanner's tokens.
func splitScan(sql string) []string {
	res, err := pg_query.Scan(sql)
	if err != nil {
		return []string{trimSpace(sql)}
	}
	var out []string
	from := 0        // where the current statement starts
	content := false // the current statement has a token other than a comment
	depth := 0       // nesting of BEGIN ATOMIC bodies and the CASE ... END inside them
	toks := res.Tokens
	for i, t := range toks {
		switch t.Token {
		case pg_query.Token_SQL_COMMENT, pg_query.Token_C_COMMENT:
			continue
		case pg_query.Token_ASCII_59:
			if depth == 0 {
				if content {
					out = append(out, trimSpace(sql[from:t.Start]))
				}
				from, content = int(t.End), false
				continue
			}
		case pg_query.Token_BEGIN_P:
			// The statements of a function body given as BEGIN ATOMIC ... END are part of
			// the CREATE FUNCTION: their semicolons end nothing at the top level.
			if i+1 < len(toks) && toks[i+1].Token == pg_query.Token_ATOMIC {
				depth++
			}
		case pg_query.Token_CASE:
			if depth > 0 {
				depth++
			}
		case pg_query.Token_END_P:
			if depth > 0 {
				depth--
			}
		}
		content = true
	}
	if content {
		out = append(out, trimSpace(sql[from:]))
	}
	if len(out) == 0 {
		return []string{trimSpace(sql)}
	}
	return out
}

// splitFast splits without the scanner (a cgo call of several microseconds, too much for
// the capture path, where most Queries are one statement) when the answer cannot depend on
// it: text with no semicolon is at most one statement; text whose only semicolon ends it
// is one statement when nothing before could put that semicolon in a quote or comment.
func splitFast(sql string) (string, bool) {
	semi := strings.IndexByte(sql, ';')
	if semi < 0 {
		return trimSpace(sql), true
	}
	// A ';' can hide only inside quotes, dollar quotes, identifiers and comments: with none
	// of those before it, it ends the statement. (Minus and slash alone are operators —
	// pgbench's "abalance + -123" must not cost a scan; only "--" and "/*" open comments.)
	head := sql[:semi]
	if trimSpace(sql[semi+1:]) != "" || strings.ContainsAny(head, `'"$`) ||
		strings.Contains(head, "--") || strings.Contains(head, "/*") {
		return "", false
	}
	t := trimSpace(head)
	return t, t != ""
}

// trimSpace trims the space of PostgreSQL's scanner (isSpace) off both ends of s.
// strings.TrimSpace also trims Unicode spaces (U+00A0, U+2028, U+2029, ...), which the
// scanner reads as identifier characters: "SELECT 1 AS x\u00a0" would be recorded as
// another statement than the one that ran, and "0;\u2029" as a statement with no text.
func trimSpace(s string) string {
	i, j := 0, len(s)
	for i < j && isSpace(s[i]) {
		i++
	}
	for j > i && isSpace(s[j-1]) {
		j--
	}
	return s[i:j]
}
