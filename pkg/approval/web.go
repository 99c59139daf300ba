package approval

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"
)

// The approval page. The agent's callback listener serves approvers a page at /approvals:
// they log in with the identity provider (the OAuth authorization code flow with PKCE, state
// and nonce; the ID token verified for issuer, audience, expiry and nonce) and decide as the
// email address in their ID token, which the rules' approvers are matched against as any
// channel's approver is. The session is a cookie authenticated with a key of the agent's,
// lasting no longer than the ID token. A browser sends cookies along with requests other
// sites make it send, so every POST must carry, besides the session, the session's CSRF
// token in the form and an Origin (or Referer) of the page's own; anything else is refused
// and recorded on the request it names.

// Cookie names; both are scoped to the page's path.
const (
	webSessionCookie = "vigil_approvals_session"
	webLoginCookie   = "vigil_approvals_login"
)

// Bounds of the page's sessions and inputs.
const (
	// webLoginWindow is how long a login may take at the provider.
	webLoginWindow = 10 * time.Minute
	// webMaxSession caps a session whose ID token lasts longer.
	webMaxSession = 12 * time.Hour
	// webMaxReason bounds a decision's reason, which the trail records.
	webMaxReason = 1000
	// webProviderTimeout bounds each call to the provider: a login's discovery and code
	// exchange together stay within the callback listener's 10 s write timeout.
	webProviderTimeout = 4 * time.Second
)

// WebOptions configure the approval page.
type WebOptions struct {
	Store *Store
	// Issuer, ClientID, ClientSecret, RedirectURL and Scopes are the OAuth client the page
	// logs people in with.
	Issuer, ClientID, ClientSecret, RedirectURL string
	Scopes                                      []string
	// GroupsClaim names the ID token claim listing the person's groups (default "groups").
	GroupsClaim string
	// BaseURL is the callback listener as browsers reach it (approvals.callback_url): POSTs
	// must come from its origin, and https makes the cookies Secure.
	BaseURL string
	// Key authenticates the page's cookies; at least 32 bytes.
	Key []byte
	// Count counts each POST and login by result: accepted, refused (not believed: no
	// session, another origin, no CSRF token, a login that failed verification), failed
	// (believed, deciding nothing). Nil: not counted.
	Count func(result string)
	// Client makes the calls to the provider (nil: http.DefaultClient).
	Client *http.Client
	Logger *slog.Logger
	// Now is the clock (tests); nil: time.Now.
	Now func() time.Time
}

// Web is the approval page, an http.Handler for the paths under /approvals.
type Web struct {
	o      WebOptions
	prefix string // the base URL's path, without a trailing slash
	origin string // scheme://host[:port] of the base URL
	secure bool
	mux    *http.ServeMux

	mu       sync.Mutex
	provider *oidc.Provider // discovered at the first login
}

// NewWeb checks o and returns the page.
func NewWeb(o WebOptions) (*Web, error) {
	if o.Store == nil || o.Issuer == "" || o.ClientID == "" || o.RedirectURL == "" {
		return nil, errors.New("approval page: a store, an issuer, a client id and a redirect URL are required")
	}
	if len(o.Key) < 32 {
		return nil, errors.New("approval page: the cookie key must have at least 32 bytes")
	}
	base, err := url.Parse(o.BaseURL)
	if err != nil || (base.Scheme != "http" && base.Scheme != "https") || base.Host == "" {
		return nil, fmt.Errorf("approval page: base URL %q: want an http:// or https:// URL", o.BaseURL)
	}
	if o.GroupsClaim == "" {
		o.GroupsClaim = "groups"
	}
	if !slices.Contains(o.Scopes, oidc.ScopeOpenID) {
		o.Scopes = append([]string{oidc.ScopeOpenID}, o.Scopes...)
	}
	if o.Client == nil {
		o.Client = http.DefaultClient
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Count == nil {
		o.Count = func(string) {}
	}
	w := &Web{o: o, prefix: strings.TrimSuffix(base.Path, "/"), origin: base.Scheme + "://" + base.Host, secure: base.Scheme == "https", mux: http.NewServeMux()}
	w.mux.HandleFunc("GET /approvals", w.page)
	w.mux.HandleFunc("GET /approvals/login", w.login)
	w.mux.HandleFunc("GET /approvals/callback", w.callback)
	w.mux.HandleFunc("POST /approvals/decide", w.decide)
	w.mux.HandleFunc("POST /approvals/logout", w.logout)
	return w, nil
}

// ServeHTTP implements http.Handler.
func (w *Web) ServeHTTP(rw http.ResponseWriter, r *http.Request) {
	h := rw.Header()
	// Nothing on the page runs or loads from elsewhere, it is never framed, and its
	// responses (pending statements, CSRF tokens) are not cached.
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	h.Set("X-Frame-Options", "DENY")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "same-origin")
	h.Set("Cache-Control", "no-store")
	w.mux.ServeHTTP(rw, r)
}

