package clickhouse

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the rendered schema files under deploy/clickhouse")

// The schema files in deploy/clickhouse (for DBAs who apply DDL by hand) are what the
// migrations run; this keeps them in step. go test -run TestRenderedSchemaFiles -update
// rewrites them.
func TestRenderedSchemaFiles(t *testing.T) {
	files := []struct {
		name   string
		layout Layout
	}{
		{"schema-18.16.sql", Layout{Database: "vigil", RetentionDays: 365, Features: Legacy}},
		{"schema-current.sql", Layout{Database: "vigil", RetentionDays: 365, Features: Modern}},
		{"schema-current-cluster.sql", Layout{Database: "vigil", Cluster: "vigil", RetentionDays: 365, Features: Modern}},
	}
	for _, f := range files {
		stmts, err := Render(f.layout)
		if err != nil {
			t.Fatal(err)
		}
		got := "-- Rendered by pkg/store/clickhouse (go test -run TestRenderedSchemaFiles -update); do not edit.\n" +
			"-- Vigil applies this itself at start-up and with `vigil store migrate`. Retention here: 365 days.\n\n" +
			strings.Join(stmts, ";\n\n") + ";\n"
		path := filepath.Join("..", "..", "..", "deploy", "clickhouse", f.name)
		if *update {
			if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		want, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if string(want) != got {
			t.Errorf("%s is stale: run go test ./pkg/store/clickhouse -run TestRenderedSchemaFiles -update", path)
		}
	}
}

func TestLayoutValidate(t *testing.T) {
	tests := []struct {
		l    Layout
		want string
	}{
		{Layout{Database: "vigil"}, ""},
		{Layout{Database: "vigil; DROP TABLE x"}, "database name"},
		{Layout{Database: "vigil", Cluster: "a-b"}, "cluster name"},
		{Layout{Database: "vigil", RetentionDays: -1}, "retention"},
	}
	for _, tc := range tests {
		err := tc.l.validate()
		if (err == nil) != (tc.want == "") || err != nil && !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want %q", tc.l, err, tc.want)
		}
	}
}

func TestParseURL(t *testing.T) {
	tests := []struct {
		url  string
		want Config
		err  string
	}{
		{"clickhouse://ch:9000/vigil", Config{Addr: []string{"ch:9000"}, Database: "vigil", Username: "default"}, ""},
		{"clickhouse://w:s3cret@a,b:9001/vigil?cluster=prod&retention_days=90&secure=true",
			Config{Addr: []string{"a:9440", "b:9001"}, Database: "vigil", Username: "w", Password: "s3cret", Cluster: "prod", RetentionDays: 90, Secure: true}, ""},
		{"clickhouse://ch/", Config{}, "no database"},
		{"http://ch/vigil", Config{}, "scheme"},
		{"clickhouse://ch/vigil?retention=9", Config{}, "unknown parameter"},
	}
	for _, tc := range tests {
		got, err := ParseURL(tc.url)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%s: %v, want %q", tc.url, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%s: %v", tc.url, err)
		}
		got.DialTimeout = 0
		if strings.Join(got.Addr, ",") != strings.Join(tc.want.Addr, ",") || got.Database != tc.want.Database || got.Username != tc.want.Username ||
			got.Password != tc.want.Password || got.Cluster != tc.want.Cluster || got.RetentionDays != tc.want.RetentionDays || got.Secure != tc.want.Secure {
			t.Errorf("%s: %+v, want %+v", tc.url, got, tc.want)
		}
	}
}

func TestDetect(t *testing.T) {
	fam := func(n ...string) map[string]bool {
		m := map[string]bool{}
		for _, x := range n {
			m[x] = true
		}
		return m
	}
	tests := []struct {
		name     string
		families map[string]bool
		settings map[string]string
		mts      map[string]bool
		want     Features
	}{
		{"18.16", fam("DateTime", "LowCardinality"), map[string]string{"allow_experimental_low_cardinality_type": "0", "insert_distributed_sync": "0"}, fam(),
			Features{DistributedSyncSetting: "insert_distributed_sync"}},
		{"19.x with flags on", fam("LowCardinality"), map[string]string{"allow_experimental_low_cardinality_type": "1", "allow_experimental_data_skipping_indices": "1"}, fam("merge_with_ttl_timeout"),
			Features{LowCardinality: true, TTL: true, SkipIndexes: true}},
		{"current", fam("DateTime64", "LowCardinality"), map[string]string{"allow_suspicious_codecs": "0", "distributed_foreground_insert": "0"}, fam("merge_with_ttl_timeout", "non_replicated_deduplication_window"),
			Features{DateTime64: true, LowCardinality: true, Codecs: true, TTL: true, SkipIndexes: true, NonReplicatedDedup: true, DistributedSyncSetting: "distributed_foreground_insert"}},
	}
	for _, tc := range tests {
		if got := detect("", tc.families, tc.settings, tc.mts); got != tc.want {
			t.Errorf("%s: %+v, want %+v", tc.name, got, tc.want)
		}
	}
}
