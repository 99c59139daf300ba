package approval

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"html"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/coreos/go-oidc/v3/oidc/oidctest"
)

// idp is an identity provider for the page's tests: go-oidc's oidctest serves discovery and
// keys; the authorization and token endpoints are here, with PKCE checked, so that a test
// can alter what the ID token says.
type idp struct {
	t      *testing.T
	srv    *httptest.Server
	key    *rsa.PrivateKey
	client string
	secret string

	mu sync.Mutex
	// claims are the next login's person; tamper, if set, alters the ID token's claims.
	claims map[string]any
	tamper func(map[string]any)
	codes  map[string]url.Values
}

func newIdP(t *testing.T) *idp {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	p := &idp{t: t, key: key, client: "vigil-page", secret: "page-client-secret-7f3e", codes: map[string]url.Values{}}
	keys := &oidctest.Server{PublicKeys: []oidctest.PublicKey{{PublicKey: key.Public(), KeyID: "k1", Algorithm: oidc.RS256}}}
	mux := http.NewServeMux()
	mux.Handle("/", keys)
	mux.HandleFunc("/auth", p.auth)
	mux.HandleFunc("/token", p.token)
	p.srv = httptest.NewServer(mux)
	t.Cleanup(p.srv.Close)
	keys.SetIssuer(p.srv.URL)
	return p
}

func (p *idp) login(claims map[string]any, tamper func(map[string]any)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.claims, p.tamper = claims, tamper
}

// auth logs the configured person in at once and sends the browser back with a code.
func (p *idp) auth(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if q.Get("client_id") != p.client || q.Get("response_type") != "code" || q.Get("code_challenge_method") != "S256" || q.Get("code_challenge") == "" || q.Get("nonce") == "" || q.Get("state") == "" {
		http.Error(w, "bad authorization request: "+q.Encode(), http.StatusBadRequest)
		return
	}
	code := random()
	p.mu.Lock()
	p.codes[code] = q
	p.mu.Unlock()
	back, _ := url.Parse(q.Get("redirect_uri"))
	back.RawQuery = url.Values{"code": {code}, "state": {q.Get("state")}}.Encode()
	http.Redirect(w, r, back.String(), http.StatusFound)
}

func (p *idp) token(w http.ResponseWriter, r *http.Request) {
	id, secret, _ := r.BasicAuth()
	_ = r.ParseForm()
	p.mu.Lock()
	q, ok := p.codes[r.PostForm.Get("code")]
	delete(p.codes, r.PostForm.Get("code"))
	claims := map[string]any{"iss": p.srv.URL, "aud": p.client, "iat": time.Now().Unix(), "exp": time.Now().Add(time.Hour).Unix()}
	for k, v := range p.claims {
		claims[k] = v
	}
	tamper := p.tamper
	p.mu.Unlock()
	sum := sha256.Sum256([]byte(r.PostForm.Get("code_verifier")))
	switch {
	case id != p.client || secret != p.secret:
		http.Error(w, `{"error":"invalid_client"}`, http.StatusUnauthorized)
		return
	case !ok || q.Get("redirect_uri") != r.PostForm.Get("redirect_uri"):
		http.Error(w, `{"error":"invalid_grant"}`, http.StatusBadRequest)
		return
	case base64.RawURLEncoding.EncodeToString(sum[:]) != q.Get("code_challenge"):
		http.Error(w, `{"error":"invalid_grant","error_description":"PKCE"}`, http.StatusBadRequest)
		return
	}
	claims["nonce"] = q.Get("nonce")
	if tamper != nil {
		tamper(claims)
	}
	b, _ := json.Marshal(claims)
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"access_token": "at-" + random(), "token_type": "Bearer", "expires_in": 3600,
		"id_token": oidctest.SignIDToken(p.key, "k1", oidc.RS256, string(b))})
}

type pageFixture struct {
	s       *Store
	ev      *events
	idp     *idp
	srv     *httptest.Server
	mu      sync.Mutex
	results []string
}

func newPageFixture(t *testing.T) *pageFixture {
	f := &pageFixture{ev: &events{}, idp: newIdP(t)}
	s, err := Open(Options{Dir: t.TempDir(), Key: newKey(t), Sink: f.ev,
		Authorize: func(approvers []string, a Approver) bool {
			return slices.Contains(approvers, a.Email) || slices.ContainsFunc(a.Groups, func(g string) bool { return slices.Contains(approvers, "group:"+g) })
		}})
	if err != nil {
		t.Fatal(err)
	}
	f.s = s
	mux := http.NewServeMux()
	f.srv = httptest.NewServer(mux)
	t.Cleanup(f.srv.Close)
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	web, err := NewWeb(WebOptions{Store: s, Issuer: f.idp.srv.URL, ClientID: f.idp.client, ClientSecret: f.idp.secret,
		RedirectURL: f.srv.URL + "/approvals/callback", Scopes: []string{"email"}, BaseURL: f.srv.URL, Key: key,
		Count: func(r string) { f.mu.Lock(); f.results = append(f.results, r); f.mu.Unlock() }})
	if err != nil {
		t.Fatal(err)
	}
	mux.Handle("/approvals", web)
	mux.Handle("/approvals/", web)
	return f
}

