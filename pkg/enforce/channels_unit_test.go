package enforce

import "testing"

func TestChannelRefusal(t *testing.T) {
	for _, tc := range []struct {
		sql     string
		refused bool
	}{
		{"SELECT set_config('application_name', email, false) FROM customers", true},
		{"SELECT set_config('my.x', (SELECT ssn FROM customers LIMIT 1), false)", true},
		{"SELECT PG_CATALOG.SET_CONFIG('application_name', upper(full_name), false) FROM customers", true},
		{"SELECT set_config('application_name', leak(1), false)", true},
		{"SELECT pg_notify('ch', email) FROM customers", true},
		{"SELECT pg_notify('ch', row_to_json(c)::text) FROM customers c", true},
		{"SELECT 1 FROM customers WHERE pg_notify('ch', email) IS NULL", true},
		{"SELECT set_config('application_name', 'report', false)", false},
		{"SELECT set_config('application_name', $1, false)", false},
		{"SELECT set_config('search_path', current_setting('search_path') || ',extra', false)", false},
		{"SELECT pg_notify('ch', 'job ' || 42::text)", false},
		{"SELECT pg_notify(email, 'x') FROM customers", false}, // a listener must already know the channel's name
		{"SELECT email FROM customers", false},
		{"SELECT 'set_config(' || email FROM customers", false},
	} {
		_, refused := channelRefusal(tc.sql)
		if refused != tc.refused {
			t.Errorf("channelRefusal(%q) = %v, want %v", tc.sql, refused, tc.refused)
		}
	}
}
