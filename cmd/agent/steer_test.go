package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
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
	"github.com/vigil-db/vigil/pkg/policy"
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
	storeURL, _, agent := proxyAgent(t, srv, "steer:\n  - name: batch-jobs\n    cgroup: "+flagged+"\n")

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
	if refused.ClientAddr == "" || refused.ClientAddr == srv.Addr() {
		t.Errorf("the steered DROP's client_addr is %q, want the client's own address, not the server's", refused.ClientAddr)
	}
	if !refused.Steered || refused.SteeredBy == "" {
		t.Errorf("the steered DROP's event: steered %v by %q, want steered and the flag named", refused.Steered, refused.SteeredBy)
	}
	if direct == nil || direct.Source != "ebpf" || direct.Steered {
		t.Errorf("the direct DROP's event: %+v, want one captured (source ebpf), not steered", direct)
	}
}

// TestFlagsAtRunTime flags a workload by hand against the running agent (no steer: in the
// config): it is steered from its next connection, the flag survives a restart of the
// agent, it expires when it should, and every change is in the trail with who made it.
func TestFlagsAtRunTime(t *testing.T) {
	testenv.RequireBPF(t)
	srv := testpg.Start(t)
	cg, cgFD := testCgroup(t, "runtime")
	dir := t.TempDir()
	state := filepath.Join(dir, "state")
	storeURL := "local:" + filepath.Join(dir, "events")
	proxyPort, err := testpg.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	start := func() *agentRun {
		addrFile := filepath.Join(dir, "metrics-addr")
		os.Remove(addrFile)
		a := startRun(t, "--no-capture", "--store", storeURL, "--state-dir", state,
			"--metrics", "127.0.0.1:0", "--metrics-file", addrFile, "--log-level", "warn",
			"--proxy", fmt.Sprintf("127.0.0.1:%d=%s", proxyPort, srv.Addr()))
		waitReadyz(t, addrFile, a.done) // the steer component: every route in place
		waitFile(t, filepath.Join(state, adminSocket), a.done)
		return a
	}
	// steered says whether psql in the cgroup reaches the server through the proxy: the
	// proxy refuses a DROP of a table that does not exist before the server can say so.
	steered := func() bool {
		cmd := exec.Command("psql", "-X", "-q", "-A", "-t", "-h", "127.0.0.1", "-p", strconv.Itoa(srv.Port), "-U", "postgres", "-d", "postgres", "-c", "DROP TABLE no_such_table")
		cmd.Env = append(os.Environ(), "PGSSLMODE=disable")
		cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: cgFD}
		out, _ := cmd.CombinedOutput()
		switch {
		case strings.Contains(string(out), "does not exist"):
			return false
		case strings.Contains(string(out), "drop"):
			return true
		}
		t.Fatalf("psql: %s", out)
		return false
	}
	ctx := context.Background()
	agent := start()
	if steered() {
		t.Fatal("steered before any flag")
	}
	if out, err := vigil(t, ctx, "flags", "add", "--state-dir", state, "--cgroup", cg, "--name", "suspect", "--for", "1h", "--reason", "ticket 42"); err != nil || !strings.Contains(out, "suspect") {
		t.Fatalf("flags add: %q, %v", out, err)
	}
	if _, err := vigil(t, ctx, "flags", "add", "--state-dir", state, "--cgroup", cg, "--name", "again"); err == nil || !strings.Contains(err.Error(), "already flagged") {
		t.Errorf("flagging the same cgroup twice: %v, want a refusal naming the flag", err)
	}
	if !steered() {
		t.Error("not steered after flags add")
	}
	// The flag outlives the agent.
	agent.wait(t)
	agent = start()
	out, err := vigil(t, ctx, "flags", "list", "--state-dir", state, "--json")
	if err != nil || !strings.Contains(out, `"name":"suspect"`) || !strings.Contains(out, "ticket 42") {
		t.Fatalf("flags list after a restart: %q, %v", out, err)
	}
	if !steered() {
		t.Error("not steered after the agent restarted")
	}
	if _, err := vigil(t, ctx, "flags", "remove", "--state-dir", state, "suspect"); err != nil {
		t.Fatal(err)
	}
	if steered() {
		t.Error("still steered after flags remove")
	}
	// One that expires.
	if _, err := vigil(t, ctx, "flags", "add", "--state-dir", state, "--cgroup", cg, "--name", "brief", "--for", "1500ms"); err != nil {
		t.Fatal(err)
	}
	if !steered() {
		t.Error("not steered by a flag with an expiry")
	}
	time.Sleep(2500 * time.Millisecond)
	if steered() {
		t.Error("still steered after the flag expired")
	}
	agent.wait(t)

	evOut, err := vigil(t, ctx, "events", "--store", storeURL, "--json")
	if err != nil {
		t.Fatal(err)
	}
	var details []string
	for _, line := range strings.Split(strings.TrimSpace(evOut), "\n") {
		var ev event.Event
		if err := json.Unmarshal([]byte(line), &ev); err != nil {
			t.Fatal(err)
		}
		if ev.Type == event.TypeFlag {
			details = append(details, ev.Detail)
		}
	}
	want := []string{
		"flag suspect added: cgroup " + cg + ", by operator uid 0 pid",
		"flag suspect added", // restored at the restart
		"flag suspect removed: cgroup " + cg + ", by operator uid 0 pid",
		"flag brief added",
		"flag brief expired",
	}
	if len(details) != len(want) {
		t.Fatalf("flag events:\n%s\nwant %d", strings.Join(details, "\n"), len(want))
	}
	for i, w := range want {
		if !strings.HasPrefix(details[i], w) {
			t.Errorf("flag event %d: %q, want it to start with %q", i, details[i], w)
		}
	}
	if !strings.Contains(details[0], "reason: ticket 42") || !strings.Contains(details[0], "until ") {
		t.Errorf("the first flag event says neither why nor until when: %q", details[0])
	}
	if out, err := vigil(t, ctx, "verify", "--store", storeURL, "--state-dir", state); err != nil {
		t.Errorf("verify: %v\n%s", err, out)
	}
}