func (f *pageFixture) counted() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.results)
}

// browser logs in as claims (altered by tamper) and returns the client, the page it
// landed on and its status.
func (f *pageFixture) browser(t *testing.T, claims map[string]any, tamper func(map[string]any)) (*http.Client, int, string) {
	t.Helper()
	f.idp.login(claims, tamper)
	jar, _ := cookiejar.New(nil)
	hc := &http.Client{Jar: jar, Timeout: 10 * time.Second}
	resp, err := hc.Get(f.srv.URL + "/approvals")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return hc, resp.StatusCode, string(b) // escaped, as the browser gets it
}

var csrfField = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

func (f *pageFixture) post(t *testing.T, hc *http.Client, form url.Values, header map[string]string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, f.srv.URL+"/approvals/decide", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, html.UnescapeString(string(b))
}

var (
	alice = map[string]any{"sub": "alice", "email": "alice@example.com", "email_verified": true}
	dave  = map[string]any{"sub": "dave", "email": "dave@example.com", "email_verified": true, "groups": []string{"dba"}}
)

// TestWebPage: after an OIDC login the page lists the pending requests, every field
// escaped; a POST decides only with the session, the session's CSRF token and the page's
// origin, and every other POST is refused (403), counted and recorded on the request; the
// requester cannot approve their own request.
func TestWebPage(t *testing.T) {
	f := newPageFixture(t)
	xss := `SELECT '<script>alert(1)</script>' AS "<img src=x onerror=alert(2)>"`
	r, _, err := f.s.Submit(Statement{Requester: "alice@example.com", DBUser: "app", Database: "prod<b>", Text: xss, Display: xss, Rule: "ddl"},
		Terms{Hold: time.Minute, Approvers: []string{"group:dba", "bob@example.com"}})
	if err != nil {
		t.Fatal(err)
	}
	hc, status, page := f.browser(t, dave, nil)
	if status != http.StatusOK || !strings.Contains(page, r.ID) || !strings.Contains(page, "dave@example.com") {
		t.Fatalf("page after login: %d\n%s", status, page)
	}
	for _, want := range []string{"&lt;script&gt;alert(1)&lt;/script&gt;", "&lt;img src=x onerror=alert(2)&gt;", "prod&lt;b&gt;", "alice@example.com", "database user app", "ddl", "group:dba"} {
		if !strings.Contains(page, want) {
			t.Errorf("page lacks %q", want)
		}
	}
	if strings.Contains(page, "<script>") || strings.Contains(page, "<img") || strings.Contains(page, "prod<b>") {
		t.Errorf("the page carries the statement's markup unescaped:\n%s", page)
	}
	m := csrfField.FindStringSubmatch(page)
	if m == nil {
		t.Fatal("no CSRF token in the page")
	}
	csrf := m[1]
	origin := map[string]string{"Origin": f.srv.URL}
	form := func(csrf string) url.Values {
		return url.Values{"id": {r.ID}, "decision": {"approve"}, "reason": {"checked the migration"}, "csrf": {csrf}}
	}
	anon := &http.Client{Timeout: 10 * time.Second}
	for _, tc := range []struct {
		name   string
		hc     *http.Client
		form   url.Values
		header map[string]string
		want   string
	}{
		{"no session", anon, form(csrf), origin, "no session"},
		{"no CSRF token", hc, form(""), origin, "the form lacks the session's CSRF token"},
		{"another session's CSRF token", hc, form(strings.Repeat("A", len(csrf))), origin, "the form lacks the session's CSRF token"},
		{"foreign Origin", hc, form(csrf), map[string]string{"Origin": "http://evil.example.com"}, `origin "http://evil.example.com" is not the page's`},
		{"foreign Referer", hc, form(csrf), map[string]string{"Referer": "http://evil.example.com/x"}, `referer origin "http://evil.example.com" is not the page's`},
		{"no Origin or Referer", hc, form(csrf), nil, "the request names no origin"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if code, body := f.post(t, tc.hc, tc.form, tc.header); code != http.StatusForbidden || !strings.Contains(body, tc.want) {
				t.Errorf("HTTP %d, want 403 saying %q:\n%s", code, tc.want, body)
			}
			if !slices.ContainsFunc(f.ev.details(), func(d string) bool {
				return strings.Contains(d, "refused: callback through web from 127.0.0.1:") && strings.Contains(d, tc.want)
			}) {
				t.Errorf("no refused step saying %q in %q", tc.want, f.ev.details())
			}
		})
	}
	if got, _ := f.s.Get(r.ID); got.Status != StatusPending {
		t.Fatalf("after refused POSTs the request is %s", got.Status)
	}

	// The requester logs in too: they see that the request is theirs and cannot approve it.
	ahc, _, apage := f.browser(t, alice, nil)
	if !strings.Contains(apage, "(you: you may deny it, not approve it)") {
		t.Errorf("the requester's page does not say the request is theirs")
	}
	am := csrfField.FindStringSubmatch(apage)
	if code, body := f.post(t, ahc, form(am[1]), origin); code != http.StatusForbidden || !strings.Contains(body, ErrSelfApproval.Error()) {
		t.Errorf("self-approval: HTTP %d:\n%s", code, body)
	}

	// The approver, through the page's own form (Referer only, as some browsers send).
	code, body := f.post(t, hc, form(csrf), map[string]string{"Referer": f.srv.URL + "/approvals"})
	if code != http.StatusOK || !strings.Contains(body, r.ID+": approved") || !strings.Contains(body, "No request is pending") {
		t.Fatalf("approval: HTTP %d:\n%s", code, body)
	}
	if got, _ := f.s.Get(r.ID); got.Status != StatusApproved || got.Approvals[0].By != "dave@example.com" || got.Approvals[0].Reason != "checked the migration (through the approval page)" {
		t.Errorf("approved request %+v", got)
	}
	if code, body := f.post(t, hc, url.Values{"id": {r.ID}, "decision": {"deny"}, "csrf": {csrf}}, origin); code != http.StatusConflict {
		t.Errorf("deny after approval: HTTP %d:\n%s", code, body)
	}
	// A denial, with its reason.
	r2, _, err := f.s.Submit(Statement{Requester: "alice@example.com", Database: "prod", Text: "DROP TABLE t", Display: "DROP TABLE t", Rule: "ddl"},
		Terms{Hold: time.Minute, Approvers: []string{"group:dba"}})
	if err != nil {
		t.Fatal(err)
	}
	if code, body := f.post(t, hc, url.Values{"id": {r2.ID}, "decision": {"deny"}, "reason": {"not during business hours"}, "csrf": {csrf}}, origin); code != http.StatusOK || !strings.Contains(body, r2.ID+": denied") {
		t.Errorf("denial: HTTP %d:\n%s", code, body)
	}
	if got, _ := f.s.Get(r2.ID); got.Status != StatusDenied || got.Denial == nil || got.Denial.Reason != "not during business hours (through the approval page)" {
		t.Errorf("denied request %+v", got)
	}
	want := []string{"accepted", "refused", "refused", "refused", "refused", "refused", "refused", "accepted", "failed", "accepted", "failed", "accepted"}
	if got := f.counted(); !slices.Equal(got, want) {
		t.Errorf("counted %q, want %q", got, want)
	}
	for _, d := range f.ev.details() {
		if strings.Contains(d, csrf) || strings.Contains(d, f.idp.secret) {
			t.Errorf("a secret in the trail: %s", d)
		}
	}
}

