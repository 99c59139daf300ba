// Package forensics is Vigil's library of named forensic queries over the ClickHouse audit
// trail: who touched a table, which PII left and how, one user's timeline, dangerous
// statements, approvals, top talkers, new actors, a session's replay, volume anomalies and
// trail integrity. The queries are SQL files embedded in the binary, written to run
// unchanged on ClickHouse 18.16 and current releases (no CTEs, no server-side
// parameters); their parameters are typed, validated and bound by the driver, never
// spliced into the text.
package forensics

import (
	"bufio"
	"embed"
	"fmt"
	"io/fs"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
)

//go:embed queries/*.sql
var files embed.FS

// Param is one parameter of a query.
type Param struct {
	Name string `json:"name"`
	// Type is string, int (a non-negative integer) or since (a duration back from now such
	// as 24h or 7d, or an RFC 3339 time; bound as Unix seconds).
	Type     string `json:"type"`
	Default  string `json:"default,omitempty"`
	Required bool   `json:"required,omitempty"`
	Doc      string `json:"doc"`
}

// Query is one named forensic query.
type Query struct {
	Name        string  `json:"name"`
	Title       string  `json:"title"`
	Description string  `json:"description"`
	Params      []Param `json:"params"`
	// SQL with {param} placeholders.
	SQL string `json:"sql"`
}

var library = mustLoad()

// List returns the queries, sorted by name.
func List() []Query { return append([]Query(nil), library...) }

// Get returns the named query.
func Get(name string) (Query, bool) {
	for _, q := range library {
		if q.Name == name {
			return q, true
		}
	}
	return Query{}, false
}

func mustLoad() []Query {
	qs, err := load(files)
	if err != nil {
		panic(err) // the embedded files are part of the binary: a bad one is a build bug
	}
	return qs
}

// Header lines: "-- title: …", "-- description: …", "-- param: NAME TYPE DEFAULT|required  DOC".
var (
	headerRe      = regexp.MustCompile(`^-- (title|description|param): (.*)$`)
	paramRe       = regexp.MustCompile(`^([a-z_]+) (string|int|since) (required|""|\S+)\s+(.+)$`)
	placeholderRe = regexp.MustCompile(`\{([a-z_]+)\}`)
)

