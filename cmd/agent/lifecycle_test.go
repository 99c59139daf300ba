package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vigil-db/vigil/internal/testpg"
)

// TestStartupFailuresCloseWhatTheyOpened: whichever start-up step fails, `vigil run`
// returns its error having closed what it opened: the store (whose directory lock a leak
// would keep, so the next run on it fails) and the trail, flushed (verify passes).
func TestStartupFailuresCloseWhatTheyOpened(t *testing.T) {
	srv := testpg.Start(t)
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	dir := t.TempDir()
	goodProxy := func() string {
		p, err := testpg.FreePort()
		if err != nil {
			t.Fatal(err)
		}
		return fmt.Sprintf("127.0.0.1:%d=%s", p, srv.Addr())
	}
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"policy file missing", []string{"--proxy", goodProxy(), "--policy", filepath.Join(dir, "no-such-policy.yaml")}, "no-such-policy.yaml"},
		{"metrics file unwritable", []string{"--proxy", goodProxy(), "--metrics-file", filepath.Join(dir, "no-such-dir", "addr")}, "--metrics-file"},
		{"proxy port taken", []string{"--proxy", fmt.Sprintf("%s=%s", taken.Addr(), srv.Addr())}, "listening on"},
		{"nothing to do", []string{}, "nothing to do"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			state, store := filepath.Join(dir, "state-"+strings.ReplaceAll(tc.name, " ", "-")), ""
			store = "local:" + state + "-events"
			base := []string{"--no-capture", "--state-dir", state, "--store", store, "--metrics", "127.0.0.1:0", "--log-level", "error"}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			out, err := vigil(t, ctx, append(append([]string{"run"}, base...), tc.args...)...)
			if err == nil || !strings.Contains(err.Error()+out, tc.want) {
				t.Fatalf("vigil run: %v\n%s\nwant an error naming %q", err, out, tc.want)
			}
			// The same state and store again, this time good: it starts, so nothing of the
			// failed run holds them.
			px := goodProxy()
			agent := startRun(t, append(base, "--proxy", px)...)
			waitListening(t, strings.SplitN(px, "=", 2)[0], agent.done)
			agent.wait(t)
			if out, err := vigil(t, context.Background(), "verify", "--store", store, "--state-dir", state); err != nil || !strings.Contains(out, "trail intact") {
				t.Errorf("verify after the failed and the good run: %v\n%s", err, out)
			}
		})
	}
	_ = os.Remove(filepath.Join(dir, "no-such-dir"))
}
