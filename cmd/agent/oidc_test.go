package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vigil-db/vigil/internal/testoidc"
	"github.com/vigil-db/vigil/internal/testpg"
	"github.com/vigil-db/vigil/pkg/oidcauth"
	"github.com/vigil-db/vigil/pkg/policy"
)

// TestProxyOIDC: people log in to a proxy with auth: oidc with the ID token a real OIDC
// provider (Hydra) issued them as their password, from psql unchanged. Each group's
// sessions run as its upstream role, every event carries the person's identity, a group
// rule blocks one group and not the other, forged and expired tokens are refused, a session
// ends when its token expires, and no token reaches the trail.
func TestProxyOIDC(t *testing.T) {
	idp := testoidc.Start(t)
	client := idp.NewClient(t, testoidc.ClientOptions{})
	srv := testpg.Start(t)
	if _, err := srv.Psql("postgres", "CREATE TABLE accounts (id int, balance int); INSERT INTO accounts VALUES (1, 100)"); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	proxyPort, err := testpg.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	pwFile := filepath.Join(dir, "md5.pw")
	if err := os.WriteFile(pwFile, []byte(srv.Password+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("VIGIL_TEST_DBA_PW", srv.Password)
	cfgPath := filepath.Join(dir, "vigil.yaml")
	cfg := fmt.Sprintf(`proxies:
  - listen: 127.0.0.1:%d
    upstream: %s
    auth: oidc
    oidc:
      issuer: %s
      client_id: %s
      clock_skew: -1s
      roles:
        - {group: dba, user: vigil_scram, password_env: VIGIL_TEST_DBA_PW}
        - {group: analysts, user: vigil_md5, password_file: %s}
`, proxyPort, srv.Addr(), idp.Issuer, client.ID, pwFile)
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	pol := filepath.Join(dir, "policy.yaml")
	rule := `
  - name: analysts-no-accounts
    match: {groups: [analysts], tables: [accounts]}
    action: block
    message: analysts read reports, not accounts
`
	if err := os.WriteFile(pol, []byte(strings.Replace(string(policy.DefaultYAML()), "\nrules:\n", "\nrules:\n"+rule, 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	storeURL := "local:" + filepath.Join(dir, "events")
	agent := startRun(t, "--no-capture", "--config", cfgPath, "--policy", pol, "--store", storeURL,
		"--state-dir", filepath.Join(dir, "state"), "--metrics", "127.0.0.1:0", "--log-level", "warn")
	waitListening(t, fmt.Sprintf("127.0.0.1:%d", proxyPort), agent.done)

	psql := func(user, token, sql string) (string, error) {
		cmd := exec.Command("psql", "-X", "-q", "-A", "-t", "-h", "127.0.0.1", "-p", strconv.Itoa(proxyPort), "-d", "postgres", "-c", sql)
		cmd.Env = append(os.Environ(), "PGSSLMODE=disable", "PGUSER="+user, "PGPASSWORD="+token)
		out, err := cmd.CombinedOutput()
		return strings.TrimSpace(string(out)), err
	}
	ana := idp.IDToken(t, client, testoidc.User{Subject: "ana", Email: "ana@example.com", Groups: []string{"dba"}})
	bob := idp.IDToken(t, client, testoidc.User{Subject: "bob", Email: "bob@example.com", Groups: []string{"analysts"}})
	eve := idp.IDToken(t, client, testoidc.User{Subject: "eve", Email: "eve@example.com", Groups: []string{"sales"}})
	tokens := []string{ana, bob, eve}

	if out, err := psql("ana@example.com", ana, "SELECT current_user || ' ' || balance FROM accounts /* ana */"); err != nil || out != "vigil_scram 100" {
		t.Errorf("dba through the proxy: %v %q, want vigil_scram 100", err, out)
	}
	if out, err := psql("bob@example.com", bob, "SELECT balance FROM accounts /* bob */"); err == nil || !strings.Contains(out, "analysts-no-accounts") {
		t.Errorf("analyst reading accounts: %v %q, want the group rule's refusal", err, out)
	}
	if out, err := psql("bob@example.com", bob, "SELECT current_user /* bob-ok */"); err != nil || out != "vigil_md5" {
		t.Errorf("analyst: %v %q, want vigil_md5", err, out)
	}
	forged := ana[:len(ana)-6] + strings.Repeat("A", 6)
	for name, tc := range map[string]struct{ token, want string }{
		"forged":      {forged, "signature"},
		"no role":     {eve, "none of your groups"},
		"not a token": {srv.Password, "not a valid ID token"},
	} {
		if out, err := psql("x", tc.token, "SELECT 1"); err == nil || !strings.Contains(out, "OIDC authentication failed") || !strings.Contains(out, tc.want) {
			t.Errorf("%s: %v %q, want a refusal saying %q", name, err, out, tc.want)
		}
	}

	// A token that expires during a session ends it; then it opens none.
	idp.SetIDTokenLifespan(t, client, 3*time.Second)
	short := idp.IDToken(t, client, testoidc.User{Subject: "ana", Email: "ana@example.com", Groups: []string{"dba"}})
	tokens = append(tokens, short)
	start := time.Now()
	if out, err := psql("ana", short, "SELECT pg_sleep(10)"); err == nil || !strings.Contains(out, "token of this session expired") {
		t.Errorf("session past its token's expiry: %v %q, want it ended", err, out)
	}
	if d := time.Since(start); d > 8*time.Second {
		t.Errorf("the session lasted %v after its 3s token", d)
	}
	if out, err := psql("ana", short, "SELECT 1"); err == nil || !strings.Contains(out, "expired") {
		t.Errorf("expired token: %v %q, want a refusal", err, out)
	}

	time.Sleep(300 * time.Millisecond)
	agent.wait(t)
	out, err := vigil(t, context.Background(), "events", "--store", storeURL, "--json")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`"identity":{"issuer":"` + idp.Issuer + `","subject":"ana","email":"ana@example.com","groups":["dba"]}`,
		`"identity":{"issuer":"` + idp.Issuer + `","subject":"bob","email":"bob@example.com","groups":["analysts"]}`,
		`"rule":"analysts-no-accounts"`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("the trail lacks %s:\n%s", want, out)
		}
	}
	for _, line := range strings.Split(out, "\n") {
		if strings.Contains(line, "/* ana */") && !strings.Contains(line, `"subject":"ana"`) {
			t.Errorf("ana's statement without her identity: %s", line)
		}
	}
	for _, secret := range append(tokens, srv.Password) {
		if strings.Contains(out, secret) {
			t.Errorf("a token or password is in the trail")
		}
	}
}

// fakeBrowser sets $BROWSER to a script that records the address it is asked to open, and
// returns a function that waits for that address.
func fakeBrowser(t *testing.T) func() string {
	dir := t.TempDir()
	opened := filepath.Join(dir, "opened-url")
	browser := filepath.Join(dir, "browser")
	if err := os.WriteFile(browser, []byte("#!/bin/sh\nprintf '%s' \"$1\" > "+opened+".tmp && mv "+opened+".tmp "+opened+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("BROWSER", browser)
	return func() string {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			if b, _ := os.ReadFile(opened); len(b) > 0 {
				return string(b)
			}
		}
		t.Fatal("vigil login opened no browser")
		return ""
	}
}

// TestLogin: `vigil login` logs a person in through the browser flow (PKCE, loopback
// redirect) with a real provider, caches the ID token for the user alone, and --print-env
// prints it for psql — refreshing it once it has expired.
func TestLogin(t *testing.T) {
	idp := testoidc.Start(t)
	client := idp.NewClient(t, testoidc.ClientOptions{Public: true, IDTokenLifespan: 12 * time.Second})
	dir := t.TempDir()
	t.Setenv("XDG_CACHE_HOME", filepath.Join(dir, "cache"))
	openedURL := fakeBrowser(t)

	done := make(chan error, 1)
	go func() {
		_, err := vigil(t, context.Background(), "login", "--issuer", idp.Issuer, "--client-id", client.ID, "--scope", "offline_access")
		done <- err
	}()
	back, err := idp.Authorize(openedURL(), testoidc.User{Subject: "ana", Email: "ana@example.com", Groups: []string{"dba"}})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(back.String(), "http://127.0.0.1:") {
		t.Fatalf("redirected to %s, want the loopback callback", back.Redacted())
	}
	resp, err := http.Get(back.String()) // the browser follows the last redirect
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	cache := filepath.Join(dir, "cache", "vigil", "login.json")
	for path, mode := range map[string]os.FileMode{cache: 0o600, filepath.Dir(cache): 0o700 | os.ModeDir} {
		if fi, err := os.Stat(path); err != nil || fi.Mode() != mode {
			t.Errorf("%s: %v, mode %v, want %v", path, err, fi.Mode(), mode)
		}
	}

	v, err := oidcauth.New(oidcauth.Config{Issuer: idp.Issuer, ClientID: client.ID, ClockSkew: -1, Roles: []oidcauth.Role{{Group: "dba", User: "u"}}})
	if err != nil {
		t.Fatal(err)
	}
	printEnv := func() (user, token string) {
		t.Helper()
		out, err := vigil(t, context.Background(), "login", "--print-env")
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
			k, val, _ := strings.Cut(strings.TrimPrefix(line, "export "), "=")
			val = strings.Trim(val, "'")
			switch k {
			case "PGUSER":
				user = val
			case "PGPASSWORD":
				token = val
			default:
				t.Errorf("--print-env printed %q", line)
			}
		}
		return user, token
	}
	user, first := printEnv()
	l, err := v.Verify(context.Background(), first)
	if user != "ana@example.com" || err != nil || l.Identity.Subject != "ana" {
		t.Fatalf("--print-env: user %q, token verifies: %v", user, err)
	}
	if _, again := printEnv(); again != first {
		t.Error("--print-env did not reuse the cached token")
	}
	time.Sleep(time.Until(l.Expires) - 4*time.Second) // about to expire: too late to connect with it
	_, second := printEnv()
	if second == first {
		t.Fatal("--print-env printed the expiring token")
	}
	if _, err := v.Verify(context.Background(), second); err != nil {
		t.Errorf("the refreshed token: %v", err)
	}

	// Hydra offers no device authorization endpoint: --device says so instead of hanging.
	if _, err := vigil(t, context.Background(), "login", "--device", "--issuer", idp.Issuer, "--client-id", client.ID); err == nil ||
		!strings.Contains(err.Error(), "offers no device authorization endpoint") {
		t.Errorf("--device against a provider without the device flow: %v", err)
	}
}

// TestLoginDevice: `vigil login --device` runs the device authorization grant with a real
// provider: the person approves on another device, and --print-env prints the ID token.
// This provider puts no email in its ID tokens (only in userinfo), so PGUSER is the subject.
func TestLoginDevice(t *testing.T) {
	idp := testoidc.StartDevice(t)
	t.Setenv("XDG_CACHE_HOME", t.TempDir())
	t.Setenv("VIGIL_TEST_CLIENT_SECRET", idp.Secret)
	openedURL := fakeBrowser(t)
	type result struct {
		out string
		err error
	}
	done := make(chan result, 1)
	go func() {
		out, err := vigil(t, context.Background(), "login", "--device", "--print-env", "--issuer", idp.Issuer,
			"--client-id", idp.ClientID, "--client-secret-env", "VIGIL_TEST_CLIENT_SECRET")
		done <- result{out, err}
	}()
	if err := idp.Approve(openedURL()); err != nil {
		t.Fatal(err)
	}
	var r result
	select {
	case r = <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("vigil login --device did not finish 30s after the approval")
	}
	if r.err != nil {
		t.Fatal(r.err)
	}
	if !strings.HasPrefix(r.out, "export PGUSER='"+idp.Username+"'\nexport PGPASSWORD='") {
		t.Errorf("--print-env printed %q, want PGUSER=%s", r.out, idp.Username)
	}
	_, tok, _ := strings.Cut(r.out, "export PGPASSWORD='")
	tok, _, _ = strings.Cut(tok, "'")
	v, err := oidcauth.New(oidcauth.Config{Issuer: idp.Issuer, ClientID: idp.ClientID, Roles: []oidcauth.Role{{Group: "*", User: "u"}}})
	if err != nil {
		t.Fatal(err)
	}
	if l, err := v.Verify(context.Background(), tok); err != nil || l.Identity.Subject != idp.Username {
		t.Errorf("the device flow's token: %v, %+v", err, l)
	}
}