func load(fsys fs.FS) ([]Query, error) {
	paths, err := fs.Glob(fsys, "queries/*.sql")
	if err != nil {
		return nil, err
	}
	var out []Query
	for _, p := range paths {
		b, err := fs.ReadFile(fsys, p)
		if err != nil {
			return nil, err
		}
		q, err := parse(strings.TrimSuffix(p[strings.LastIndex(p, "/")+1:], ".sql"), string(b))
		if err != nil {
			return nil, fmt.Errorf("forensic query %s: %w", p, err)
		}
		out = append(out, q)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

func parse(name, text string) (Query, error) {
	q := Query{Name: name}
	var body []string
	sc := bufio.NewScanner(strings.NewReader(text))
	inHeader := true
	for sc.Scan() {
		line := sc.Text()
		if m := headerRe.FindStringSubmatch(line); inHeader && m != nil {
			switch m[1] {
			case "title":
				q.Title = m[2]
			case "description":
				q.Description = m[2]
			case "param":
				pm := paramRe.FindStringSubmatch(m[2])
				if pm == nil {
					return q, fmt.Errorf("bad param line %q", line)
				}
				p := Param{Name: pm[1], Type: pm[2], Doc: pm[4]}
				switch pm[3] {
				case "required":
					p.Required = true
				case `""`:
				default:
					p.Default = pm[3]
				}
				if !p.Required {
					if _, err := convert(p, p.Default, time.Now()); err != nil {
						return q, fmt.Errorf("param %s: default: %w", p.Name, err)
					}
				}
				q.Params = append(q.Params, p)
			}
			continue
		}
		inHeader = false
		body = append(body, line)
	}
	q.SQL = strings.TrimSpace(strings.Join(body, "\n"))
	if q.Title == "" || q.Description == "" || q.SQL == "" {
		return q, fmt.Errorf("needs a title, a description and SQL")
	}
	if strings.Contains(q.SQL, "?") {
		return q, fmt.Errorf("a literal ? would be taken for a bound parameter")
	}
	used := map[string]bool{}
	for _, m := range placeholderRe.FindAllStringSubmatch(q.SQL, -1) {
		if _, ok := q.param(m[1]); !ok {
			return q, fmt.Errorf("placeholder {%s} is not a declared param", m[1])
		}
		used[m[1]] = true
	}
	for _, p := range q.Params {
		if !used[p.Name] {
			return q, fmt.Errorf("param %s is declared but not used", p.Name)
		}
	}
	return q, nil
}

func (q Query) param(name string) (Param, bool) {
	for _, p := range q.Params {
		if p.Name == name {
			return p, true
		}
	}
	return Param{}, false
}

// Bind checks params against the query's declaration and returns the SQL with a ? for each
// placeholder and the values to bind, in order. now anchors relative times.
func (q Query) Bind(params map[string]string, now time.Time) (string, []any, error) {
	for k := range params {
		if _, ok := q.param(k); !ok {
			var names []string
			for _, p := range q.Params {
				names = append(names, p.Name)
			}
			return "", nil, fmt.Errorf("query %s has no parameter %q (it takes: %s)", q.Name, k, strings.Join(names, ", "))
		}
	}
	values := map[string]any{}
	for _, p := range q.Params {
		raw, ok := params[p.Name]
		if !ok {
			if p.Required {
				return "", nil, fmt.Errorf("query %s needs --param %s=… (%s)", q.Name, p.Name, p.Doc)
			}
			raw = p.Default
		}
		v, err := convert(p, raw, now)
		if err != nil {
			return "", nil, fmt.Errorf("query %s: parameter %s: %w", q.Name, p.Name, err)
		}
		values[p.Name] = v
	}
	var args []any
	sql := placeholderRe.ReplaceAllStringFunc(q.SQL, func(m string) string {
		args = append(args, values[m[1:len(m)-1]])
		return "?"
	})
	return sql, args, nil
}

// convert validates one value and gives it the Go type the driver binds as the right
// ClickHouse literal: a quoted, escaped string or a bare number.
func convert(p Param, raw string, now time.Time) (any, error) {
	switch p.Type {
	case "string":
		return raw, nil
	case "int":
		n, err := strconv.ParseUint(raw, 10, 32)
		if err != nil {
			return nil, fmt.Errorf("%q is not a non-negative integer", raw)
		}
		return n, nil
	case "since":
		t, err := Since(raw, now)
		if err != nil {
			return nil, err
		}
		return uint64(max(t.Unix(), 0)), nil
	}
	return nil, fmt.Errorf("unknown parameter type %q", p.Type)
}

// Since reads a point in time: a duration back from now (90m, 24h, 7d, 2w) or an RFC 3339
// time.
func Since(raw string, now time.Time) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339Nano, raw); err == nil {
		return t, nil
	}
	unit := time.Duration(0)
	switch {
	case strings.HasSuffix(raw, "d"):
		unit = 24 * time.Hour
	case strings.HasSuffix(raw, "w"):
		unit = 7 * 24 * time.Hour
	}
	if unit != 0 {
		n, err := strconv.ParseUint(raw[:len(raw)-1], 10, 16)
		if err != nil {
			return time.Time{}, fmt.Errorf("%q is neither a duration (24h, 7d) nor an RFC 3339 time", raw)
		}
		return now.Add(-time.Duration(n) * unit), nil
	}
	d, err := time.ParseDuration(raw)
	if err != nil || d < 0 {
		return time.Time{}, fmt.Errorf("%q is neither a duration (24h, 7d) nor an RFC 3339 time", raw)
	}
	return now.Add(-d), nil
}