// waitReadyz waits until the agent whose metrics address is in addrFile answers /readyz
// with 200.
func waitReadyz(t *testing.T, addrFile string, done chan error) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-done:
			t.Fatalf("vigil run exited: %v", err)
		default:
		}
		if b, err := os.ReadFile(addrFile); err == nil {
			if resp, err := http.Get("http://" + string(b) + "/readyz"); err == nil {
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					return
				}
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatal("vigil run not ready within 30s")
}

// waitFile waits until path exists.
func waitFile(t *testing.T, path string, done chan error) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-done:
			t.Fatalf("vigil run exited: %v", err)
		default:
		}
		if _, err := os.Stat(path); err == nil {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s did not appear", path)
}

// TestPolicyEnforceSection: the policy's enforce section selects a workload by what it is
// (here its command name); the agent finds it among the host's processes and steers it,
// children included, from then on.
func TestPolicyEnforceSection(t *testing.T) {
	testenv.RequireBPF(t)
	srv := testpg.Start(t)
	if _, err := srv.Psql("postgres", "CREATE TABLE enforced_t (id int)"); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	pol := filepath.Join(dir, "policy.yaml")
	if err := os.WriteFile(pol, append(policy.DefaultYAML(), "\nenforce:\n  workloads:\n    - comm: wlshell\n"...), 0o600); err != nil {
		t.Fatal(err)
	}
	shell := filepath.Join(dir, "wlshell")
	sh, err := os.ReadFile("/bin/sh")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(shell, sh, 0o755); err != nil {
		t.Fatal(err)
	}
	proxyPort, err := testpg.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	storeURL := "local:" + filepath.Join(dir, "events")
	addrFile := filepath.Join(dir, "metrics-addr")
	agent := startRun(t, "--no-capture", "--policy", pol, "--store", storeURL, "--state-dir", filepath.Join(dir, "state"),
		"--metrics", "127.0.0.1:0", "--metrics-file", addrFile, "--log-level", "warn",
		"--proxy", fmt.Sprintf("127.0.0.1:%d=%s", proxyPort, srv.Addr()))
	waitReadyz(t, addrFile, agent.done)

	// The workload: a shell that waits out a scan, then runs psql against the server.
	cmd := exec.Command(shell, "-c", fmt.Sprintf("sleep %d; psql -X -q -A -t -h 127.0.0.1 -p %d -U postgres -d postgres -c 'DROP TABLE enforced_t' 2>&1",
		int(2*policyScanInterval/time.Second)+1, srv.Port))
	cmd.Env = append(os.Environ(), "PGSSLMODE=disable")
	out, _ := cmd.CombinedOutput()
	if !strings.Contains(string(out), "drop") {
		t.Errorf("DROP from the enforced workload: %q, want the proxy's refusal", out)
	}
	if left, err := srv.Psql("postgres", "SELECT count(*) FROM pg_class WHERE relname = 'enforced_t'"); err != nil || strings.TrimSpace(left) != "1" {
		t.Errorf("enforced_t after the refused DROP: %q, %v", left, err)
	}
	// Gone from the flags once the workload ended.
	deadline := time.Now().Add(3 * policyScanInterval)
	for {
		fl, err := vigil(t, context.Background(), "flags", "list", "--state-dir", filepath.Join(dir, "state"), "--json")
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(fl, `"origin":"policy"`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the policy's flag outlived its workload: %s", fl)
		}
		time.Sleep(100 * time.Millisecond)
	}
	agent.wait(t)
}

