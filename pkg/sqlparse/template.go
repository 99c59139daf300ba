package sqlparse

import (
	"slices"
	"strings"
	"sync"

	pg "github.com/pganalyze/pg_query_go/v6"
)

// The template cache serves statements that differ only in their literals. Clients of the
// simple query protocol inline their values ("... WHERE aid = 4711"), so almost every text
// is new and the text cache never hits; a parse costs tens of microseconds, a scan of the
// text here well under one.
//
// A text's template is the text with each literal replaced by a marker that names the
// literal's token type (string, int4 or other number). Two texts with the same template give
// PostgreSQL's parser the same token stream apart from literal values, so their parse trees
// differ at most where the grammar uses those values. A classification is served for a new
// text only when it was proven not to depend on them, on the text that filled the entry:
//
//   - the scanner below reads only a conservative subset of PostgreSQL's lexical grammar and
//     gives up (full parse) on anything else: comments, backslashes, dollar quotes, prefixed
//     strings (E'', B'', X'', N'', U&''), adjacent strings, numbers it cannot delimit;
//   - PostgreSQL's own scanner (pg_query's Scan) found exactly the same literals there
//     (checked when the template is met again: a scan costs as much as a parse, and most
//     shapes seen once are never seen again);
//   - every literal became a constant (A_Const) of the parse tree, so the grammar did not
//     turn it into structure (float(24) is a type, ALTER ... COLUMN 3 a column number);
//   - every statement is a SELECT, INSERT, UPDATE, DELETE or MERGE, and the classifier never
//     looked at a constant's value (a tautology check such as WHERE 1 = 1, a set_config
//     name, a flagged function such as pg_read_file, a COPY target, a SET value).
//
// The served Info is the entry's with each statement's Text cut from the new text, so a
// rule that reads statement.text sees the literals that will run. A template that fails a
// check is remembered as such: its texts are parsed every time, as before.

// lit is one literal of a text: its byte span and token type ('S' string, 'I' a number
// that is an int4 constant, 'F' any other number).
type lit struct {
	start, end int
	tok        byte
}

// template is a text's key in the template cache and where its literals are.
type template struct {
	key  string
	lits []lit
}

// templateEntry is a classification that holds for every text of a template, with each
// statement's bounds as positions in the template's literal-free segments; info is nil when
// the template's texts must be classified one by one.
type templateEntry struct {
	info   *Info
	bounds [][2]segPos

	// scanned runs PostgreSQL's scanner over the text the entry was made from, once, on
	// the entry's first use; the entry serves only if it agrees (see sameLiterals).
	scanned sync.Once
	agrees  bool
	sql     string
	lits    []lit
}

// segPos is a position in a text given as segment (the text between literal seg-1 and
// literal seg) and offset in it.
type segPos struct{ seg, off int }

// classifyTemplate classifies a PostgreSQL text that has a template; shared returns a cached
// template's own classification instead of a copy with this text's statements.
func classifyTemplate(sql string, tpl template, shared bool) *Info {
	if e, ok := templateCache.get(ProtocolPostgres, tpl.key); ok {
		if e.info != nil && e.verified() {
			if shared {
				return e.info
			}
			return e.instantiate(sql, tpl)
		}
		info := classifyPostgres(sql, nil, nil)
		defaultCache.put(ProtocolPostgres, sql, info)
		return info
	}
	var consts []int32
	info := classifyPostgres(sql, &consts, nil)
	defaultCache.put(ProtocolPostgres, sql, info)
	templateCache.put(ProtocolPostgres, tpl.key, newTemplateEntry(sql, tpl, info, consts))
	return info
}

// templateKinds are the statements whose classification a template may carry.
var templateKinds = map[string]bool{"SELECT": true, "INSERT": true, "UPDATE": true, "DELETE": true, "MERGE": true}

