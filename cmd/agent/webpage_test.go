package main

import (
	"context"
	"encoding/json"
	"fmt"
	"html"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"github.com/vigil-db/vigil/internal/testenv"
	"github.com/vigil-db/vigil/internal/testoidc"
	"github.com/vigil-db/vigil/internal/testpg"
	"github.com/vigil-db/vigil/pkg/approval"
)

// TestApprovalPageEndToEnd: a statement that psql sends through the proxy (as a person
// logged in with OIDC) is held; in Chromium, the requester logs in to the approval page
// through the issuer (Hydra), sees the request as theirs and cannot approve it; an
// approver logs in, sees it, and a form another site serves in the same browser (with the
// approver's session and even the page's CSRF token) is refused, as is a POST with the
// session but no CSRF token; the approver's Approve, with a reason, lets the held
// statement complete. Every refusal is counted and in the trail, and no secret is.
// VIGIL_SCREENSHOT=path saves the page with the pending request as a PNG.
func TestApprovalPageEndToEnd(t *testing.T) {
	chromium := testenv.Chromium(t)
	idp := testoidc.Start(t)
	srv := testpg.Start(t)
	if _, err := srv.Psql("postgres", "CREATE TABLE t (a int, c int)"); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	proxyPort, err := testpg.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	callbackPort, err := testpg.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	base := fmt.Sprintf("http://127.0.0.1:%d", callbackPort)
	psqlClient := idp.NewClient(t, testoidc.ClientOptions{})
	page := idp.NewClient(t, testoidc.ClientOptions{RedirectURI: base + "/approvals/callback"})
	t.Setenv("VIGIL_TEST_PAGE_SECRET", page.Secret)
	t.Setenv("VIGIL_TEST_DBA_PW", srv.Password)
	cfgPath := filepath.Join(dir, "vigil.yaml")
	if err := os.WriteFile(cfgPath, fmt.Appendf(nil, `proxies:
  - listen: 127.0.0.1:%d
    upstream: %s
    auth: oidc
    oidc:
      issuer: %s
      client_id: %s
      roles: [{group: dba, user: vigil_scram, password_env: VIGIL_TEST_DBA_PW}]
approvals:
  callback_listen: 127.0.0.1:%d
  web:
    issuer: %s
    client_id: %s
    client_secret_env: VIGIL_TEST_PAGE_SECRET
`, proxyPort, srv.Addr(), idp.Issuer, psqlClient.ID, callbackPort, idp.Issuer, page.ID), 0o600); err != nil {
		t.Fatal(err)
	}
	policyPath := filepath.Join(dir, "policy.yaml")
	if err := os.WriteFile(policyPath, []byte(`principals:
  dbas: {emails: ["*@dba.example.com"]}
rules:
  - name: held-ddl
    match: {commands: ["ALTER TABLE"], tables: [t]}
    action: require_approval
    approval: {hold: 60s, approvers: [dbas]}
`), 0o644); err != nil {
		t.Fatal(err)
	}
	storeURL := "local:" + filepath.Join(dir, "events")
	state := filepath.Join(dir, "state")
	addrFile := filepath.Join(dir, "metrics-addr")
	agent := startRun(t, "--no-capture", "--config", cfgPath, "--policy", policyPath, "--store", storeURL, "--state-dir", state,
		"--metrics", "127.0.0.1:0", "--metrics-file", addrFile, "--log-level", "warn")
	waitListening(t, fmt.Sprintf("127.0.0.1:%d", proxyPort), agent.done)
	metricsAddr, err := os.ReadFile(addrFile)
	if err != nil {
		t.Fatal(err)
	}

	ana := testoidc.User{Subject: "ana", Email: "ana@dba.example.com", Groups: []string{"dba"}}
	bob := testoidc.User{Subject: "bob", Email: "bob@dba.example.com", Groups: []string{"dba"}}
	token := idp.IDToken(t, psqlClient, ana)
	held := make(chan string, 1)
	go func() {
		cmd := exec.Command("psql", "-X", "-q", "-A", "-t", "-h", "127.0.0.1", "-p", strconv.Itoa(proxyPort), "-d", "postgres", "-c", "ALTER TABLE t DROP COLUMN c")
		cmd.Env = append(os.Environ(), "PGSSLMODE=disable", "PGUSER="+ana.Email, "PGPASSWORD="+token)
		out, err := cmd.CombinedOutput()
		held <- fmt.Sprintf("%s (exit: %v)", out, err)
	}()
	id := pendingRequest(t, state, held)

	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	alloc, cancelAlloc := chromedp.NewExecAllocator(ctx, append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium), chromedp.NoSandbox, chromedp.WindowSize(1100, 760))...)
	defer cancelAlloc()
	browser, cancelBrowser := chromedp.NewContext(alloc)
	defer cancelBrowser()
	if err := chromedp.Do(browser, chromedp.Navigate("about:blank")); err != nil {
		t.Fatalf("starting %s: %v", chromium, err)
	}
	section := chromedp.CSS(`section[id="` + id + `"]`)
	// login opens the page in a browser context of its own (its own cookies), as u.
	login := func(u testoidc.User) context.Context {
		t.Helper()
		tab, cancel := chromedp.NewContext(browser, chromedp.WithNewBrowserContext())
		t.Cleanup(cancel)
		idp.SetBrowserUser(u)
		if err := chromedp.Do(tab, chromedp.Navigate(base+"/approvals"), chromedp.WaitVisible(section)); err != nil {
			t.Fatalf("%s logging in to the approval page: %v", u.Email, err)
		}
		text, err := chromedp.Run(tab, chromedp.Text(chromedp.CSS("header")))
		if err != nil || !strings.Contains(text, u.Email) {
			t.Fatalf("the page's header says %q (%v), want %s", text, err, u.Email)
		}
		return tab
	}
	decide := func(tab context.Context, button, reason string) (string, error) {
		if err := chromedp.Do(tab,
			chromedp.SendKeys(chromedp.CSS(`section[id="`+id+`"] input[name=reason]`), reason),
			chromedp.Click(chromedp.CSS(`section[id="`+id+`"] button[value=`+button+`]`)),
			chromedp.WaitVisible(chromedp.CSS("#notice, #problem")),
		); err != nil {
			return "", err
		}
		return chromedp.Run(tab, chromedp.Text(chromedp.CSS("main")))
	}

	// The requester sees the request as theirs, and cannot approve it.
	anaTab := login(ana)
	text, err := chromedp.Run(anaTab, chromedp.Text(section))
	if err != nil || !strings.Contains(text, "(you: you may deny it, not approve it)") {
		t.Errorf("the requester's view of the request: %q (%v)", text, err)
	}
	if text, err := decide(anaTab, "approve", "I approve myself"); err != nil || !strings.Contains(text, approval.ErrSelfApproval.Error()) {
		t.Errorf("self-approval on the page: %q (%v)", text, err)
	}

	bobTab := login(bob)
	text, err = chromedp.Run(bobTab, chromedp.Text(section))
	for _, want := range []string{ana.Email, "postgres", "ALTER TABLE t DROP COLUMN c", "held-ddl", "1 approver(s) from dbas"} {
		if err != nil || !strings.Contains(text, want) {
			t.Errorf("the pending request on the page lacks %q: %q (%v)", want, text, err)
		}
	}
	if path := os.Getenv("VIGIL_SCREENSHOT"); path != "" {
		png, err := chromedp.Run(bobTab, chromedp.CaptureScreenshot())
		if err == nil {
			err = os.WriteFile(path, png, 0o644)
		}
		if err != nil {
			t.Errorf("screenshot: %v", err)
		}
	}
	csrf, err := chromedp.Run(bobTab, chromedp.AttributeValue(chromedp.CSS(`section[id="`+id+`"] input[name=csrf]`), "value"))
	if err != nil || csrf.Value == "" {
		t.Fatalf("no CSRF token in the page: %v", err)
	}

	// Another site's form, submitted in the approver's browser: the session cookie goes
	// along (the site is the same, the origin is not), and the token does not help.
	evil := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, `<!doctype html><form method="post" action="%s/approvals/decide"><input type="hidden" name="id" value="%s">`+
			`<input type="hidden" name="decision" value="approve"><input type="hidden" name="csrf" value="%s"><button id="prize">Claim your prize</button></form>`,
			base, id, html.EscapeString(csrf.Value))
	}))
	defer evil.Close()
	if err := chromedp.Do(bobTab, chromedp.Navigate(evil.URL), chromedp.Click(chromedp.CSS("#prize")), chromedp.WaitVisible(chromedp.CSS("#message"))); err != nil {
		t.Fatal(err)
	}
	if text, err := chromedp.Run(bobTab, chromedp.Text(chromedp.CSS("#message"))); err != nil || !strings.Contains(text, "is not the page's") {
		t.Errorf("another site's form: %q (%v), want a refusal", text, err)
	}
	// The session without the CSRF token, from the page's origin.
	cookies, err := chromedp.Run(bobTab, func(ctx context.Context, t *chromedp.Target) (network.GetCookiesResult, error) {
		return cdp.Call(ctx, t, network.GetCookies, network.GetCookiesParams{URLs: []string{base + "/approvals"}})
	})
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodPost, base+"/approvals/decide", strings.NewReader(url.Values{"id": {id}, "decision": {"approve"}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", base)
	for _, c := range cookies.Cookies {
		req.AddCookie(&http.Cookie{Name: c.Name, Value: c.Value})
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden || !strings.Contains(html.UnescapeString(string(body)), "the form lacks the session's CSRF token") {
		t.Errorf("a POST without the CSRF token: HTTP %d: %s", resp.StatusCode, body)
	}
	select {
	case out := <-held:
		t.Fatalf("the statement ended before its approval: %s", out)
	default:
	}

	if err := chromedp.Do(bobTab, chromedp.Navigate(base+"/approvals"), chromedp.WaitVisible(section)); err != nil {
		t.Fatal(err)
	}
	if text, err := decide(bobTab, "approve", "reviewed the migration"); err != nil || !strings.Contains(text, id+": approved") {
		t.Errorf("approval on the page: %q (%v)", text, err)
	}
	select {
	case out := <-held:
		if !strings.Contains(out, "exit: <nil>") {
			t.Errorf("the approved statement: %s", out)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the approved statement did not complete")
	}
	if out, err := srv.Psql("postgres", "SELECT string_agg(column_name, ',') FROM information_schema.columns WHERE table_name = 't'"); err != nil || strings.TrimSpace(out) != "a" {
		t.Errorf("t has columns %q (%v) after the approved drop, want a", out, err)
	}
	metrics := scrape(t, strings.TrimSpace(string(metricsAddr)))
	for _, want := range []string{
		// Two logins and the approval; the other site's form and the tokenless POST; the
		// self-approval.
		`vigil_approval_callbacks_total{channel="web",result="accepted"} 3`,
		`vigil_approval_callbacks_total{channel="web",result="refused"} 2`,
		`vigil_approval_callbacks_total{channel="web",result="failed"} 1`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %s:\n%s", want, grepLines(metrics, "vigil_approval_callbacks"))
		}
	}
	cancelBrowser()
	agent.wait(t)

	trail, err := vigil(t, context.Background(), "events", "--store", storeURL, "--json")
	if err != nil {
		t.Fatal(err)
	}
	for _, secret := range []string{page.Secret, token, csrf.Value} {
		if strings.Contains(trail, secret) {
			t.Error("a secret (client secret, token or CSRF token) is in the trail")
		}
	}
	all := approvalSteps(t, trail)
	for _, want := range []string{
		id + " refused: approval by ana@dba.example.com: " + approval.ErrSelfApproval.Error(),
		id + ` refused: callback through web from 127.0.0.1:`,
		`: origin "` + evil.URL + `" is not the page's`,
		": the form lacks the session's CSRF token",
		id + " approved: by bob@dba.example.com: reviewed the migration (through the approval page) (1 of 1): granted",
		id + " executed: use 1 of 1",
	} {
		if !strings.Contains(all, want) {
			t.Errorf("no approval event %q in:\n%s", want, all)
		}
	}
	if out, err := vigil(t, context.Background(), "verify", "--store", storeURL, "--state-dir", state); err != nil {
		t.Errorf("verify: %v %s", err, out)
	}
}

// pendingRequest waits for the agent's first pending request and returns its id.
func pendingRequest(t *testing.T, state string, held <-chan string) string {
	t.Helper()
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		select {
		case out := <-held:
			t.Fatalf("psql ended before its statement was held: %s", out)
		default:
		}
		out, err := vigil(t, context.Background(), "approvals", "list", "--json", "--state-dir", state)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
			var r approval.Request
			if json.Unmarshal([]byte(line), &r) == nil && r.Status == approval.StatusPending {
				return r.ID
			}
		}
	}
	t.Fatal("no pending approval request")
	return ""
}
