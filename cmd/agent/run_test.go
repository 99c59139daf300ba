package main

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// TestRunConfigStore: the store follows --state-dir unless the file or --store name one.
func TestRunConfigStore(t *testing.T) {
	dir := t.TempDir()
	n := 0
	file := func(body string) string {
		n++
		p := filepath.Join(dir, fmt.Sprintf("vigil-%d.yaml", n))
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"defaults", nil, "local:/var/lib/vigil/events"},
		{"state dir", []string{"--state-dir", "/s"}, "local:/s/events"},
		{"file without a store, state dir flag", []string{"--config", file("log:\n  level: warn\n"), "--state-dir", "/s"}, "local:/s/events"},
		{"file with a store", []string{"--config", file("store: local:/elsewhere\n"), "--state-dir", "/s"}, "local:/elsewhere"},
		{"file with a state dir", []string{"--config", file("state_dir: /f\n")}, "local:/f/events"},
		{"store flag wins", []string{"--config", file("store: local:/elsewhere\n"), "--store", "local:/flag"}, "local:/flag"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd, fl := runCommand()
			if err := cmd.ParseFlags(tc.args); err != nil {
				t.Fatal(err)
			}
			cfg, err := loadRunConfig(cmd, fl)
			if err != nil {
				t.Fatal(err)
			}
			if cfg.Store != tc.want {
				t.Errorf("store %q, want %q", cfg.Store, tc.want)
			}
		})
	}
}
