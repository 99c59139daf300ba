package sqlparse

import (
	"strings"
	"testing"
)

func TestRedactSecrets(t *testing.T) {
	for _, tc := range []struct {
		sql    string
		secret string // must not survive; "" means the text is kept as is
	}{
		{"CREATE ROLE app LOGIN PASSWORD 's3cret'", "s3cret"},
		{"ALTER USER app WITH PASSWORD 'n3w-pw'", "n3w-pw"},
		{"create user mapping for app server remote options (user 'u', password 'mapping-pw')", "mapping-pw"},
		{"SELECT dblink_connect('host=x password=dblink-pw')", "dblink-pw"},
		{"CREATE ROLE app PASSWORD 'broken-pw' LOGIN WITH WITH", "broken-pw"},
		{"SELECT * FROM users WHERE password = 'not-a-secret-statement'", ""},
		{"UPDATE t SET a = 'x' WHERE id = 1", ""},
	} {
		got := RedactSecrets(tc.sql)
		if tc.secret == "" {
			if got != tc.sql {
				t.Errorf("RedactSecrets(%q) = %q, want it unchanged", tc.sql, got)
			}
			continue
		}
		if strings.Contains(got, tc.secret) {
			t.Errorf("RedactSecrets(%q) = %q: the secret survives", tc.sql, got)
		}
	}
}
