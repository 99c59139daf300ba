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
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/slack-go/slack"
	"github.com/slack-go/slack/slacktest"

	"github.com/vigil-db/vigil/internal/testpg"
	"github.com/vigil-db/vigil/internal/testslack"
	"github.com/vigil-db/vigil/pkg/approval"
)

// TestSlackApprovalEndToEnd: through psql and the proxy, a held ALTER TABLE is posted to a
// Slack channel (slack-go's slacktest server) as a message with Approve and Deny buttons
// carrying the request id; interaction callbacks with a bad signature or an old timestamp
// are refused with 401, a click by a Slack user the configuration does not map, or maps to
// someone outside the rule's approvers, decides nothing; a signed click by an approver
// lets the statement complete. With Slack unreachable the held client is told in a NOTICE
// and the hold ends on its own. Neither the bot token nor the signing secret is in the
// trail.
func TestSlackApprovalEndToEnd(t *testing.T) {
	srv := testpg.Start(t)
	if _, err := srv.Psql("postgres", "CREATE TABLE t (a int, c int); CREATE TABLE v (a int)"); err != nil {
		t.Fatal(err)
	}
	const token, signing = "xoxb-e2e-token-77c1", "slack-e2e-signing-secret-b41d"
	t.Setenv("VIGIL_TEST_SLACK_TOKEN", token)
	t.Setenv("VIGIL_TEST_SLACK_SIGNING", signing)
	slackSrv := slacktest.NewTestServer()
	slackSrv.Start()
	defer slackSrv.Stop()
	feed := testslack.Messages(t, slackSrv)

	dir := t.TempDir()
	state := filepath.Join(dir, "state")
	policyPath := filepath.Join(dir, "policy.yaml")
	if err := os.WriteFile(policyPath, []byte(`principals:
  dbas: {emails: ["*@dba.example.com"]}
rules:
  - name: held-ddl
    match: {commands: ["ALTER TABLE"], tables: [t]}
    action: require_approval
    approval: {hold: 20s, approvers: [dbas]}
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
	start := func(apiURL string) (*agentRun, string) {
		cfgPath := filepath.Join(dir, "vigil.yaml")
		if err := os.WriteFile(cfgPath, []byte(fmt.Sprintf(`approvals:
  callback_listen: 127.0.0.1:%d
  slack:
    channel: C123
    bot_token_env: VIGIL_TEST_SLACK_TOKEN
    signing_secret_env: VIGIL_TEST_SLACK_SIGNING
    api_url: %q
    users: {U1: alice@dba.example.com, U2: mallory@example.com}
`, callbackPort, apiURL)), 0o644); err != nil {
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
	agent, metricsAddr := start(slackSrv.GetAPIURL())

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
	callbackURL := fmt.Sprintf("http://127.0.0.1:%d/v1/slack/interactions", callbackPort)
	// click POSTs what Slack sends when user clicks button (its action id and value).
	click := func(button *slack.ButtonBlockElement, user string, at time.Time, secret string) int {
		t.Helper()
		payload, _ := json.Marshal(map[string]any{
			"type": "block_actions", "user": map[string]string{"id": user, "name": "user-" + user},
			"channel": map[string]string{"id": "C123"},
			"actions": []map[string]string{{"type": "button", "action_id": button.ActionID, "block_id": "vigil_decision", "value": button.Value}},
		})
		body := url.Values{"payload": {string(payload)}}.Encode()
		ts := strconv.FormatInt(at.Unix(), 10)
		m := hmac.New(sha256.New, []byte(secret))
		m.Write([]byte("v0:" + ts + ":" + body))
		req, _ := http.NewRequest(http.MethodPost, callbackURL, bytes.NewReader([]byte(body)))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("X-Slack-Request-Timestamp", ts)
		req.Header.Set("X-Slack-Signature", "v0="+hex.EncodeToString(m.Sum(nil)))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}

	held := psql("ALTER TABLE t DROP COLUMN c")
	var msg slack.Message
	select {
	case msg = <-feed:
	case out := <-held:
		t.Fatalf("psql ended before Slack was posted to: %s", out)
	case <-time.After(10 * time.Second):
		t.Fatal("slacktest got no message")
	}
	if msg.Channel != "C123" || len(msg.Blocks.BlockSet) != 2 {
		t.Fatalf("message %+v", msg)
	}
	if s, ok := msg.Blocks.BlockSet[0].(*slack.SectionBlock); !ok || !strings.Contains(s.Text.Text, "ALTER TABLE t DROP COLUMN c") || !strings.Contains(s.Text.Text, "held-ddl") {
		t.Errorf("message section %+v", msg.Blocks.BlockSet[0])
	}
	actions, ok := msg.Blocks.BlockSet[1].(*slack.ActionBlock)
	if !ok || len(actions.Elements.ElementSet) != 2 {
		t.Fatalf("message actions %+v", msg.Blocks.BlockSet[1])
	}
	approve, _ := actions.Elements.ElementSet[0].(*slack.ButtonBlockElement)
	deny, _ := actions.Elements.ElementSet[1].(*slack.ButtonBlockElement)
	if approve == nil || deny == nil || approve.ActionID != approval.SlackActionApprove || deny.ActionID != approval.SlackActionDeny ||
		!strings.HasPrefix(approve.Value, "ap-") || deny.Value != approve.Value || approve.Text.Text != "Approve" || deny.Text.Text != "Deny" {
		t.Fatalf("buttons %+v %+v", actions.Elements.ElementSet[0], actions.Elements.ElementSet[1])
	}
	id := approve.Value
	for _, tc := range []struct {
		name   string
		button *slack.ButtonBlockElement
		user   string
		at     time.Time
		secret string
		want   int
	}{
		{"bad signature", approve, "U1", time.Now(), "not-the-secret", http.StatusUnauthorized},
		{"old timestamp", approve, "U1", time.Now().Add(-10 * time.Minute), signing, http.StatusUnauthorized},
		{"unmapped Slack user", approve, "U9", time.Now(), signing, http.StatusForbidden},
		{"not an approver", approve, "U2", time.Now(), signing, http.StatusForbidden},
		{"approver", approve, "U1", time.Now(), signing, http.StatusOK},
		{"too late", deny, "U1", time.Now(), signing, http.StatusConflict},
	} {
		if code := click(tc.button, tc.user, tc.at, tc.secret); code != tc.want {
			t.Errorf("%s: HTTP %d, want %d", tc.name, code, tc.want)
		}
	}
	select {
	case out := <-held:
		if !strings.Contains(out, "exit: <nil>") || !strings.Contains(out, "held for approval "+id) {
			t.Errorf("approved statement: %s", out)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("the approved statement did not complete")
	}
	if out, err := srv.Psql("postgres", "SELECT string_agg(column_name, ',') FROM information_schema.columns WHERE table_name = 't'"); err != nil || strings.TrimSpace(out) != "a" {
		t.Errorf("t has columns %q (%v) after the approved drop, want a", out, err)
	}
	metrics := scrape(t, metricsAddr)
	for _, want := range []string{
		`vigil_approval_callbacks_total{channel="slack",result="accepted"} 1`,
		`vigil_approval_callbacks_total{channel="slack",result="refused"} 2`,
		`vigil_approval_callbacks_total{channel="slack",result="failed"} 3`,
		`vigil_approval_notify_failures_total{channel="slack"} 0`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %s:\n%s", want, grepLines(metrics, "vigil_approval"))
		}
	}
	agent.wait(t)

	// Slack is unreachable: the client hears of it, the hold still ends by itself.
	slackSrv.Stop()
	agent, metricsAddr = start(slackSrv.GetAPIURL())
	began := time.Now()
	out := <-psql("ALTER TABLE v ADD COLUMN x int")
	if !strings.Contains(out, "the approval could not be requested") || !strings.Contains(out, "57014") || strings.Contains(out, token) {
		t.Errorf("held statement with Slack unreachable: %s", out)
	}
	if took := time.Since(began); took > 10*time.Second {
		t.Errorf("the 3s hold took %v", took)
	}
	if m := scrape(t, metricsAddr); !strings.Contains(m, `vigil_approval_notify_failures_total{channel="slack"} 1`) {
		t.Errorf("metrics lack the notify failure:\n%s", grepLines(m, "vigil_approval"))
	}
	agent.wait(t)

	trail, err := vigil(t, context.Background(), "events", "--store", storeURL, "--json")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(trail, token) || strings.Contains(trail, signing) {
		t.Error("the Slack token or signing secret is in the trail")
	}
	all := approvalSteps(t, trail)
	for _, want := range []string{
		id + " notified: through slack",
		id + " refused: callback through slack from 127.0.0.1:",
		approval.ErrBadSignature.Error(),
		approval.ErrStaleTimestamp.Error(),
		id + " refused: callback through slack: Slack user U9 (user-U9) is not mapped to an approver",
		id + " refused: approval by mallory@example.com: " + approval.ErrNotApprover.Error(),
		id + " approved: by alice@dba.example.com: through Slack as U1 (1 of 1): granted",
		id + " executed: use 1 of 1",
		"unnotified: slack: chat.postMessage: ",
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

func scrape(t *testing.T, addr string) string {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}
