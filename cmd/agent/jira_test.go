package main

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
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

// TestJiraApprovalEndToEnd: through psql and the proxy, a held ALTER TABLE is filed as a
// Jira issue (an HTTP server checking the REST API's request: POST /rest/api/2/issue, basic
// auth, the fields Jira requires), labelled with the request id; a Jira webhook with a bad
// signature is refused with 401, a transition by an unmapped account decides nothing, other
// updates are acknowledged, and the signed transition to Approved by an approver lets the
// statement complete. Neither the API token nor the webhook secret is in the trail.
func TestJiraApprovalEndToEnd(t *testing.T) {
	srv := testpg.Start(t)
	if _, err := srv.Psql("postgres", "CREATE TABLE t (a int, c int)"); err != nil {
		t.Fatal(err)
	}
	const token, secret = "jira-e2e-token-5e02", "jira-e2e-webhook-secret-c9d8"
	t.Setenv("VIGIL_TEST_JIRA_TOKEN", token)
	t.Setenv("VIGIL_TEST_JIRA_SECRET", secret)
	type issue struct {
		Fields struct {
			Project   struct{ Key string }
			IssueType struct{ Name string }
			Summary   string
			Labels    []string
		}
	}
	issues := make(chan issue, 4)
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u, p, ok := r.BasicAuth()
		var is issue
		body, _ := io.ReadAll(r.Body)
		switch {
		case r.Method != http.MethodPost || r.URL.Path != "/rest/api/2/issue":
			http.NotFound(w, r)
		case !ok || u != "bot@example.com" || p != token:
			http.Error(w, "", http.StatusUnauthorized)
		case r.Header.Get("Content-Type") != "application/json" || json.Unmarshal(body, &is) != nil ||
			is.Fields.Project.Key != "OPS" || is.Fields.IssueType.Name != "Task" || is.Fields.Summary == "":
			w.WriteHeader(http.StatusBadRequest)
			_, _ = w.Write([]byte(`{"errorMessages":[],"errors":{"project":"project is required"}}`))
		default:
			issues <- is
			w.WriteHeader(http.StatusCreated)
			_, _ = w.Write([]byte(`{"id":"10001","key":"OPS-7","self":"http://` + r.Host + `/rest/api/2/issue/10001"}`))
		}
	}))
	defer api.Close()

	dir := t.TempDir()
	state := filepath.Join(dir, "state")
	policyPath := filepath.Join(dir, "policy.yaml")
	if err := os.WriteFile(policyPath, []byte(`principals:
  dbas: {emails: ["*@dba.example.com"]}
rules:
  - name: held-ddl
    match: {commands: ["ALTER TABLE"]}
    action: require_approval
    approval: {hold: 20s, approvers: [dbas]}
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
	cfgPath := filepath.Join(dir, "vigil.yaml")
	if err := os.WriteFile(cfgPath, []byte(fmt.Sprintf(`approvals:
  callback_listen: 127.0.0.1:%d
  jira:
    url: %q
    project: OPS
    user: bot@example.com
    token_env: VIGIL_TEST_JIRA_TOKEN
    webhook_secret_env: VIGIL_TEST_JIRA_SECRET
    users: {acc-1: alice@dba.example.com}
`, callbackPort, api.URL)), 0o644); err != nil {
		t.Fatal(err)
	}
	agent := startRun(t, "--no-capture", "--config", cfgPath, "--policy", policyPath, "--proxy", fmt.Sprintf("127.0.0.1:%d=%s", proxyPort, srv.Addr()),
		"--store", storeURL, "--state-dir", state, "--log-level", "warn")
	waitListening(t, fmt.Sprintf("127.0.0.1:%d", proxyPort), agent.done)

	cmd := exec.Command("psql", "-X", "-q", "-A", "-t", "-h", "127.0.0.1", "-p", strconv.Itoa(proxyPort), "-U", "postgres", "-d", "postgres", "-c", "ALTER TABLE t DROP COLUMN c")
	cmd.Env = append(os.Environ(), "PGSSLMODE=disable")
	held := make(chan string, 1)
	go func() {
		out, err := cmd.CombinedOutput()
		held <- fmt.Sprintf("%s (exit: %v)", out, err)
	}()
	var is issue
	select {
	case is = <-issues:
	case out := <-held:
		t.Fatalf("psql ended before the issue was filed: %s", out)
	case <-time.After(10 * time.Second):
		t.Fatal("no issue was filed")
	}
	var id string
	for _, l := range is.Fields.Labels {
		if strings.HasPrefix(l, "vigil-ap-") {
			id = strings.TrimPrefix(l, "vigil-")
		}
	}
	if id == "" || !strings.Contains(is.Fields.Summary, id) {
		t.Fatalf("issue %+v has no request label", is)
	}
	hook := func(account, status, key string) int {
		t.Helper()
		body, _ := json.Marshal(map[string]any{
			"timestamp": time.Now().UnixMilli(), "webhookEvent": "jira:issue_updated",
			"user":      map[string]string{"accountId": account},
			"issue":     map[string]any{"key": "OPS-7", "fields": map[string]any{"labels": is.Fields.Labels}},
			"changelog": map[string]any{"items": []map[string]string{{"field": "status", "fromString": "To Do", "toString": status}}},
		})
		m := hmac.New(sha256.New, []byte(key))
		m.Write(body)
		req, _ := http.NewRequest(http.MethodPost, fmt.Sprintf("http://127.0.0.1:%d/v1/jira/webhook", callbackPort), bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set(approval.HeaderJiraSignature, "sha256="+hex.EncodeToString(m.Sum(nil)))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for _, tc := range []struct {
		name, account, status, key string
		want                       int
	}{
		{"bad signature", "acc-1", "Approved", "not-the-secret", http.StatusUnauthorized},
		{"unmapped account", "acc-9", "Approved", secret, http.StatusForbidden},
		{"another transition", "acc-1", "In Progress", secret, http.StatusNoContent},
		{"approver", "acc-1", "Approved", secret, http.StatusOK},
	} {
		if code := hook(tc.account, tc.status, tc.key); code != tc.want {
			t.Errorf("%s: HTTP %d, want %d", tc.name, code, tc.want)
		}
	}
	select {
	case out := <-held:
		if !strings.Contains(out, "exit: <nil>") {
			t.Errorf("approved statement: %s", out)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("the approved statement did not complete")
	}
	agent.wait(t)

	trail, err := vigil(t, context.Background(), "events", "--store", storeURL, "--json")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(trail, token) || strings.Contains(trail, secret) {
		t.Error("the Jira token or webhook secret is in the trail")
	}
	for _, want := range []string{
		"notified: through jira",
		"refused: callback through jira from 127.0.0.1:",
		`refused: callback through jira: Jira account \"acc-9\" is not mapped to an approver`,
		"approved: by alice@dba.example.com: through Jira issue OPS-7 (1 of 1): granted",
		"executed: use 1 of 1",
	} {
		if !strings.Contains(trail, want) {
			t.Errorf("no approval event %q in the trail", want)
		}
	}
}
