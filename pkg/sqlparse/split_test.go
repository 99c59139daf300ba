package sqlparse

import (
	"reflect"
	"testing"
)

func TestSplitPostgres(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
	}{
		{"select 1", []string{"select 1"}},
		{"select 1; select 2;", []string{"select 1", "select 2"}},
		{"select ';'; select $$a;b$$", []string{"select ';'", "select $$a;b$$"}},
		{"select 1 -- c;\n; select 2", []string{"select 1 -- c;", "select 2"}},
	} {
		if got := SplitPostgres(tc.in); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("SplitPostgres(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