// webSession is what the session cookie holds.
type webSession struct {
	Email   string   `json:"email"`
	Subject string   `json:"sub"`
	Groups  []string `json:"groups,omitempty"`
	// ID is random per login; the CSRF token is derived from it.
	ID      string `json:"id"`
	Expires int64  `json:"exp"`
}

// webLogin is what the login cookie holds between the redirect to the provider and back.
type webLogin struct {
	State    string `json:"state"`
	Nonce    string `json:"nonce"`
	Verifier string `json:"verifier"`
	Expires  int64  `json:"exp"`
}

// seal encodes v as the value of cookie name: JSON and its HMAC, bound to the name so that
// one cookie cannot stand for the other.
func (w *Web) seal(name string, v any) string {
	b, _ := json.Marshal(v)
	p := base64.RawURLEncoding.EncodeToString(b)
	return p + "." + base64.RawURLEncoding.EncodeToString(w.mac(name, p))
}

// open verifies and decodes cookie name of r into v, which must say when it expires.
func (w *Web) open(r *http.Request, name string, v any, expires func() int64) error {
	c, err := r.Cookie(name)
	if err != nil {
		return errors.New("no session")
	}
	p, sig, ok := strings.Cut(c.Value, ".")
	got, err := base64.RawURLEncoding.DecodeString(sig)
	if !ok || err != nil || !hmac.Equal(got, w.mac(name, p)) {
		return errors.New("the session cookie is not the agent's")
	}
	b, err := base64.RawURLEncoding.DecodeString(p)
	if err != nil || json.Unmarshal(b, v) != nil {
		return errors.New("the session cookie is malformed")
	}
	if w.o.Now().Unix() >= expires() {
		return errors.New("the session expired")
	}
	return nil
}

func (w *Web) mac(label, value string) []byte {
	m := hmac.New(sha256.New, w.o.Key)
	m.Write([]byte(label))
	m.Write([]byte{0})
	m.Write([]byte(value))
	return m.Sum(nil)
}

func (w *Web) csrf(s webSession) string {
	return base64.RawURLEncoding.EncodeToString(w.mac("csrf", s.ID))
}

func (w *Web) setCookie(rw http.ResponseWriter, name, value string, expires time.Time) {
	maxAge := int(expires.Sub(w.o.Now()).Seconds())
	if value == "" || maxAge < 1 {
		maxAge = -1
	}
	http.SetCookie(rw, &http.Cookie{Name: name, Value: value, Path: w.prefix + "/approvals", MaxAge: maxAge,
		HttpOnly: true, Secure: w.secure, SameSite: http.SameSiteLaxMode})
}

func (w *Web) session(r *http.Request) (webSession, error) {
	var s webSession
	err := w.open(r, webSessionCookie, &s, func() int64 { return s.Expires })
	return s, err
}

// page lists the pending requests to someone logged in, and sends anyone else to log in.
func (w *Web) page(rw http.ResponseWriter, r *http.Request) {
	s, err := w.session(r)
	if err != nil {
		http.Redirect(rw, r, w.prefix+"/approvals/login", http.StatusSeeOther)
		return
	}
	w.render(rw, http.StatusOK, s, "", "")
}

