package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vigil-db/vigil/internal/testpg"
	"github.com/vigil-db/vigil/pkg/approval"
	"github.com/vigil-db/vigil/pkg/event"
)

// cliAs runs `vigil args...` as uid (and gid) in a process of its own: the control
// socket's SO_PEERCRED then names that user, as it would a real approver's.
type cliAs struct {
	bin string
}

// newCLIAs puts a copy of the test binary where any user can run it.
func newCLIAs(t *testing.T, dir string) cliAs {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "vigil.test")
	if err := os.Link(self, bin); err != nil {
		src, err := os.Open(self)
		if err != nil {
			t.Fatal(err)
		}
		defer src.Close()
		dst, err := os.OpenFile(bin, os.O_CREATE|os.O_WRONLY, 0o755)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.Copy(dst, src); err != nil {
			t.Fatal(err)
		}
		if err := dst.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	return cliAs{bin: bin}
}

func (c cliAs) run(t *testing.T, uid uint32, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(c.bin, args...)
	cmd.Env = append(os.Environ(), asVigilEnv+"=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

const approvalPolicy = `principals:
  dbas:
    workloads: [{uid: 65534}]
rules:
  - name: held-ddl
    match: {commands: ["ALTER TABLE"], tables: [t]}
    action: require_approval
    approval: {hold: 20s, approvers: [dbas]}
  - name: refused-ddl
    match: {commands: ["ALTER TABLE"], tables: [u]}
    action: require_approval
    approval: {approvers: [dbas]}
  - name: short-ddl
    match: {commands: ["ALTER TABLE"], tables: [v]}
    action: require_approval
    approval: {hold: 2s, approvers: [dbas]}
`

// TestApprovalsEndToEnd: through psql and the proxy, ALTER TABLE … DROP COLUMN is held,
// refused to the requester and to a non-approver, approved by another OS user with `vigil
// approvals approve`, and completes; the same statement again needs a new approval; a
// cancel withdraws a held statement; a denied one errors and leaves the table intact; a
// hold times out; a statement refused at once runs once after approval, across an agent
// restart, and its second run is a replay. Every step is in the trail, no grant is.
func TestApprovalsEndToEnd(t *testing.T) {
	srv := testpg.Start(t)
	if _, err := srv.Psql("postgres", "CREATE TABLE t (a int, c int, d int); CREATE TABLE u (a int, c int); CREATE TABLE v (a int)"); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	// The approvers' CLI runs as nobody: it must reach the control socket.
	for _, d := range []string{filepath.Dir(dir), dir} {
		if err := os.Chmod(d, 0o711); err != nil {
			t.Fatal(err)
		}
	}
	state := filepath.Join(dir, "state")
	if err := os.Mkdir(state, 0o711); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(state, 0o711); err != nil { // whatever the umask
		t.Fatal(err)
	}
	policyPath := filepath.Join(dir, "policy.yaml")
	cfgPath := filepath.Join(dir, "vigil.yaml")
	proxyPort, err := testpg.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(policyPath, []byte(approvalPolicy), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfgPath, []byte("approvals:\n  socket_group: nogroup\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	storeURL := "local:" + filepath.Join(dir, "events")
	start := func() *agentRun {
		a := startRun(t, "--no-capture", "--config", cfgPath, "--policy", policyPath, "--proxy", fmt.Sprintf("127.0.0.1:%d=%s", proxyPort, srv.Addr()),
			"--store", storeURL, "--state-dir", state, "--metrics", "127.0.0.1:0", "--log-level", "warn")
		waitListening(t, fmt.Sprintf("127.0.0.1:%d", proxyPort), a.done)
		return a
	}
	agent := start()
	cli := newCLIAs(t, dir)
	const nobody, stranger = 65534, 65533

	psql := func(sql string) *exec.Cmd {
		cmd := exec.Command("psql", "-X", "-q", "-A", "-t", "-v", "VERBOSITY=verbose", "-h", "127.0.0.1", "-p", strconv.Itoa(proxyPort), "-U", "postgres", "-d", "postgres", "-c", sql)
		cmd.Env = append(os.Environ(), "PGSSLMODE=disable")
		return cmd
	}
	type result struct {
		out string
		err error
	}
	background := func(cmd *exec.Cmd) chan result {
		buf := &syncBuffer{}
		cmd.Stdout, cmd.Stderr = buf, buf
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		ch := make(chan result, 1)
		go func() {
			err := cmd.Wait()
			ch <- result{buf.String(), err}
		}()
		return ch
	}
	list := func() []approval.Request {
		t.Helper()
		out, err := vigil(t, context.Background(), "approvals", "list", "--json", "--state-dir", state)
		if err != nil {
			t.Fatal(err)
		}
		var reqs []approval.Request
		for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
			if line == "" {
				continue
			}
			var r approval.Request
			if err := json.Unmarshal([]byte(line), &r); err != nil {
				t.Fatalf("%v: %s", err, line)
			}
			for _, k := range []string{`"id"`, `"status"`, `"requester"`, `"database"`, `"statement"`, `"rule"`} {
				if !strings.Contains(line, k) {
					t.Errorf("list line without %s: %s", k, line)
				}
			}
			reqs = append(reqs, r)
		}
		return reqs
	}
	pendingFor := func(stmt string, not ...string) approval.Request {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) {
			for _, r := range list() {
				if r.Status == approval.StatusPending && r.Statement == stmt && !contains(not, r.ID) {
					return r
				}
			}
			time.Sleep(50 * time.Millisecond)
		}
		t.Fatalf("no pending request for %q", stmt)
		return approval.Request{}
	}
	wait := func(ch chan result) result {
		t.Helper()
		select {
		case r := <-ch:
			return r
		case <-time.After(30 * time.Second):
			t.Fatal("psql did not finish")
			return result{}
		}
	}
	columns := func(table string) string {
		t.Helper()
		out, err := srv.Psql("postgres", "SELECT string_agg(column_name, ',' ORDER BY ordinal_position) FROM information_schema.columns WHERE table_name = '"+table+"'")
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(out)
	}

	// Held, refused to the requester and to a stranger, approved by a dba: it runs.
	const dropC = "ALTER TABLE t DROP COLUMN c"
	held := background(psql(dropC))
	first := pendingFor(dropC)
	if first.Requester != "db:postgres" || first.Database != "postgres" || first.Rule != "held-ddl" {
		t.Errorf("request %+v", first)
	}
	if out, err := vigil(t, context.Background(), "approvals", "approve", first.ID, "--state-dir", state); err == nil || !strings.Contains(err.Error(), approval.ErrSelfApproval.Error()) {
		t.Errorf("root (the requester's uid) approving: %v %s, want a self-approval refusal", err, out)
	}
	if out, err := cli.run(t, stranger, "approvals", "approve", first.ID, "--state-dir", state); err == nil || !strings.Contains(out, approval.ErrNotApprover.Error()) {
		t.Errorf("uid %d approving: %v %s, want a refusal", stranger, err, out)
	}
	if out, err := cli.run(t, nobody, "approvals", "approve", first.ID, "--reason", "planned migration", "--state-dir", state); err != nil {
		t.Fatalf("nobody approving: %v %s", err, out)
	}
	if r := wait(held); r.err != nil || !strings.Contains(r.out, "held for approval "+first.ID) || !strings.Contains(r.out, "vigil approvals approve "+first.ID) {
		t.Errorf("approved statement: %v %q", r.err, r.out)
	}
	if got := columns("t"); got != "a,d" {
		t.Errorf("t has columns %s after the approved drop, want a,d", got)
	}

	// The same statement again needs a new approval; a cancel withdraws it.
	cmd := psql(dropC)
	again := background(cmd)
	second := pendingFor(dropC, first.ID)
	// The cancel withdraws the request once the client has been told of it.
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(cmd.Stdout.(*syncBuffer).String(), second.ID); {
		if time.Now().After(deadline) {
			t.Fatal("no NOTICE for the second hold")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	if r := wait(again); r.err == nil || !strings.Contains(r.out, "57014") || !strings.Contains(r.out, "canceling statement due to user request") {
		t.Errorf("cancelled hold: %v %q", r.err, r.out)
	}
	if r := get(t, list(), second.ID); r.Status != approval.StatusWithdrawn {
		t.Errorf("cancelled request is %s", r.Status)
	}

	// Denied: an error, and the table keeps its column.
	const dropD = "ALTER TABLE t DROP COLUMN d"
	denied := background(psql(dropD))
	third := pendingFor(dropD)
	if out, err := cli.run(t, nobody, "approvals", "deny", third.ID, "--reason", "not during business hours", "--state-dir", state); err != nil {
		t.Fatalf("deny: %v %s", err, out)
	}
	if r := wait(denied); r.err == nil || !strings.Contains(r.out, "42501") || !strings.Contains(r.out, "denied by os:nobody: not during business hours") {
		t.Errorf("denied statement: %v %q", r.err, r.out)
	}
	if got := columns("t"); got != "a,d" {
		t.Errorf("t has columns %s after a denied drop, want a,d", got)
	}

	// Nobody decides within the hold.
	timedOut := background(psql("ALTER TABLE v ADD COLUMN x int"))
	if r := wait(timedOut); r.err == nil || !strings.Contains(r.out, "57014") || !strings.Contains(r.out, "no approval within 2s") {
		t.Errorf("timed-out hold: %v %q", r.err, r.out)
	}
	if got := columns("v"); got != "a" {
		t.Errorf("v has columns %s after a timed-out hold", got)
	}

	// Refused at once with the request id; approved across an agent restart; the retry
	// runs once, and a second retry is a replay that files a new request.
	const dropU = "ALTER TABLE u DROP COLUMN c"
	out, err := psql(dropU).CombinedOutput()
	m := regexp.MustCompile(`42501: .*request (ap-[0-9a-f]+)`).FindSubmatch(out)
	if err == nil || m == nil {
		t.Fatalf("refused-at-once statement: %v %s", err, out)
	}
	refusedID := string(m[1])
	agent.wait(t)
	agent = start()
	if out, err := cli.run(t, nobody, "approvals", "approve", refusedID, "--state-dir", state); err != nil {
		t.Fatalf("approving after a restart: %v %s", err, out)
	}
	if out, err := psql(dropU).CombinedOutput(); err != nil {
		t.Fatalf("retry under the grant: %v %s", err, out)
	}
	if got := columns("u"); got != "a" {
		t.Errorf("u has columns %s after the approved retry", got)
	}
	out, err = psql(dropU).CombinedOutput()
	if m := regexp.MustCompile(`request (ap-[0-9a-f]+)`).FindSubmatch(out); err == nil || m == nil || string(m[1]) == refusedID {
		t.Errorf("second retry: %v %s, want a refusal with a new request", err, out)
	}

	// The grants, for the check that none reached the trail.
	var sigs []string
	files, _ := filepath.Glob(filepath.Join(state, "approvals", "*.json"))
	for _, f := range files {
		var r approval.Request
		data, err := os.ReadFile(f)
		if err != nil || json.Unmarshal(data, &r) != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if r.Grant != nil {
			sigs = append(sigs, base64.StdEncoding.EncodeToString(r.Grant.Signature))
		}
	}
	if len(sigs) != 2 {
		t.Errorf("%d grants in the store, want 2", len(sigs))
	}
	time.Sleep(300 * time.Millisecond)
	agent.wait(t)

	trail, err := vigil(t, context.Background(), "events", "--store", storeURL, "--json")
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range sigs {
		if strings.Contains(trail, s) {
			t.Errorf("a grant signature is in the trail")
		}
	}
	var steps []string
	executed := 0
	for _, line := range strings.Split(strings.TrimSpace(trail), "\n") {
		var e event.Event
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatal(err)
		}
		switch {
		case e.Type == event.TypeApproval:
			steps = append(steps, e.ApprovalID+" "+e.Detail)
		case e.Type == event.TypeStatement && e.Statement == dropC && e.ApprovalID == first.ID && e.Error == "":
			executed++
		}
	}
	all := strings.Join(steps, "\n")
	for _, want := range []string{
		first.ID + " requested: by db:postgres under rule held-ddl",
		first.ID + " notified:",
		first.ID + " refused: approval by os:root: " + approval.ErrSelfApproval.Error(),
		first.ID + " refused: approval by os:#65533: " + approval.ErrNotApprover.Error(),
		first.ID + " approved: by os:nobody: planned migration (1 of 1): granted",
		first.ID + " executed: use 1 of 1",
		second.ID + " withdrawn: the client cancelled",
		third.ID + " denied: by os:nobody: not during business hours",
		"expired: no decision within the 2s hold",
		refusedID + " requested: by db:postgres under rule refused-ddl: refused at once",
		refusedID + " executed: use 1 of 1",
		refusedID + " refused: " + approval.ErrReplayed.Error(),
	} {
		if !strings.Contains(all, want) {
			t.Errorf("no approval event %q in:\n%s", want, all)
		}
	}
	if executed != 1 {
		t.Errorf("%d statement events for the approved drop under %s, want 1", executed, first.ID)
	}
	if out, err := vigil(t, context.Background(), "verify", "--store", storeURL, "--state-dir", state); err != nil {
		t.Errorf("verify: %v %s", err, out)
	}
}

// syncBuffer is a bytes.Buffer that a test may read while a process writes it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func get(t *testing.T, reqs []approval.Request, id string) approval.Request {
	t.Helper()
	for _, r := range reqs {
		if r.ID == id {
			return r
		}
	}
	t.Fatalf("no request %s", id)
	return approval.Request{}
}

// approvalSteps lists the approval events of a trail (`vigil events --json`), one
// "ID DETAIL" line each, in order.
func approvalSteps(t *testing.T, trail string) string {
	t.Helper()
	var steps []string
	for _, line := range strings.Split(strings.TrimSpace(trail), "\n") {
		var e event.Event
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatal(err)
		}
		if e.Type == event.TypeApproval {
			steps = append(steps, e.ApprovalID+" "+e.Detail)
		}
	}
	return strings.Join(steps, "\n")
}
