package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vigil-db/vigil/internal/testenv"
	"github.com/vigil-db/vigil/internal/testpg"
	"github.com/vigil-db/vigil/pkg/cgroupfs"
	"github.com/vigil-db/vigil/pkg/event"
)

// testCgroup creates a cgroup below the cgroup v2 root and returns its path in the
// hierarchy and a directory fd to start processes in it.
func testCgroup(t *testing.T, name string) (string, int) {
	t.Helper()
	root, err := cgroupfs.Root()
	if err != nil {
		t.Fatal(err)
	}
	path := fmt.Sprintf("/vigil-e2e-%d-%s", os.Getpid(), name)
	dir := filepath.Join(root, path)
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	fd, err := unix.Open(dir, unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		unix.Close(fd)
		for i := 0; i < 50 && os.Remove(dir) != nil; i++ {
			time.Sleep(20 * time.Millisecond)
		}
	})
	return path, fd
}

// TestSteeredWorkload is the steering contract: with `steer: [{cgroup: P}]` and
// `--proxy 127.0.0.1:X=SERVER`, psql run in cgroup P against the server's own address is
// governed by the proxy (its DROP refused, the table intact, the event naming that psql),
// while the same psql from another cgroup goes straight to the server.
func TestSteeredWorkload(t *testing.T) {
	testenv.RequireBPF(t)
	srv := testpg.Start(t)
	if _, err := srv.Psql("postgres", "CREATE TABLE steered_t (id int); CREATE TABLE direct_t (id int)"); err != nil {
		t.Fatal(err)
	}
	flagged, flaggedFD := testCgroup(t, "flagged")
	_, otherFD := testCgroup(t, "other")
	dir := t.TempDir()
	cfgFile := filepath.Join(dir, "vigil.yaml")
	if err := os.WriteFile(cfgFile, []byte("steer:\n  - name: batch-jobs\n    cgroup: "+flagged+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	proxyPort, err := testpg.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	storeURL := "local:" + filepath.Join(dir, "events")
	addrFile := filepath.Join(dir, "metrics-addr")
	agent := startRun(t, "--config", cfgFile, "--store", storeURL, "--state-dir", filepath.Join(dir, "state"),
		"--metrics", "127.0.0.1:0", "--metrics-file", addrFile, "--log-level", "warn",
		"--proxy", fmt.Sprintf("127.0.0.1:%d=%s", proxyPort, srv.Addr()))
	waitReady(t, addrFile, srv.Port, agent.done)

	psql := func(cgroupFD int, sql string) (string, int) {
		cmd := exec.Command("psql", "-X", "-q", "-A", "-t", "-h", "127.0.0.1", "-p", strconv.Itoa(srv.Port), "-U", "postgres", "-d", "postgres", "-c", sql)
		cmd.Env = append(os.Environ(), "PGSSLMODE=disable")
		cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: cgroupFD}
		out, _ := cmd.CombinedOutput()
		return string(out), cmd.Process.Pid
	}
	out, steeredPID := psql(flaggedFD, "DROP TABLE steered_t")
	if !strings.Contains(out, "drop") {
		t.Errorf("DROP from the flagged cgroup: %q, want the proxy's refusal naming the rule", out)
	}
	if out, _ := psql(otherFD, "DROP TABLE direct_t"); strings.TrimSpace(out) != "" {
		t.Errorf("DROP from another cgroup: %q, want it to run directly", out)
	}
	tables, err := srv.Psql("postgres", "SELECT string_agg(relname, ',' ORDER BY relname) FROM pg_class WHERE relname IN ('steered_t', 'direct_t')")
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(tables) != "steered_t" {
		t.Errorf("tables left: %q, want steered_t (refused in the proxy) but not direct_t", tables)
	}
	time.Sleep(300 * time.Millisecond)
	agent.wait(t)

	evOut, err := vigil(t, context.Background(), "events", "--store", storeURL, "--json")
	if err != nil {
		t.Fatal(err)
	}
	var refused, direct *event.Event
	for _, line := range strings.Split(strings.TrimSpace(evOut), "\n") {
		var ev event.Event
		if err := json.Unmarshal([]byte(line), &ev); err != nil {
			t.Fatal(err)
		}
		switch {
		case strings.Contains(ev.Statement, "DROP TABLE steered_t"):
			refused = &ev
		case strings.Contains(ev.Statement, "DROP TABLE direct_t"):
			direct = &ev
		}
	}
	if refused == nil || refused.Source != "proxy" || refused.Decision != "block" {
		t.Fatalf("the steered DROP's event: %+v, want source proxy, decision block", refused)
	}
	if p := refused.Process; p == nil || p.PID != int32(steeredPID) || p.Comm != "psql" {
		t.Errorf("the steered DROP's process: %+v, want psql pid %d as the kernel saw it", p, steeredPID)
	}
	if direct == nil || direct.Source != "ebpf" {
		t.Errorf("the direct DROP's event: %+v, want one captured (source ebpf)", direct)
	}
}