// login starts the authorization code flow: state, nonce and the PKCE verifier go to the
// provider's side as state, nonce and challenge, and stay here in the login cookie.
func (w *Web) login(rw http.ResponseWriter, r *http.Request) {
	cfg, _, err := w.oauth(r.Context())
	if err != nil {
		w.o.Logger.Warn("approval page: the identity provider is unreachable", "issuer", w.o.Issuer, "err", err)
		w.fail(rw, http.StatusBadGateway, "The identity provider cannot be reached; try again later.")
		return
	}
	l := webLogin{State: random(), Nonce: random(), Verifier: oauth2.GenerateVerifier(), Expires: w.o.Now().Add(webLoginWindow).Unix()}
	w.setCookie(rw, webLoginCookie, w.seal(webLoginCookie, l), time.Unix(l.Expires, 0))
	http.Redirect(rw, r, cfg.AuthCodeURL(l.State, oidc.Nonce(l.Nonce), oauth2.S256ChallengeOption(l.Verifier)), http.StatusSeeOther)
}

// callback ends the flow: the code is exchanged (with the verifier), the ID token verified,
// and the session cookie set.
func (w *Web) callback(rw http.ResponseWriter, r *http.Request) {
	var l webLogin
	refuse := func(status int, why string, err error) {
		w.o.Count("refused")
		w.o.Store.Refuse("", fmt.Sprintf("refused: login to the approval page from %s: %s: %v", r.RemoteAddr, why, err))
		w.fail(rw, status, "Login refused: "+why+". Start again from the approval page.")
	}
	if err := w.open(r, webLoginCookie, &l, func() int64 { return l.Expires }); err != nil {
		refuse(http.StatusBadRequest, "no login in progress in this browser", err)
		return
	}
	w.setCookie(rw, webLoginCookie, "", time.Time{}) // one use
	q := r.URL.Query()
	if !hmac.Equal([]byte(q.Get("state")), []byte(l.State)) {
		refuse(http.StatusBadRequest, "the state does not match", errors.New("state mismatch"))
		return
	}
	if e := q.Get("error"); e != "" {
		refuse(http.StatusForbidden, "the identity provider said "+e, errors.New(q.Get("error_description")))
		return
	}
	cfg, verifier, err := w.oauth(r.Context())
	if err != nil {
		w.fail(rw, http.StatusBadGateway, "The identity provider cannot be reached; try again later.")
		return
	}
	ctx, cancel := context.WithTimeout(oidc.ClientContext(r.Context(), w.o.Client), webProviderTimeout)
	defer cancel()
	tok, err := cfg.Exchange(ctx, q.Get("code"), oauth2.VerifierOption(l.Verifier))
	if err != nil {
		refuse(http.StatusForbidden, "the code was not accepted", withoutURL(err))
		return
	}
	raw, _ := tok.Extra("id_token").(string)
	if raw == "" {
		refuse(http.StatusForbidden, "the provider returned no ID token", errors.New("no id_token"))
		return
	}
	id, err := verifier.Verify(ctx, raw)
	if err != nil {
		refuse(http.StatusForbidden, "the ID token failed verification", err)
		return
	}
	if !hmac.Equal([]byte(id.Nonce), []byte(l.Nonce)) {
		refuse(http.StatusForbidden, "the ID token's nonce does not match", errors.New("nonce mismatch"))
		return
	}
	var claims map[string]any
	if err := id.Claims(&claims); err != nil {
		refuse(http.StatusForbidden, "the ID token's claims are malformed", err)
		return
	}
	email, _ := claims["email"].(string)
	if verified, ok := claims["email_verified"].(bool); ok && !verified {
		email = ""
	}
	if !IsEmail(email) {
		refuse(http.StatusForbidden, "the ID token carries no verified email address", fmt.Errorf("subject %s", id.Subject))
		return
	}
	s := webSession{Email: email, Subject: id.Subject, Groups: stringList(claims[w.o.GroupsClaim]), ID: random(),
		Expires: min(id.Expiry.Unix(), w.o.Now().Add(webMaxSession).Unix())}
	w.o.Count("accepted")
	w.o.Logger.Info("approval page: logged in", "email", s.Email, "subject", s.Subject)
	w.setCookie(rw, webSessionCookie, w.seal(webSessionCookie, s), time.Unix(s.Expires, 0))
	http.Redirect(rw, r, w.prefix+"/approvals", http.StatusSeeOther)
}

