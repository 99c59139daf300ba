package forensics

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"regexp"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/vigil-db/vigil/pkg/event"
	"github.com/vigil-db/vigil/pkg/store"
)

// Some queries also run on the local store (an agent without ClickHouse, or its spool):
// the same parameters and output columns as their SQL, computed by reading the events.
var localQueries = map[string]func(ctx context.Context, r store.Reader, params map[string]any) ([]string, [][]any, error){
	"raw-pii-receivers": rawPIIReceivers,
}

// RunsLocally reports whether the named query also runs on the local store.
func RunsLocally(name string) bool { _, ok := localQueries[name]; return ok }

// RunLocal runs the named query over the events of r (the local store), with the same
// parameters and output as Run on ClickHouse.
func RunLocal(ctx context.Context, r store.Reader, name string, params map[string]string, w io.Writer, format string) error {
	q, ok := Get(name)
	if !ok {
		return fmt.Errorf("no forensic query %q (vigil forensics lists them)", name)
	}
	run, ok := localQueries[name]
	if !ok {
		return fmt.Errorf("forensic query %s runs on ClickHouse only (--store clickhouse://…)", name)
	}
	if format != FormatTable && format != FormatJSON {
		return fmt.Errorf("output format %q: use %s or %s", format, FormatTable, FormatJSON)
	}
	_, args, err := q.Bind(params, time.Now())
	if err != nil {
		return err
	}
	// Bind gives the values in placeholder order; the local queries take them by name.
	values := map[string]any{}
	i := 0
	for _, m := range placeholderRe.FindAllStringSubmatch(q.SQL, -1) {
		values[m[1]] = args[i]
		i++
	}
	cols, rows, err := run(ctx, r, values)
	if err != nil {
		return fmt.Errorf("forensic query %s: %w", name, err)
	}
	var out rowWriter = newTableWriter(w, cols)
	if format == FormatJSON {
		out = &jsonWriter{enc: json.NewEncoder(w), cols: cols}
	}
	for _, row := range rows {
		for i, v := range row {
			row[i] = plain(v)
		}
		if err := out.row(row); err != nil {
			return err
		}
	}
	return out.flush()
}

// likeRegexp turns a SQL LIKE pattern (% and _) into a case-insensitive regexp.
func likeRegexp(pattern string) *regexp.Regexp {
	var b strings.Builder
	b.WriteString("(?is)^")
	for _, r := range pattern {
		switch r {
		case '%':
			b.WriteString(".*")
		case '_':
			b.WriteString(".")
		default:
			b.WriteString(regexp.QuoteMeta(string(r)))
		}
	}
	b.WriteString("$")
	return regexp.MustCompile(b.String())
}

// rawPIIReceivers is raw-pii-receivers.sql over the local store.
func rawPIIReceivers(ctx context.Context, r store.Reader, p map[string]any) ([]string, [][]any, error) {
	since := time.Unix(int64(p["since"].(uint64)), 0)
	pattern, _ := p["column"].(string)
	limit := int(p["limit"].(uint64))
	var like *regexp.Regexp
	if pattern != "" {
		like = likeRegexp(pattern)
	}
	type key struct{ col, identity, dbUser, database, comm, exe, container, pod, sa string }
	type agg struct {
		statements, rows uint64
		first, last      time.Time
		key              key
	}
	groups := map[key]*agg{}
	err := r.Read(ctx, store.Query{Since: since, Type: event.TypeStatement}, func(e *event.Event) error {
		for _, c := range e.PIIColumns {
			if slices.Contains(e.MaskedColumns, c) || (like != nil && !like.MatchString(c)) {
				continue
			}
			k := key{col: c, dbUser: e.DBUser, database: e.Database}
			if id := e.Identity; id != nil {
				k.identity = id.Email
				if k.identity == "" {
					k.identity = id.Subject
				}
			}
			if pr := e.Process; pr != nil {
				k.comm, k.exe, k.container, k.pod, k.sa = pr.Comm, pr.Exe, pr.ContainerID, pr.Pod, pr.ServiceAccount
			}
			a := groups[k]
			if a == nil {
				a = &agg{key: k, first: e.Time}
				groups[k] = a
			}
			a.statements++
			a.rows += uint64(max(e.Rows, 0))
			if e.Time.Before(a.first) {
				a.first = e.Time
			}
			if e.Time.After(a.last) {
				a.last = e.Time
			}
		}
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	list := make([]*agg, 0, len(groups))
	for _, a := range groups {
		list = append(list, a)
	}
	sort.Slice(list, func(i, j int) bool {
		if list[i].rows != list[j].rows {
			return list[i].rows > list[j].rows
		}
		return list[i].last.After(list[j].last)
	})
	if len(list) > limit {
		list = list[:limit]
	}
	cols := []string{"raw_column", "identity", "db_user", "database", "process_comm", "process_exe", "process_container_id",
		"process_pod", "process_service_account", "statements", "rows", "first_seen", "last_seen"}
	rows := make([][]any, len(list))
	for i, a := range list {
		k := a.key
		// Whole seconds, as the audit table's time column holds them.
		rows[i] = []any{k.col, k.identity, k.dbUser, k.database, k.comm, k.exe, k.container, k.pod, k.sa, a.statements, a.rows,
			a.first.Truncate(time.Second), a.last.Truncate(time.Second)}
	}
	return cols, rows, nil
}