// TestSteerByWorkload: a steer selector on what a container is (its image here) flags the
// pod's container found among the host's processes, so its psql's DROP meets the proxy; the
// event names the container's pod and image.
func TestSteerByWorkload(t *testing.T) {
	testenv.RequireBPF(t)
	srv := testpg.Start(t)
	if _, err := srv.Psql("postgres", "CREATE TABLE workload_t (id int)"); err != nil {
		t.Fatal(err)
	}
	root, err := cgroupfs.Root()
	if err != nil {
		t.Fatal(err)
	}
	pod := testenv.FakePod(t, root)
	dir := t.TempDir()
	cfgFile := filepath.Join(dir, "vigil.yaml")
	if err := os.WriteFile(cfgFile, []byte("identity: {host_root: "+pod.HostRoot+", pod_labels: off}\n"+
		"steer:\n  - {name: billing, namespace: payments, image: 'registry.example.com/billing-api:*'}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	proxyPort, err := testpg.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	state := filepath.Join(dir, "state")
	addrFile := filepath.Join(dir, "metrics-addr")
	agent := startRun(t, "--config", cfgFile, "--no-capture", "--state-dir", state,
		"--metrics", "127.0.0.1:0", "--metrics-file", addrFile, "--log-level", "warn",
		"--proxy", fmt.Sprintf("127.0.0.1:%d=%s", proxyPort, srv.Addr()))
	waitReadyz(t, addrFile, agent.done)

	// The container's process waits out a scan, then runs psql against the server.
	cmd := exec.Command("sh", "-c", fmt.Sprintf("sleep %d; psql -X -q -A -t -h 127.0.0.1 -p %d -U postgres -d postgres -c 'DROP TABLE workload_t' 2>&1",
		int(2*policyScanInterval/time.Second)+1, srv.Port))
	cmd.Env = append(os.Environ(), "PGSSLMODE=disable")
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: pod.FD}
	out, _ := cmd.CombinedOutput()
	if !strings.Contains(string(out), "drop") {
		t.Errorf("DROP from the selected container: %q, want the proxy's refusal", out)
	}
	if left, err := srv.Psql("postgres", "SELECT count(*) FROM pg_class WHERE relname = 'workload_t'"); err != nil || strings.TrimSpace(left) != "1" {
		t.Errorf("workload_t after the refused DROP: %q, %v", left, err)
	}
	agent.wait(t)
	evs := readEvents(t, state)
	var flagged, refused bool
	for _, e := range evs {
		if e.Type == event.TypeFlag && strings.Contains(e.Detail, "billing:"+pod.ContainerID[:12]+" added") &&
			strings.Contains(e.Detail, "image "+pod.Image) {
			flagged = true
		}
		if e.Type == event.TypeStatement && e.Decision == event.DecisionBlock && e.Steered &&
			e.Process != nil && e.Process.Image == pod.Image && e.Process.Pod == pod.Name && e.Process.Namespace == pod.Namespace {
			refused = true
		}
	}
	if !flagged || !refused {
		for _, e := range evs {
			t.Logf("%s %s %s %+v", e.Type, e.Decision, e.Detail, e.Process)
		}
		t.Errorf("flag event %v, steered refusal naming the pod and image %v", flagged, refused)
	}
}

// TestSteerFailModes kills the agent with SIGKILL while a workload is flagged. With
// steer_fail: closed the flagged psql is refused while no agent runs (its connect() still
// goes to the dead proxy's port) and an unflagged one is not; with open it reaches the
// server directly. Either way the next agent records the window and what flagged
// workloads met in it, and steers them again.
func TestSteerFailModes(t *testing.T) {
	testenv.RequireBPF(t)
	srv := testpg.Start(t)
	flagged, flaggedFD := testCgroup(t, "failmode-flagged")
	_, otherFD := testCgroup(t, "failmode-other")
	psql := func(cgroupFD int, sql string) (string, error) {
		cmd := exec.Command("psql", "-X", "-q", "-A", "-t", "-h", "127.0.0.1", "-p", strconv.Itoa(srv.Port), "-U", "postgres", "-d", "postgres", "-c", sql)
		cmd.Env = append(os.Environ(), "PGSSLMODE=disable", "PGCONNECT_TIMEOUT=5")
		cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: cgroupFD}
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	for _, mode := range []string{"closed", "open"} {
		t.Run(mode, func(t *testing.T) {
			dir := t.TempDir()
			cfgFile := filepath.Join(dir, "vigil.yaml")
			if err := os.WriteFile(cfgFile, []byte("steer_fail: "+mode+"\nsteer:\n  - name: batch-jobs\n    cgroup: "+flagged+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			proxyPort, err := testpg.FreePort()
			if err != nil {
				t.Fatal(err)
			}
			state := filepath.Join(dir, "state")
			storeURL := "local:" + filepath.Join(dir, "events")
			addrFile := filepath.Join(dir, "metrics-addr")
			args := []string{"--config", cfgFile, "--store", storeURL, "--state-dir", state,
				"--metrics", "127.0.0.1:0", "--metrics-file", addrFile, "--log-level", "warn",
				"--proxy", fmt.Sprintf("127.0.0.1:%d=%s", proxyPort, srv.Addr())}
			agent := startAgentProc(t, filepath.Join(dir, "agent.log"), args...)
			waitReady(t, addrFile, srv.Port, agent.done)
			if out, _ := psql(flaggedFD, "SELECT 'via the proxy'"); !strings.Contains(out, "via the proxy") {
				t.Fatalf("flagged psql with the agent running: %q", out)
			}
			_ = agent.signal(t, syscall.SIGKILL)

			out, err := psql(flaggedFD, "SELECT 'while no agent ran'")
			switch mode {
			case "closed":
				if err == nil || !strings.Contains(out, "refused") {
					t.Errorf("flagged psql while no agent ran (fail closed): %v %q, want its connection refused", err, out)
				}
			case "open":
				if err != nil || !strings.Contains(out, "while no agent ran") {
					t.Errorf("flagged psql while no agent ran (fail open): %v %q, want it to reach the server", err, out)
				}
			}
			if out, err := psql(otherFD, "SELECT 'unflagged'"); err != nil || !strings.Contains(out, "unflagged") {
				t.Errorf("unflagged psql while no agent ran: %v %q", err, out)
			}

			_ = os.Remove(addrFile)
			agent = startAgentProc(t, filepath.Join(dir, "agent.log"), args...)
			waitReady(t, addrFile, srv.Port, agent.done)
			if out, _ := psql(flaggedFD, "DROP TABLE IF EXISTS no_such_table"); !strings.Contains(out, "drop") {
				t.Errorf("flagged psql after the restart: %q, want the proxy's refusal", out)
			}
			if err := agent.signal(t, syscall.SIGTERM); err != nil {
				t.Fatalf("agent stop: %v", err)
			}
			evOut, err := vigil(t, context.Background(), "events", "--store", storeURL, "--json")
			if err != nil {
				t.Fatal(err)
			}
			var window *event.Event
			for _, line := range strings.Split(strings.TrimSpace(evOut), "\n") {
				var ev event.Event
				if json.Unmarshal([]byte(line), &ev) == nil && ev.Type == event.TypeFlag && strings.Contains(ev.Detail, "no agent ran from") {
					window = &ev
				}
			}
			want := map[string]string{"closed": "were refused at the proxy's port", "open": "went directly to the servers, unenforced"}[mode]
			if window == nil || !strings.Contains(window.Detail, want) || !strings.Contains(window.Detail, "batch-jobs") {
				t.Errorf("the restart's steering window: %+v, want a flag event saying flagged workloads %s", window, want)
			}
		})
	}
}

// TestRuleFlagsWorkload: a rule with a flag block, matched by what capture sees a workload
// run directly (a DROP), flags that workload: its open session is ended, its next
// connection is steered into the proxy (where another rule refuses the DROP), and the trail
// says who flagged whom and why.
func TestRuleFlagsWorkload(t *testing.T) {
	testenv.RequireBPF(t)
	srv := testpg.Start(t)
	if _, err := srv.Psql("postgres", "CREATE TABLE rf_one (id int); CREATE TABLE rf_two (id int)"); err != nil {
		t.Fatal(err)
	}
	cg, cgFD := testCgroup(t, "ruleflag")
	policyFile := filepath.Join(t.TempDir(), "policy.yaml")
	if err := os.WriteFile(policyFile, []byte(`version: 1
rules:
  - name: no-drop-through-the-proxy
    match: {sources: [proxy], commands: ["DROP TABLE"]}
    action: block
  - name: drop-flags-the-workload
    match: {sources: [ebpf], commands: ["DROP TABLE"]}
    action: alert
    flag: {for: 10m, terminate: true}
`), 0o600); err != nil {
		t.Fatal(err)
	}
	storeURL, state, agent := proxyAgent(t, srv, "{}\n", "--policy", policyFile)

	psqlArgs := []string{"-X", "-q", "-A", "-t", "-h", "127.0.0.1", "-p", strconv.Itoa(srv.Port), "-U", "postgres", "-d", "postgres"}
	inCgroup := func(cmd *exec.Cmd) *exec.Cmd {
		cmd.Env = append(os.Environ(), "PGSSLMODE=disable")
		cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: cgFD}
		return cmd
	}
	// A session of the workload, open before the DROP.
	long := inCgroup(exec.Command("psql", psqlArgs...))
	stdin, err := long.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	var longOut strings.Builder
	long.Stdout, long.Stderr = &longOut, &longOut
	if err := long.Start(); err != nil {
		t.Fatal(err)
	}
	fmt.Fprintln(stdin, "SELECT 'long-1';")
	// And one over the server's Unix socket.
	longUnix := inCgroup(exec.Command("psql", "-X", "-q", "-A", "-t", "-h", srv.SocketDir, "-p", strconv.Itoa(srv.Port), "-U", "postgres", "-d", "postgres"))
	unixIn, err := longUnix.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	var unixOut strings.Builder
	longUnix.Stdout, longUnix.Stderr = &unixOut, &unixOut
	if err := longUnix.Start(); err != nil {
		t.Fatal(err)
	}
	fmt.Fprintln(unixIn, "SELECT 'unix-1';")
	time.Sleep(300 * time.Millisecond)

	if out, err := inCgroup(exec.Command("psql", append(psqlArgs, "-c", "DROP TABLE rf_one")...)).CombinedOutput(); err != nil {
		t.Fatalf("the direct DROP: %v %s", err, out)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		out, err := vigil(t, context.Background(), "flags", "list", "--state-dir", state, "--json")
		if err == nil && strings.Contains(out, `"origin":"rule"`) && strings.Contains(out, cg) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the workload was not flagged after its DROP: %q, %v", out, err)
		}
		time.Sleep(100 * time.Millisecond)
	}

	// Its open session was ended.
	time.Sleep(300 * time.Millisecond)
	fmt.Fprintln(stdin, "SELECT 'long-2';")
	stdin.Close()
	_ = long.Wait()
	if strings.Contains(longOut.String(), "long-2") || !strings.Contains(longOut.String(), "terminat") {
		t.Errorf("the workload's open session after the flag: %q, want it ended", longOut.String())
	}
	fmt.Fprintln(unixIn, "SELECT 'unix-2';")
	unixIn.Close()
	_ = longUnix.Wait()
	if !strings.Contains(unixOut.String(), "unix-1") || strings.Contains(unixOut.String(), "unix-2") || !strings.Contains(unixOut.String(), "terminat") {
		t.Errorf("the workload's open Unix-socket session after the flag: %q, want it ended", unixOut.String())
	}
	// Its next connection goes through the proxy, which refuses the DROP.
	out, _ := inCgroup(exec.Command("psql", append(psqlArgs, "-c", "DROP TABLE rf_two")...)).CombinedOutput()
	if !strings.Contains(string(out), "no-drop-through-the-proxy") {
		t.Errorf("the flagged workload's next DROP: %q, want the proxy's refusal", out)
	}
	if left, err := srv.Psql("postgres", "SELECT count(*) FROM pg_class WHERE relname = 'rf_two'"); err != nil || strings.TrimSpace(left) != "1" {
		t.Errorf("rf_two after the refused DROP: %q %v", left, err)
	}
	agent.wait(t)

	evOut, err := vigil(t, context.Background(), "events", "--store", storeURL, "--json")
	if err != nil {
		t.Fatal(err)
	}
	var added, ended bool
	for _, line := range strings.Split(strings.TrimSpace(evOut), "\n") {
		var ev event.Event
		if json.Unmarshal([]byte(line), &ev) != nil || ev.Type != event.TypeFlag {
			continue
		}
		added = added || (strings.Contains(ev.Detail, "rule drop-flags-the-workload") && strings.Contains(ev.Detail, "DROP TABLE rf_one"))
		ended = ended || strings.Contains(ev.Detail, "ended 2 open session(s)")
	}
	if !added || !ended {
		t.Errorf("flag events: added %v, ended %v; want the rule's flag and the ending of the two open sessions, TCP and Unix (the DROP's own had ended)\n%s", added, ended, evOut)
	}
}

// TestSteeredRemoteClient: with `steer: [{source: CIDR}]`, a client on another host (a
// network namespace over a veth pair) that dials the server's own address is governed by
// the proxy: its DROP refused, the event naming it steered with its own address; a client
// from another source goes straight to the server.
func TestSteeredRemoteClient(t *testing.T) {
	testenv.RequireBPF(t)
	srv := testpg.Start(t, testpg.Options{Config: []string{"listen_addresses = '*'"}, HBA: []string{"host all all 10.212.0.0/16 trust"}})
	if _, err := srv.Psql("postgres", "CREATE TABLE remote_t (id int)"); err != nil {
		t.Fatal(err)
	}
	n := os.Getpid() % 120
	host := fmt.Sprintf("10.212.%d.1", n)
	flaggedNS := testenv.NetNS(t, "f", fmt.Sprintf("10.212.%d.1", n), fmt.Sprintf("10.212.%d.2", n))
	otherNS := testenv.NetNS(t, "o", fmt.Sprintf("10.212.%d.5", n), fmt.Sprintf("10.212.%d.6", n))
	storeURL, _, agent := proxyAgent(t, srv, fmt.Sprintf("steer:\n  - name: branch-office\n    source: 10.212.%d.2/32\n", n))

	psql := func(ns, server, sql string) string {
		cmd := exec.Command("ip", "netns", "exec", ns, "psql", "-X", "-q", "-A", "-t", "-h", server, "-p", strconv.Itoa(srv.Port), "-U", "postgres", "-d", "postgres", "-c", sql)
		cmd.Env = append(os.Environ(), "PGSSLMODE=disable", "PGCONNECT_TIMEOUT=5")
		out, _ := cmd.CombinedOutput()
		return string(out)
	}
	if out := psql(flaggedNS, host, "DROP TABLE remote_t"); !strings.Contains(out, "drop") {
		t.Errorf("DROP from the flagged remote source: %q, want the proxy's refusal", out)
	}
	if out := psql(otherNS, fmt.Sprintf("10.212.%d.5", n), "SELECT 'direct from afar'"); !strings.Contains(out, "direct from afar") {
		t.Errorf("a remote client from another source: %q, want it answered by the server", out)
	}
	if left, err := srv.Psql("postgres", "SELECT count(*) FROM pg_class WHERE relname = 'remote_t'"); err != nil || strings.TrimSpace(left) != "1" {
		t.Errorf("remote_t after the refused DROP: %q %v", left, err)
	}
	agent.wait(t)
	evOut, err := vigil(t, context.Background(), "events", "--store", storeURL, "--json")
	if err != nil {
		t.Fatal(err)
	}
	var refused *event.Event
	times := 0
	for _, line := range strings.Split(strings.TrimSpace(evOut), "\n") {
		var ev event.Event
		if json.Unmarshal([]byte(line), &ev) == nil && strings.Contains(ev.Statement, "DROP TABLE remote_t") {
			refused = &ev
			times++
		}
	}
	// Once: capture, which sees the connection on the wire as one to the server, leaves it
	// to the proxy.
	if times != 1 {
		t.Errorf("the remote DROP is recorded %d times, want once", times)
	}
	// The client runs on this host, in a network namespace of its own, as a pod would: the
	// agent finds its socket there, and so its process.
	if refused != nil && (refused.Process == nil || refused.Process.Comm != "psql") {
		t.Errorf("the remote DROP's process: %+v, want the psql in the other namespace", refused.Process)
	}
	if refused == nil || refused.Source != "proxy" || refused.Decision != "block" || !refused.Steered || refused.SteeredBy != "branch-office" ||
		!strings.HasPrefix(refused.ClientAddr, fmt.Sprintf("10.212.%d.2:", n)) {
		t.Errorf("the remote DROP's event: %+v, want a proxy block, steered by branch-office, from the client's own address", refused)
	}
}

// proxyAgent starts `vigil run` with config conf and a proxy in front of srv (extra
// arguments follow), waits until it is ready, and returns its store URL and state
// directory.
func proxyAgent(t *testing.T, srv *testpg.Server, conf string, extra ...string) (storeURL, state string, agent *agentRun) {
	t.Helper()
	dir := t.TempDir()
	cfgFile := filepath.Join(dir, "vigil.yaml")
	if err := os.WriteFile(cfgFile, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	proxyPort, err := testpg.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	storeURL, state = "local:"+filepath.Join(dir, "events"), filepath.Join(dir, "state")
	addrFile := filepath.Join(dir, "metrics-addr")
	agent = startRun(t, append([]string{"--config", cfgFile, "--store", storeURL, "--state-dir", state,
		"--metrics", "127.0.0.1:0", "--metrics-file", addrFile, "--log-level", "warn",
		"--proxy", fmt.Sprintf("127.0.0.1:%d=%s", proxyPort, srv.Addr())}, extra...)...)
	waitReady(t, addrFile, srv.Port, agent.done)
	return storeURL, state, agent
}
