// Package dashboards holds Vigil's Grafana dashboards (the JSON files beside this file,
// embedded so the binary can ship them) and reads back the ClickHouse SQL of their panels
// with Grafana's macros expanded, so that tests run every panel query against a real
// ClickHouse of each supported version.
package dashboards

import (
	"embed"
	"encoding/json"
	"fmt"
	"io/fs"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Files are the dashboard JSON files.
//
//go:embed *.json
var Files embed.FS

// ClickHouseDatasource is the type of the Grafana ClickHouse plugin's data source.
const ClickHouseDatasource = "grafana-clickhouse-datasource"

// PanelQuery is one query of one panel.
type PanelQuery struct {
	Dashboard, Panel string
	Datasource       string // the data source type
	Query            string // rawSql for ClickHouse, expr for Prometheus
}

type dashboard struct {
	Title  string `json:"title"`
	Panels []struct {
		Title   string `json:"title"`
		Targets []struct {
			Datasource struct {
				Type string `json:"type"`
			} `json:"datasource"`
			RawSQL string `json:"rawSql"`
			Expr   string `json:"expr"`
		} `json:"targets"`
	} `json:"panels"`
}

// Queries returns every panel query of every dashboard.
func Queries() ([]PanelQuery, error) {
	paths, err := fs.Glob(Files, "*.json")
	if err != nil {
		return nil, err
	}
	var out []PanelQuery
	for _, p := range paths {
		b, err := Files.ReadFile(p)
		if err != nil {
			return nil, err
		}
		var d dashboard
		if err := json.Unmarshal(b, &d); err != nil {
			return nil, fmt.Errorf("dashboard %s: %w", p, err)
		}
		for _, pn := range d.Panels {
			for _, t := range pn.Targets {
				q := t.RawSQL
				if t.Datasource.Type != ClickHouseDatasource {
					q = t.Expr
				}
				out = append(out, PanelQuery{Dashboard: d.Title, Panel: pn.Title, Datasource: t.Datasource.Type, Query: q})
			}
		}
	}
	return out, nil
}

var timeFilterRe = regexp.MustCompile(`\$__timeFilter\(([a-z_]+)\)`)

// Expand replaces the ClickHouse plugin's macros with the SQL they stand for over the
// range from..to at the given interval, as the plugin does before it sends a query.
func Expand(sql string, from, to time.Time, interval time.Duration) string {
	f, t := strconv.FormatInt(from.Unix(), 10), strconv.FormatInt(to.Unix(), 10)
	sql = timeFilterRe.ReplaceAllString(sql, "$1 >= toDateTime("+f+", 'UTC') AND $1 <= toDateTime("+t+", 'UTC')")
	return strings.NewReplacer(
		"$__fromTime", "toDateTime("+f+", 'UTC')",
		"$__toTime", "toDateTime("+t+", 'UTC')",
		"$__interval_s", strconv.Itoa(max(int(interval.Seconds()), 1)),
	).Replace(sql)
}
