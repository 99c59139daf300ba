package testch

import (
	"strings"
	"testing"
)

func TestKillRestartKeepsData(t *testing.T) {
	s := Start(t)
	steps := []struct{ sql, want string }{
		{"SELECT version()", "18.16"},
		{"CREATE TABLE default.t (x UInt8) ENGINE = MergeTree() ORDER BY x", ""},
		{"INSERT INTO default.t (x) VALUES (7)", ""},
	}
	for _, st := range steps {
		out, err := s.Query(st.sql)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(out, st.want) {
			t.Fatalf("%s = %q, want prefix %q", st.sql, out, st.want)
		}
	}
	s.Kill()
	if _, err := s.Query("SELECT 1"); err == nil {
		t.Fatal("killed server still answers")
	}
	if err := s.Restart(); err != nil {
		t.Fatal(err)
	}
	if out, err := s.Query("SELECT sum(x) FROM default.t"); err != nil || out != "7" {
		t.Fatalf("after restart: %q %v", out, err)
	}
}
