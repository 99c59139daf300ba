package postgres

import (
	"strings"
	"unicode/utf8"

	"github.com/vigil-db/vigil/pkg/sqlparse"
)

// splitQuery splits a simple Query into statements exactly as sqlparse.SplitPostgres does,
// without its cgo call for the common single statement: text with no semicolon but perhaps
// one at the end, and nothing that could hide a semicolon (quotes, comments, dollar
// quoting), is one statement. That check is a byte scan, against several microseconds per
// Query for the scanner: too much on the capture path, where most Queries are one statement.
// It returns nil for a single statement, which is then text trimmed of surrounding space
// and its final semicolon.
func splitQuery(text string) (single string, parts []string) {
	semi := -1
	for i := 0; i < len(text); i++ {
		switch text[i] {
		case '\'', '"', '$', '-', '/':
			return split(text)
		case ';':
			if semi >= 0 {
				return split(text)
			}
			semi = i
		}
	}
	t := text
	if semi >= 0 {
		if strings.TrimSpace(text[semi+1:]) != "" {
			return split(text)
		}
		t = text[:semi]
	}
	t = strings.TrimSpace(t)
	if t == "" {
		return split(text)
	}
	return t, nil
}

func split(text string) (string, []string) {
	parts := keepDropped(text, sqlparse.SplitPostgres(text))
	if len(parts) == 1 {
		return parts[0], nil
	}
	return "", parts
}

// keepDropped puts back statements the splitter left out. pg_query's scanner split drops a
// statement that does not start with a keyword ("SELECT 1; SELEC 2" comes back as just
// "SELECT 1"), yet the server still answers it (with a syntax error); losing it would both
// hide what was sent and misalign the pairing. Text between the returned parts that is more
// than spaces, semicolons and comments becomes a statement of its own.
func keepDropped(text string, parts []string) []string {
	var out []string
	dropped := false
	from := 0
	for _, p := range parts {
		k := strings.Index(text[from:], p)
		if k < 0 {
			return parts // not substrings of text: nothing to check against
		}
		gap := text[from : from+k]
		dropped = dropped || hasStatement(gap)
		out = append(appendStatements(out, gap), p)
		from += k + len(p)
	}
	if !dropped && !hasStatement(text[from:]) {
		return parts
	}
	return appendStatements(out, text[from:])
}

func hasStatement(gap string) bool {
	return strings.TrimSpace(strings.ReplaceAll(stripComments(gap), ";", " ")) != ""
}

func appendStatements(out []string, gap string) []string {
	for _, st := range strings.Split(gap, ";") {
		if strings.TrimSpace(stripComments(st)) != "" {
			out = append(out, strings.TrimSpace(st))
		}
	}
	return out
}

// stripComments removes -- and /* */ comments (text between statements has no quotes).
func stripComments(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		switch {
		case strings.HasPrefix(s[i:], "--"):
			j := strings.IndexByte(s[i:], '\n')
			if j < 0 {
				return b.String()
			}
			i += j
		case strings.HasPrefix(s[i:], "/*"):
			j := strings.Index(s[i+2:], "*/")
			if j < 0 {
				return b.String()
			}
			i += j + 3
		default:
			b.WriteByte(s[i])
		}
	}
	return b.String()
}

// cut returns text cut to at most max bytes on a UTF-8 boundary, and whether it was cut.
func cut(text []byte, max int) ([]byte, bool) {
	if len(text) <= max {
		return text, false
	}
	text = text[:max]
	// Back up to the start of the last character and drop it if the cut went through it,
	// so that valid UTF-8 stays valid.
	i := len(text) - 1
	for j := 0; j < utf8.UTFMax-1 && i > 0 && !utf8.RuneStart(text[i]); j++ {
		i--
	}
	if i >= 0 && !utf8.FullRune(text[i:]) {
		text = text[:i]
	}
	return text, true
}