// newTemplateEntry checks that info, made from sql, holds for every text of its template.
func newTemplateEntry(sql string, tpl template, info *Info, consts []int32) *templateEntry {
	none := &templateEntry{}
	if !info.Parsed || len(info.Statements) == 0 {
		return none
	}
	e := &templateEntry{info: info, bounds: make([][2]segPos, len(info.Statements))}
	for i := range info.Statements {
		st := &info.Statements[i]
		if !templateKinds[st.Command] || st.readsLiteral {
			return none
		}
		var ok1, ok2 bool
		e.bounds[i][0], ok1 = tpl.segPos(sql, st.start)
		e.bounds[i][1], ok2 = tpl.segPos(sql, st.end)
		if !ok1 || !ok2 {
			return none
		}
	}
	slices.Sort(consts)
	for _, l := range tpl.lits {
		if !constantAt(sql, consts, l.start) {
			return none
		}
	}
	e.sql, e.lits = sql, tpl.lits
	return e
}

// verified reports whether PostgreSQL's scanner finds the entry's literals where ours did.
func (e *templateEntry) verified() bool {
	e.scanned.Do(func() {
		e.agrees = sameLiterals(e.sql, e.lits)
		e.sql, e.lits = "", nil
	})
	return e.agrees
}

// constantAt reports whether the literal starting at pos is a constant of the parse tree:
// one located at pos, or a negated one located at the minus sign before it ("- 5").
func constantAt(sql string, consts []int32, pos int) bool {
	if _, ok := slices.BinarySearch(consts, int32(pos)); ok {
		return true
	}
	j := pos - 1
	for j >= 0 && isSpace(sql[j]) {
		j--
	}
	if j < 0 || sql[j] != '-' {
		return false
	}
	_, ok := slices.BinarySearch(consts, int32(j))
	return ok
}

// sameLiterals reports whether PostgreSQL's scanner finds exactly lits in sql.
func sameLiterals(sql string, lits []lit) bool {
	res, err := pg.Scan(sql)
	if err != nil {
		return false
	}
	i := 0
	for _, t := range res.Tokens {
		var tok byte
		switch t.Token {
		case pg.Token_SCONST:
			tok = 'S'
		case pg.Token_ICONST:
			tok = 'I'
		case pg.Token_FCONST:
			tok = 'F'
		case pg.Token_USCONST, pg.Token_BCONST, pg.Token_XCONST:
			return false
		default:
			continue
		}
		if i >= len(lits) || lits[i] != (lit{int(t.Start), int(t.End), tok}) {
			return false
		}
		i++
	}
	return i == len(lits)
}

// segPos locates byte offset p of sql (a statement bound, which never falls inside a
// literal) in the template's segments.
func (t template) segPos(sql string, p int) (segPos, bool) {
	segStart := 0
	for i, l := range t.lits {
		if p >= segStart && p <= l.start {
			return segPos{i, p - segStart}, true
		}
		if p < l.end {
			return segPos{}, false
		}
		segStart = l.end
	}
	if p >= segStart && p <= len(sql) {
		return segPos{len(t.lits), p - segStart}, true
	}
	return segPos{}, false
}

// offset is the byte offset in sql (a text of the template) of a segment position.
func (t template) offset(p segPos) int {
	if p.seg == 0 {
		return p.off
	}
	return t.lits[p.seg-1].end + p.off
}

// instantiate is the entry's classification for sql, a text of its template.
func (e *templateEntry) instantiate(sql string, tpl template) *Info {
	info := *e.info
	info.Statements = slices.Clone(e.info.Statements)
	for i := range info.Statements {
		st := &info.Statements[i]
		st.start, st.end = tpl.offset(e.bounds[i][0]), tpl.offset(e.bounds[i][1])
		st.Text = trimSpace(sql[st.start:st.end])
	}
	return &info
}