// TestWebLoginRefusals: a login whose ID token fails any check leaves no session.
func TestWebLoginRefusals(t *testing.T) {
	f := newPageFixture(t)
	for _, tc := range []struct {
		name   string
		claims map[string]any
		tamper func(map[string]any)
		want   string
	}{
		{"other nonce", dave, func(c map[string]any) { c["nonce"] = "replayed" }, "nonce does not match"},
		{"other audience", dave, func(c map[string]any) { c["aud"] = "another-client" }, "failed verification"},
		{"other issuer", dave, func(c map[string]any) { c["iss"] = "https://evil.example.com" }, "failed verification"},
		{"expired", dave, func(c map[string]any) { c["exp"] = time.Now().Add(-time.Minute).Unix() }, "failed verification"},
		{"no email", map[string]any{"sub": "x"}, nil, "no verified email"},
		{"unverified email", map[string]any{"sub": "x", "email": "x@example.com", "email_verified": false}, nil, "no verified email"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hc, code, body := f.browser(t, tc.claims, tc.tamper)
			if code != http.StatusForbidden || !strings.Contains(body, tc.want) {
				t.Errorf("HTTP %d, want 403 saying %q:\n%s", code, tc.want, body)
			}
			u, _ := url.Parse(f.srv.URL + "/approvals")
			for _, c := range hc.Jar.Cookies(u) {
				if c.Name == webSessionCookie {
					t.Errorf("a session cookie after a refused login")
				}
			}
			if !slices.ContainsFunc(f.ev.details(), func(d string) bool {
				return strings.Contains(d, "refused: login to the approval page") && strings.Contains(d, tc.want)
			}) {
				t.Errorf("no refused step in %q", f.ev.details())
			}
		})
	}
	// A callback this browser did not start, or with another state.
	hc := &http.Client{Timeout: 10 * time.Second}
	resp, err := hc.Get(f.srv.URL + "/approvals/callback?code=x&state=y")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("callback without a login: HTTP %d", resp.StatusCode)
	}
}

