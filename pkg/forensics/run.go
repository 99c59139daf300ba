package forensics

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"reflect"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

// Output formats for Run.
const (
	FormatTable = "table" // aligned columns for people
	FormatJSON  = "json"  // one JSON object per row (JSON lines)
)

// Run runs the named query on conn (whose default database holds the audit tables) with
// params and writes the rows to w in format.
func Run(ctx context.Context, conn driver.Conn, name string, params map[string]string, w io.Writer, format string) error {
	q, ok := Get(name)
	if !ok {
		return fmt.Errorf("no forensic query %q (vigil forensics lists them)", name)
	}
	if format != FormatTable && format != FormatJSON {
		return fmt.Errorf("output format %q: use %s or %s", format, FormatTable, FormatJSON)
	}
	sql, args, err := q.Bind(params, time.Now())
	if err != nil {
		return err
	}
	rows, err := conn.Query(ctx, sql, args...)
	if err != nil {
		return fmt.Errorf("forensic query %s: %w", name, err)
	}
	defer rows.Close()
	cols := rows.Columns()
	types := rows.ColumnTypes()
	dest := make([]any, len(cols))
	for i, ct := range types {
		dest[i] = reflect.New(ct.ScanType()).Interface()
	}
	var out rowWriter
	if format == FormatJSON {
		out = &jsonWriter{enc: json.NewEncoder(w), cols: cols}
	} else {
		out = newTableWriter(w, cols)
	}
	for rows.Next() {
		if err := rows.Scan(dest...); err != nil {
			return fmt.Errorf("forensic query %s: reading a row: %w", name, err)
		}
		vals := make([]any, len(dest))
		for i, d := range dest {
			vals[i] = plain(reflect.ValueOf(d).Elem().Interface())
		}
		if err := out.row(vals); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("forensic query %s: %w", name, err)
	}
	return out.flush()
}

// plain turns driver values into what both outputs print well: times in UTC RFC 3339.
func plain(v any) any {
	switch x := v.(type) {
	case time.Time:
		return x.UTC().Format(time.RFC3339Nano)
	case *time.Time:
		if x == nil {
			return nil
		}
		return x.UTC().Format(time.RFC3339Nano)
	}
	return v
}

type rowWriter interface {
	row(vals []any) error
	flush() error
}

type jsonWriter struct {
	enc  *json.Encoder
	cols []string
}

func (j *jsonWriter) row(vals []any) error {
	// An ordered object: the columns in the query's order.
	var b strings.Builder
	b.WriteByte('{')
	for i, c := range j.cols {
		if i > 0 {
			b.WriteByte(',')
		}
		k, _ := json.Marshal(c)
		v, err := json.Marshal(vals[i])
		if err != nil {
			return fmt.Errorf("encoding column %s: %w", c, err)
		}
		b.Write(k)
		b.WriteByte(':')
		b.Write(v)
	}
	b.WriteByte('}')
	return j.enc.Encode(json.RawMessage(b.String()))
}

func (j *jsonWriter) flush() error { return nil }

type tableWriter struct {
	tw *tabwriter.Writer
	n  int
}

func newTableWriter(w io.Writer, cols []string) *tableWriter {
	t := &tableWriter{tw: tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)}
	fmt.Fprintln(t.tw, strings.Join(cols, "\t"))
	return t
}

func (t *tableWriter) row(vals []any) error {
	cells := make([]string, len(vals))
	for i, v := range vals {
		s := ""
		switch x := v.(type) {
		case []string:
			s = strings.Join(x, ",")
		case nil:
		default:
			s = fmt.Sprint(x)
		}
		// One line per row: tabs and newlines inside statements would break the columns.
		cells[i] = strings.NewReplacer("\t", " ", "\n", " ", "\r", " ").Replace(s)
	}
	t.n++
	_, err := fmt.Fprintln(t.tw, strings.Join(cells, "\t"))
	return err
}

func (t *tableWriter) flush() error {
	if t.n == 0 {
		fmt.Fprintln(t.tw, "(no rows)")
	}
	return t.tw.Flush()
}