// scanTemplate computes a PostgreSQL text's template. ok is false when the text has no
// literals (the text cache serves it alike) or anything this scanner does not read exactly
// as PostgreSQL's does.
func scanTemplate(sql string) (tpl template, ok bool) {
	n := len(sql)
	for i := 0; i < n; {
		c := sql[i]
		switch {
		case c == '\'':
			if i > 0 && (identCont(sql[i-1]) || sql[i-1] == '&') {
				// E'', N'', B'', X'', U&'': escapes, bit strings, Unicode escapes.
				return template{}, false
			}
			j := i + 1
			for {
				k := strings.IndexByte(sql[j:], '\'')
				if k < 0 {
					return template{}, false
				}
				j += k + 1
				if j < n && sql[j] == '\'' {
					j++
					continue
				}
				break
			}
			if strings.IndexByte(sql[i:j], '\\') >= 0 {
				// With standard_conforming_strings off the server reads backslashes as
				// escapes, and the literal would end elsewhere.
				return template{}, false
			}
			k := j
			for k < n && isSpace(sql[k]) {
				k++
			}
			if k < n && sql[k] == '\'' {
				// 'a'<newline>'b' is one literal.
				return template{}, false
			}
			tpl.lits = append(tpl.lits, lit{i, j, 'S'})
			i = j
		case c >= '0' && c <= '9':
			if i > 0 && sql[i-1] == '.' {
				// .5 is one number.
				return template{}, false
			}
			j := skipDigits(sql, i)
			tok := byte('I')
			if !int4(sql[i:j]) {
				tok = 'F'
			}
			if j < n && sql[j] == '.' {
				if j+1 >= n || !isDigit(sql[j+1]) {
					return template{}, false
				}
				j, tok = skipDigits(sql, j+1), 'F'
			}
			if j < n && (sql[j] == 'e' || sql[j] == 'E') {
				k := j + 1
				if k < n && (sql[k] == '+' || sql[k] == '-') {
					k++
				}
				if k >= n || !isDigit(sql[k]) {
					return template{}, false
				}
				j, tok = skipDigits(sql, k), 'F'
			}
			if j < n && (identCont(sql[j]) || sql[j] == '.') {
				// 0x1F, 1_000, 12abc, 1.2.3: other forms, or errors.
				return template{}, false
			}
			tpl.lits = append(tpl.lits, lit{i, j, tok})
			i = j
		case c == '"':
			if i > 0 && sql[i-1] == '&' {
				// U&"..." may be followed by UESCAPE 'x', a literal that changes the name.
				return template{}, false
			}
			j := i + 1
			for {
				k := strings.IndexByte(sql[j:], '"')
				if k < 0 {
					return template{}, false
				}
				j += k + 1
				if j < n && sql[j] == '"' {
					j++
					continue
				}
				break
			}
			i = j
		case c == '$':
			// A parameter ($1); anything else is a dollar quote.
			j := skipDigits(sql, i+1)
			if j == i+1 || (j < n && identCont(sql[j])) {
				return template{}, false
			}
			i = j
		case identCont(c):
			// An identifier or keyword (it cannot start with a digit or '$': those are
			// handled above, and a name's own digits are consumed here).
			for i < n && identCont(sql[i]) {
				i++
			}
		case c == '\\' || c == 0,
			c == '-' && i+1 < n && sql[i+1] == '-',
			c == '/' && i+1 < n && sql[i+1] == '*':
			// Comments and stray bytes: not worth reading exactly.
			return template{}, false
		default:
			i++
		}
	}
	if len(tpl.lits) == 0 {
		return template{}, false
	}
	// The key's exact size: a statement that is mostly one large literal must not cost a
	// second copy of itself.
	size := n
	for _, l := range tpl.lits {
		size += 2 - (l.end - l.start)
	}
	var b strings.Builder
	b.Grow(size)
	last := 0
	for _, l := range tpl.lits {
		// NUL cannot occur in the text (the scan gives up on it), so the key's markers
		// cannot be confused with text.
		b.WriteString(sql[last:l.start])
		b.WriteByte(0)
		b.WriteByte(l.tok)
		last = l.end
	}
	b.WriteString(sql[last:])
	tpl.key = b.String()
	return tpl, true
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// identCont is PostgreSQL's ident_cont: letters, digits, '_', '$' and every non-ASCII byte.
func identCont(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || isDigit(c) || c == '_' || c == '$' || c >= 0x80
}

// isSpace is PostgreSQL's scanner's space.
func isSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'
}

func skipDigits(s string, i int) int {
	for i < len(s) && isDigit(s[i]) {
		i++
	}
	return i
}

// int4 reports whether a string of digits is an int4, which PostgreSQL's scanner makes an
// integer constant (ICONST); larger ones are numeric constants (FCONST).
func int4(digits string) bool {
	v := 0
	for i := 0; i < len(digits); i++ {
		v = v*10 + int(digits[i]-'0')
		if v > 1<<31-1 {
			return false
		}
	}
	return true
}
