package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vigil-db/vigil/internal/testpg"
	"github.com/vigil-db/vigil/pkg/approval"
)

// TestWebhookApprovalEndToEnd: through psql and the proxy, a held ALTER TABLE is POSTed,
// signed, to a webhook receiver (a real HTTP server here, checking the signature); callbacks
// with a bad signature or an old timestamp are refused and recorded; the receiver's signed
// approval lets the statement complete. With the receiver down, the held client is told in a
// NOTICE that the approval could not be requested, the failure is counted, and the hold
// ends on its own timeout: nothing hangs. The secret is not in the trail.
func TestWebhookApprovalEndToEnd(t *testing.T) {
	srv := testpg.Start(t)
	if _, err := srv.Psql("postgres", "CREATE TABLE t (a int, c int); CREATE TABLE v (a int)"); err != nil {
		t.Fatal(err)
	}
	const secret = "webhook-e2e-secret-3f9a"
	t.Setenv("VIGIL_TEST_WEBHOOK_SECRET", secret)
	requests := make(chan approval.WebhookRequest, 4)
	receiver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if err := approval.VerifySigned([]byte(secret), body, r.Header.Get(approval.HeaderTimestamp), r.Header.Get(approval.HeaderSignature), time.Now(), approval.CallbackWindow); err != nil {
			http.Error(w, err.Error(), http.StatusUnauthorized)
			return
		}
		var wr approval.WebhookRequest
		if err := json.Unmarshal(body, &wr); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		requests <- wr
	}))
	defer receiver.Close()

	dir := t.TempDir()
	state := filepath.Join(dir, "state")
	policyPath := filepath.Join(dir, "policy.yaml")
	if err := os.WriteFile(policyPath, []byte(`rules:
  - name: held-ddl
    match: {commands: ["ALTER TABLE"], tables: [t]}
    action: require_approval
    approval: {hold: 20s}
  - name: short-ddl
    match: {commands: ["ALTER TABLE"], tables: [v]}
    action: require_approval
    approval: {hold: 3s}
`), 0o644); err != nil {
		t.Fatal(err)
	}
	proxyPort, err := testpg.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	callbackPort, err := testpg.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	storeURL := "local:" + filepath.Join(dir, "events")
	start := func(hookURL string) (*agentRun, string) {
		cfgPath := filepath.Join(dir, "vigil.yaml")
		if err := os.WriteFile(cfgPath, []byte(fmt.Sprintf(`approvals:
  callback_listen: 127.0.0.1:%d
  webhooks:
    - {name: ops, url: %q, secret_env: VIGIL_TEST_WEBHOOK_SECRET}
`, callbackPort, hookURL)), 0o644); err != nil {
			t.Fatal(err)
		}
		addrFile := filepath.Join(dir, "metrics-addr")
		os.Remove(addrFile)
		a := startRun(t, "--no-capture", "--config", cfgPath, "--policy", policyPath, "--proxy", fmt.Sprintf("127.0.0.1:%d=%s", proxyPort, srv.Addr()),
			"--store", storeURL, "--state-dir", state, "--metrics", "127.0.0.1:0", "--metrics-file", addrFile, "--log-level", "warn")
		waitListening(t, fmt.Sprintf("127.0.0.1:%d", proxyPort), a.done)
		addr, err := os.ReadFile(addrFile)
		if err != nil {
			t.Fatal(err)
		}
		return a, strings.TrimSpace(string(addr))
	}
	agent, _ := start(receiver.URL + "/hook")

	psql := func(sql string) chan string {
		cmd := exec.Command("psql", "-X", "-q", "-A", "-t", "-v", "VERBOSITY=verbose", "-h", "127.0.0.1", "-p", strconv.Itoa(proxyPort), "-U", "postgres", "-d", "postgres", "-c", sql)
		cmd.Env = append(os.Environ(), "PGSSLMODE=disable")
		ch := make(chan string, 1)
		go func() {
			out, err := cmd.CombinedOutput()
			ch <- fmt.Sprintf("%s (exit: %v)", out, err)
		}()
		return ch
	}
	post := func(url string, d approval.WebhookDecision, at time.Time, key string) int {
		t.Helper()
		body, _ := json.Marshal(d)
		req, _ := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
		ts, sig := approval.Sign([]byte(key), body, at)
		req.Header.Set(approval.HeaderTimestamp, ts)
		req.Header.Set(approval.HeaderSignature, sig)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}

	held := psql("ALTER TABLE t DROP COLUMN c")
	var wr approval.WebhookRequest
	select {
	case wr = <-requests:
	case out := <-held:
		t.Fatalf("psql ended before the webhook was called: %s", out)
	case <-time.After(10 * time.Second):
		t.Fatal("the webhook receiver got no request")
	}
	if wr.Statement != "ALTER TABLE t DROP COLUMN c" || wr.Rule != "held-ddl" || wr.Requester != "db:postgres" ||
		wr.DecisionURL != fmt.Sprintf("http://127.0.0.1:%d/v1/webhooks/ops/decision", callbackPort) {
		t.Errorf("webhook request %+v", wr)
	}
	approve := approval.WebhookDecision{ID: wr.ID, Decision: "approve", Approver: "alice@example.com", Reason: "migration 42"}
	if code := post(wr.DecisionURL, approve, time.Now(), "not-the-secret"); code != http.StatusUnauthorized {
		t.Errorf("callback with a bad signature: HTTP %d, want 401", code)
	}
	if code := post(wr.DecisionURL, approve, time.Now().Add(-10*time.Minute), secret); code != http.StatusUnauthorized {
		t.Errorf("callback with an old timestamp: HTTP %d, want 401", code)
	}
	if code := post(wr.DecisionURL, approval.WebhookDecision{ID: wr.ID, Decision: "approve", Approver: "os:root"}, time.Now(), secret); code != http.StatusBadRequest {
		t.Errorf("callback naming an OS user: HTTP %d, want 400", code)
	}
	if code := post(wr.DecisionURL, approve, time.Now(), secret); code != http.StatusOK {
		t.Errorf("signed approval: HTTP %d, want 200", code)
	}
	select {
	case out := <-held:
		if !strings.Contains(out, "exit: <nil>") || !strings.Contains(out, "held for approval "+wr.ID) {
			t.Errorf("approved statement: %s", out)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("the approved statement did not complete")
	}
	if out, err := srv.Psql("postgres", "SELECT string_agg(column_name, ',') FROM information_schema.columns WHERE table_name = 't'"); err != nil || strings.TrimSpace(out) != "a" {
		t.Errorf("t has columns %q (%v) after the approved drop, want a", out, err)
	}
	agent.wait(t)

	// The receiver is down: the client hears of it, the hold still ends by itself.
	receiver.Close()
	agent, metricsAddr := start(receiver.URL + "/hook")
	began := time.Now()
	out := <-psql("ALTER TABLE v ADD COLUMN x int")
	if !strings.Contains(out, "the approval could not be requested") || !strings.Contains(out, "57014") || strings.Contains(out, receiver.URL) {
		t.Errorf("held statement with the receiver down: %s", out)
	}
	if took := time.Since(began); took > 10*time.Second {
		t.Errorf("the 3s hold took %v", took)
	}
	resp, err := http.Get("http://" + metricsAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(metrics), `vigil_approval_notify_failures_total{channel="webhook ops"} 1`) ||
		!strings.Contains(string(metrics), `vigil_approval_callbacks_total{channel="webhook ops",result="refused"} 0`) {
		t.Errorf("metrics lack the notify failure:\n%s", grepLines(string(metrics), "vigil_approval"))
	}
	agent.wait(t)

	trail, err := vigil(t, context.Background(), "events", "--store", storeURL, "--json")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(trail, secret) {
		t.Error("the webhook secret is in the trail")
	}
	all := approvalSteps(t, trail)
	for _, want := range []string{
		wr.ID + " notified: through webhook ops",
		wr.ID + " refused: callback through webhook ops from 127.0.0.1:",
		approval.ErrBadSignature.Error(),
		approval.ErrStaleTimestamp.Error(),
		wr.ID + ` refused: callback through webhook ops: approver "os:root"`,
		wr.ID + " approved: by alice@example.com: migration 42 (1 of 1): granted",
		wr.ID + " executed: use 1 of 1",
		"unnotified: webhook ops: ",
		"expired: no decision within the 3s hold",
	} {
		if !strings.Contains(all, want) {
			t.Errorf("no approval event %q in:\n%s", want, all)
		}
	}
	if out, err := vigil(t, context.Background(), "verify", "--store", storeURL, "--state-dir", state); err != nil {
		t.Errorf("verify: %v %s", err, out)
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