// oauth returns the OAuth client and the ID token verifier, discovering the provider the
// first time (and again after a failure).
func (w *Web) oauth(ctx context.Context) (*oauth2.Config, *oidc.IDTokenVerifier, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.provider == nil {
		ctx, cancel := context.WithTimeout(oidc.ClientContext(ctx, w.o.Client), webProviderTimeout)
		defer cancel()
		p, err := oidc.NewProvider(ctx, w.o.Issuer)
		if err != nil {
			return nil, nil, fmt.Errorf("discovering %s: %w", w.o.Issuer, err)
		}
		w.provider = p
	}
	cfg := &oauth2.Config{ClientID: w.o.ClientID, ClientSecret: w.o.ClientSecret, RedirectURL: w.o.RedirectURL,
		Endpoint: w.provider.Endpoint(), Scopes: w.o.Scopes}
	return cfg, w.provider.VerifierContext(oidc.ClientContext(context.Background(), w.o.Client), &oidc.Config{ClientID: w.o.ClientID, Now: w.o.Now}), nil
}

// decide approves or denies one request as the session's person, once the POST has shown
// that the page itself sent it.
func (w *Web) decide(rw http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(rw, r.Body, 1<<16)
	formErr := r.ParseForm()
	id := r.PostForm.Get("id")
	refuse := func(status int, err error) {
		w.o.Count("refused")
		w.o.Store.Refuse(id, fmt.Sprintf("refused: callback through web from %s: %v", r.RemoteAddr, err))
		w.fail(rw, status, "Refused: "+err.Error()+".")
	}
	s, err := w.session(r)
	if err != nil {
		refuse(http.StatusForbidden, err)
		return
	}
	if err := w.sameOrigin(r); err != nil {
		refuse(http.StatusForbidden, err)
		return
	}
	if !hmac.Equal([]byte(r.PostForm.Get("csrf")), []byte(w.csrf(s))) {
		refuse(http.StatusForbidden, errors.New("the form lacks the session's CSRF token"))
		return
	}
	decision, reason := r.PostForm.Get("decision"), strings.TrimSpace(r.PostForm.Get("reason"))
	switch {
	case formErr != nil:
		refuse(http.StatusBadRequest, fmt.Errorf("reading the form: %w", formErr))
		return
	case decision != "approve" && decision != "deny":
		refuse(http.StatusBadRequest, fmt.Errorf("decision %q: want approve or deny", decision))
		return
	case utf8.RuneCountInString(reason) > webMaxReason || !utf8.ValidString(reason):
		refuse(http.StatusBadRequest, fmt.Errorf("the reason must be valid text of at most %d characters", webMaxReason))
		return
	}
	a := Approver{Principal: s.Email, Email: s.Email, Groups: s.Groups}
	do := w.o.Store.Deny
	if decision == "approve" {
		do = w.o.Store.Approve
	}
	if reason == "" {
		reason = "through the approval page"
	} else {
		reason += " (through the approval page)"
	}
	got, err := do(id, a, reason)
	if err != nil {
		w.o.Count("failed")
		status := http.StatusForbidden
		switch {
		case errors.Is(err, ErrUnknownRequest):
			status = http.StatusNotFound
		case errors.Is(err, ErrNotPending):
			status = http.StatusConflict
		case !errors.Is(err, ErrSelfApproval) && !errors.Is(err, ErrNotApprover) && !errors.Is(err, ErrAlreadyVoted):
			status = http.StatusInternalServerError
		}
		w.render(rw, status, s, "", fmt.Sprintf("%s was not %s: %v", id, map[string]string{"approve": "approved", "deny": "denied"}[decision], err))
		return
	}
	w.o.Count("accepted")
	w.render(rw, http.StatusOK, s, fmt.Sprintf("%s: %s", got.ID, got.Status), "")
}

