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
		{"SELECT U&\"dblink\005fconnect\"('host=x password=escaped-pw')", "escaped-pw"},
		{"CrEaTe SuBsCrIpTiOn s CONNECTION 'host=x password=sub-pw' PUBLICATION p", "sub-pw"},
		{"ALTER SERVER remote OPTIONS (SET password 'srv-pw')", "srv-pw"},
	} {
		got := RedactSecrets(tc.sql)
		// Sources that classified a text let the trail skip redaction when its
		// classification says no credential can be in it: that must never skip one.
		for _, info := range []*Info{Classify(ProtocolPostgres, tc.sql), ClassifyShape(ProtocolPostgres, tc.sql)} {
			if got != tc.sql && !info.MayCarryCredentials() {
				t.Errorf("%q is redacted, but its classification says it carries no credential", tc.sql)
			}
		}
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

// TestSecretWordsCoverFlags: every statement classified as possibly carrying a credential
// contains one of the words RedactSecrets pre-checks, or it would be stored unredacted.
func TestSecretWordsCoverFlags(t *testing.T) {
	texts := []string{
		"GRANT admin TO bob", "REVOKE admin FROM bob", "REASSIGN OWNED BY a TO b", "DROP OWNED BY a",
		"ALTER GROUP g ADD USER u", "ALTER ROLE a RENAME TO b", "ALTER USER a SET work_mem = '1MB'",
		"IMPORT FOREIGN SCHEMA s FROM SERVER x INTO t", "CREATE FOREIGN DATA WRAPPER w",
		"SELECT dblink_exec('x', 'DROP TABLE t')", "select public.DBLINK('x','y')",
		"CREATE SUBSCRIPTION s CONNECTION 'x' PUBLICATION p", "CREATE USER MAPPING FOR u SERVER s",
		"SELECT U&\"\0064blink_connect\"('password=x')",
	}
	for _, tc := range corpus {
		texts = append(texts, tc.sql)
	}
	for _, sql := range texts {
		info := Classify(ProtocolPostgres, sql)
		if info.Flags&secretFlags != 0 && !containsAnyFold(sql, secretFirst) {
			t.Errorf("%q: flags [%s] but no secret word", sql, info.Flags)
		}
	}
}

func BenchmarkRedactSecretsOrdinary(b *testing.B) {
	sql := "SELECT abalance FROM pgbench_accounts WHERE aid = 4242;"
	for b.Loop() {
		_ = RedactSecrets(sql)
	}
}
