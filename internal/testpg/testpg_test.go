package testpg

import "testing"

func TestStart(t *testing.T) {
	s := Start(t)
	out, err := s.Psql("postgres", "SELECT current_setting('ssl')")
	if err != nil {
		t.Fatal(err)
	}
	if out != "on" {
		t.Fatalf("ssl = %q, want on", out)
	}
}