// TestWebSessionCookie: the session cookie is HttpOnly, SameSite, lasts no longer than the
// ID token, and an altered one is not a session.
func TestWebSessionCookie(t *testing.T) {
	f := newPageFixture(t)
	exp := time.Now().Add(90 * time.Second)
	f.idp.login(dave, func(c map[string]any) { c["exp"] = exp.Unix() })
	hc := &http.Client{Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	jar, _ := cookiejar.New(nil)
	hc.Jar = jar
	next := f.srv.URL + "/approvals"
	var session *http.Cookie
	for range 6 {
		resp, err := hc.Get(next)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		for _, c := range resp.Cookies() {
			if c.Name == webSessionCookie {
				session = c
			}
		}
		loc, err := resp.Location()
		if err != nil {
			break
		}
		next = loc.String()
	}
	if session == nil {
		t.Fatal("no session cookie set")
	}
	if !session.HttpOnly || session.SameSite != http.SameSiteLaxMode || session.Path != "/approvals" || session.MaxAge <= 0 || session.MaxAge > 90 {
		t.Errorf("session cookie %+v", session)
	}
	payload, _, _ := strings.Cut(session.Value, ".")
	b, _ := base64.RawURLEncoding.DecodeString(payload)
	var s webSession
	if err := json.Unmarshal(b, &s); err != nil || s.Expires > exp.Unix() {
		t.Errorf("session %+v (%v) outlives the ID token's %d", s, err, exp.Unix())
	}
	// The same session, claiming another person.
	s.Email = "root@example.com"
	forged, _ := json.Marshal(s)
	req, _ := http.NewRequest(http.MethodGet, f.srv.URL+"/approvals", nil)
	req.AddCookie(&http.Cookie{Name: webSessionCookie, Value: base64.RawURLEncoding.EncodeToString(forged) + "." + strings.SplitN(session.Value, ".", 2)[1]})
	resp, err := (&http.Client{CheckRedirect: hc.CheckRedirect}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther || !strings.HasSuffix(fmt.Sprint(resp.Header.Get("Location")), "/approvals/login") {
		t.Errorf("an altered session cookie: HTTP %d to %s", resp.StatusCode, resp.Header.Get("Location"))
	}
}

// TestWebSecureCookies: behind an https callback_url the page's cookies are Secure, and
// scoped to the page's path under the URL's.
func TestWebSecureCookies(t *testing.T) {
	f := newPageFixture(t)
	web, err := NewWeb(WebOptions{Store: f.s, Issuer: f.idp.srv.URL, ClientID: f.idp.client, ClientSecret: f.idp.secret,
		RedirectURL: "https://vigil.example.com/db1/approvals/callback", BaseURL: "https://vigil.example.com/db1/", Key: make([]byte, 32)})
	if err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	web.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/approvals/login", nil))
	cookies := rec.Result().Cookies()
	if rec.Code != http.StatusSeeOther || len(cookies) != 1 {
		t.Fatalf("login: HTTP %d, cookies %v", rec.Code, cookies)
	}
	if c := cookies[0]; c.Name != webLoginCookie || !c.Secure || !c.HttpOnly || c.Path != "/db1/approvals" || c.SameSite != http.SameSiteLaxMode {
		t.Errorf("login cookie %+v", c)
	}
	loc, _ := url.Parse(rec.Header().Get("Location"))
	if q := loc.Query(); q.Get("redirect_uri") != "https://vigil.example.com/db1/approvals/callback" || q.Get("code_challenge_method") != "S256" || q.Get("nonce") == "" || q.Get("state") == "" {
		t.Errorf("authorization request %s", loc)
	}
	if _, err := NewWeb(WebOptions{Store: f.s, Issuer: f.idp.srv.URL, ClientID: "c", RedirectURL: "https://x/approvals/callback", BaseURL: "https://x", Key: []byte("short")}); err == nil {
		t.Error("a short cookie key accepted")
	}
}