// logout ends the session; it is a POST with the same checks as a decision, so that no
// other site can log people out.
func (w *Web) logout(rw http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(rw, r.Body, 1<<12)
	_ = r.ParseForm()
	s, err := w.session(r)
	if err == nil {
		err = w.sameOrigin(r)
	}
	if err == nil && !hmac.Equal([]byte(r.PostForm.Get("csrf")), []byte(w.csrf(s))) {
		err = errors.New("the form lacks the session's CSRF token")
	}
	if err != nil {
		w.o.Count("refused")
		w.fail(rw, http.StatusForbidden, "Refused: "+err.Error()+".")
		return
	}
	w.setCookie(rw, webSessionCookie, "", time.Time{})
	w.fail(rw, http.StatusOK, "Logged out.")
}

// sameOrigin requires the browser to say the POST comes from the page's origin: Origin, or
// Referer where a browser sends no Origin.
func (w *Web) sameOrigin(r *http.Request) error {
	if o := r.Header.Get("Origin"); o != "" {
		if o != w.origin {
			return fmt.Errorf("origin %q is not the page's", o)
		}
		return nil
	}
	ref, err := url.Parse(r.Header.Get("Referer"))
	if err != nil || ref.Host == "" {
		return errors.New("the request names no origin")
	}
	if o := ref.Scheme + "://" + ref.Host; o != w.origin {
		return fmt.Errorf("referer origin %q is not the page's", o)
	}
	return nil
}

// webRequest is one pending request as the page shows it.
type webRequest struct {
	Request
	Mine     bool // the person logged in filed it
	Approved []string
}

// render writes the page: the person, a message, and the pending requests with their
// forms. html/template escapes every value: statements are anyone's text.
func (w *Web) render(rw http.ResponseWriter, status int, s webSession, notice, problem string) {
	var pending []webRequest
	for _, r := range w.o.Store.List() {
		if r.Status != StatusPending {
			continue
		}
		wr := webRequest{Request: r, Mine: r.Requester == s.Email}
		for _, v := range r.Approvals {
			wr.Approved = append(wr.Approved, v.By)
		}
		pending = append(pending, wr)
	}
	rw.Header().Set("Content-Type", "text/html; charset=utf-8")
	rw.WriteHeader(status)
	err := pageTemplate.Execute(rw, map[string]any{
		"Session": s, "CSRF": w.csrf(s), "Prefix": w.prefix, "Pending": pending,
		"Notice": notice, "Problem": problem, "Now": w.o.Now(),
	})
	if err != nil {
		w.o.Logger.Warn("approval page: writing the page", "err", err)
	}
}

// fail writes a page with only a message.
func (w *Web) fail(rw http.ResponseWriter, status int, msg string) {
	rw.Header().Set("Content-Type", "text/html; charset=utf-8")
	rw.WriteHeader(status)
	_ = messageTemplate.Execute(rw, map[string]any{"Message": msg, "Prefix": w.prefix})
}

func random() string {
	b := make([]byte, 24)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// stringList reads a claim holding a list of strings (or one string).
func stringList(v any) []string {
	switch v := v.(type) {
	case string:
		return []string{v}
	case []any:
		var out []string
		for _, e := range v {
			if s, ok := e.(string); ok {
				out = append(out, s)
			}
		}
		return out
	}
	return nil
}

// IsEmail accepts what can name an approver as a verified email: one @, no spaces, and no
// prefix that names another kind of principal (os:, db:, oidc:).
func IsEmail(s string) bool {
	at := strings.IndexByte(s, '@')
	return at > 0 && at == strings.LastIndexByte(s, '@') && at < len(s)-1 && !strings.ContainsAny(s, " \t\r\n:")
}

const pageStyle = `<style>
body{font-family:system-ui,sans-serif;margin:0;background:#f4f5f7;color:#1d2330}
header{background:#1d2330;color:#fff;padding:12px 24px;display:flex;justify-content:space-between;align-items:center}
header form{display:inline;margin-left:12px}
main{padding:16px 24px;max-width:1100px}
.req{background:#fff;border:1px solid #d6d9e0;border-radius:6px;padding:14px 18px;margin:14px 0}
.req h2{font-size:16px;margin:0 0 8px}
dl{display:grid;grid-template-columns:max-content 1fr;gap:4px 16px;margin:0 0 10px}
dt{color:#5a6272}dd{margin:0}
pre{background:#f0f1f4;padding:8px 10px;border-radius:4px;white-space:pre-wrap;word-break:break-all;margin:0}
input[type=text]{width:420px;padding:5px}
button{padding:6px 14px;margin-left:6px;border-radius:4px;border:1px solid #888;cursor:pointer}
.approve{background:#1f7a3a;color:#fff;border-color:#1f7a3a}.deny{background:#b3261e;color:#fff;border-color:#b3261e}
.notice{background:#e3f4e8;border:1px solid #1f7a3a;padding:8px 12px;border-radius:4px}
.problem{background:#fbe9e7;border:1px solid #b3261e;padding:8px 12px;border-radius:4px}
.mine{color:#b3261e}
</style>`

var pageTemplate = template.Must(template.New("page").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Vigil approvals</title>` + pageStyle + `</head><body>
<header><strong>Vigil approvals</strong><span>{{.Session.Email}}<form method="post" action="{{.Prefix}}/approvals/logout"><input type="hidden" name="csrf" value="{{.CSRF}}"><button type="submit">Log out</button></form></span></header>
<main>
{{with .Notice}}<p class="notice" id="notice">{{.}}</p>{{end}}
{{with .Problem}}<p class="problem" id="problem">{{.}}</p>{{end}}
<h1>Pending requests</h1>
{{range .Pending}}<section class="req" id="{{.ID}}">
<h2>{{.ID}}</h2>
<dl>
<dt>Requester</dt><dd>{{.Requester}}{{if .Mine}} <span class="mine">(you: you may deny it, not approve it)</span>{{end}}</dd>
<dt>Identity</dt><dd>{{if .DBUser}}database user {{.DBUser}}{{else}}–{{end}}{{with .SessionID}}, session {{.}}{{end}}</dd>
<dt>Database</dt><dd>{{.Database}}</dd>
<dt>Statement</dt><dd><pre class="statement">{{.Statement}}</pre></dd>
{{with .Params}}<dt>Parameters</dt><dd>{{range $i, $p := .}}{{if $i}}, {{end}}<code>{{$p}}</code>{{end}}</dd>{{end}}
<dt>Rule</dt><dd>{{.Rule}}</dd>
<dt>Risk</dt><dd>held for approval by {{.Terms.Required}} approver(s){{with .Terms.Approvers}} from {{range $i, $a := .}}{{if $i}}, {{end}}{{$a}}{{end}}{{end}}; the grant allows {{.Terms.Uses}} use(s) within {{.Terms.Expiry}}</dd>
{{with .Approved}}<dt>Approved by</dt><dd>{{range $i, $a := .}}{{if $i}}, {{end}}{{$a}}{{end}}</dd>{{end}}
<dt>Requested</dt><dd>{{.Created.UTC.Format "2006-01-02 15:04:05 UTC"}}, pending until {{.Deadline.UTC.Format "15:04:05 UTC"}}</dd>
</dl>
<form method="post" action="{{$.Prefix}}/approvals/decide">
<input type="hidden" name="csrf" value="{{$.CSRF}}"><input type="hidden" name="id" value="{{.ID}}">
<input type="text" name="reason" placeholder="reason, for the trail" maxlength="1000">
<button class="approve" type="submit" name="decision" value="approve">Approve</button>
<button class="deny" type="submit" name="decision" value="deny">Deny</button>
</form>
</section>{{else}}<p id="none">No request is pending.</p>{{end}}
</main></body></html>
`))

var messageTemplate = template.Must(template.New("message").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Vigil approvals</title>` + pageStyle + `</head><body>
<header><strong>Vigil approvals</strong></header>
<main><p id="message">{{.Message}}</p><p><a href="{{.Prefix}}/approvals">Back to the approval page</a></p></main></body></html>
`))
