// Package testoidc starts throwaway OpenID Connect providers for tests: Ory Hydra (a real,
// certified OIDC provider) with in-memory storage on free loopback ports, dying with the test
// process. A test creates OAuth clients through Hydra's admin API and logs a person in by
// driving the authorization code flow as a browser would, accepting the login and consent
// requests through the admin API with the person's subject and ID token claims (email,
// groups): what a login page would do after checking a password.
//
// Hydra is built from tools/hydra (a module of its own, so that its dependencies never
// move Vigil's) into the user cache directory the first time, or taken from VIGIL_HYDRA
// (CI builds it once per run). A provider that cannot be built or started fails the test:
// it is a broken setup, not a reason to skip.
package testoidc

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vigil-db/vigil/internal/testproc"
)

// Provider is a running Hydra.
type Provider struct {
	// Issuer is the public URL, as tokens carry it in "iss".
	Issuer string
	// Admin is the admin API's URL.
	Admin string

	dir  string
	proc *testproc.Proc
	ui   *http.Server

	mu          sync.Mutex
	browserUser *User
}

// User is the person a test logs in as.
type User struct {
	Subject string
	Email   string
	Groups  []string
}

// Client is an OAuth client registered with the provider.
type Client struct {
	ID, Secret string // Secret is empty for a public client
	// RedirectURI is where the authorization code flow returns to.
	RedirectURI string
}

// Start starts a provider and registers its shutdown with t.Cleanup.
func Start(t testing.TB) *Provider {
	t.Helper()
	bin, err := Binary()
	if err != nil {
		t.Fatalf("testoidc: %v", err)
	}
	p, err := start(bin)
	if err != nil {
		t.Fatalf("testoidc: starting Hydra: %v", err)
	}
	t.Cleanup(p.Stop)
	return p
}

var (
	buildMu sync.Mutex
	built   = map[string]string{}
)

// Binary returns the path of a Hydra binary: VIGIL_HYDRA, or one built from tools/hydra into
// the user cache directory, keyed by the module's files so a version change rebuilds it.
func Binary() (string, error) {
	// SQLite is what Hydra's in-memory storage (DSN=memory) runs on; .ci/run builds the same.
	return tool("VIGIL_HYDRA", "hydra", "github.com/ory/hydra/v2", "sqlite,sqlite_omit_load_extension")
}

// tool returns the binary named by env, or builds pkg from tools/<name> into the user cache
// directory (once per process, and again only when a file of tools/<name> changes).
func tool(env, name, pkg, tags string) (string, error) {
	if p := os.Getenv(env); p != "" {
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("%s: %w", env, err)
		}
		return p, nil
	}
	buildMu.Lock()
	defer buildMu.Unlock()
	if bin, ok := built[name]; ok {
		return bin, nil
	}
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		return "", errors.New("cannot locate the source tree")
	}
	mod := filepath.Join(filepath.Dir(file), "..", "..", "tools", name)
	files, err := filepath.Glob(filepath.Join(mod, "*"))
	if err != nil || len(files) == 0 {
		return "", fmt.Errorf("no files in %s", mod)
	}
	h := sha256.New()
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return "", err
		}
		fmt.Fprintf(h, "%s %d\n", filepath.Base(f), len(b))
		h.Write(b)
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		return "", err
	}
	bin := filepath.Join(cache, "vigil", name+"-"+hex.EncodeToString(h.Sum(nil)[:6]))
	if _, err := os.Stat(bin); err != nil {
		if err := os.MkdirAll(filepath.Dir(bin), 0o755); err != nil {
			return "", err
		}
		tmp := fmt.Sprintf("%s.%d", bin, os.Getpid())
		cmd := exec.Command("go", "build", "-tags", tags, "-o", tmp, pkg)
		cmd.Dir = mod
		cmd.Env = append(os.Environ(), "CGO_ENABLED=1")
		if out, err := cmd.CombinedOutput(); err != nil {
			return "", fmt.Errorf("building %s in %s: %v\n%s", name, mod, err, out)
		}
		if err := os.Rename(tmp, bin); err != nil {
			return "", err
		}
	}
	built[name] = bin
	return bin, nil
}

func start(bin string) (*Provider, error) {
	dir, err := os.MkdirTemp("", "vigil-hydra-")
	if err != nil {
		return nil, err
	}
	pub, err := freePort()
	if err != nil {
		return nil, err
	}
	adm, err := freePort()
	if err != nil {
		return nil, err
	}
	p := &Provider{Issuer: fmt.Sprintf("http://127.0.0.1:%d", pub), Admin: fmt.Sprintf("http://127.0.0.1:%d", adm), dir: dir}
	ui, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p.ui = &http.Server{Handler: http.HandlerFunc(p.serveUI), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = p.ui.Serve(ui) }()
	uiURL := "http://" + ui.Addr().String()
	secret := make([]byte, 24)
	_, _ = rand.Read(secret)
	cmd := exec.Command(bin, "serve", "all", "--dev", "--sqa-opt-out")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(),
		"DSN=memory",
		"URLS_SELF_ISSUER="+p.Issuer,
		// Hydra redirects the browser here: Authorize intercepts these redirects, a real
		// browser follows them to serveUI.
		"URLS_LOGIN="+uiURL+"/login", "URLS_CONSENT="+uiURL+"/consent",
		fmt.Sprintf("SERVE_PUBLIC_PORT=%d", pub), "SERVE_PUBLIC_HOST=127.0.0.1",
		fmt.Sprintf("SERVE_ADMIN_PORT=%d", adm), "SERVE_ADMIN_HOST=127.0.0.1",
		"SECRETS_SYSTEM="+hex.EncodeToString(secret),
		"LOG_LEVEL=warn", "LOG_LEAK_SENSITIVE_VALUES=false",
	)
	logf, err := os.Create(filepath.Join(dir, "hydra.log"))
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd.Stdout, cmd.Stderr = logf, logf
	if p.proc, err = testproc.Start(cmd); err != nil {
		return nil, err
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(p.Admin + "/health/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return p, nil
			}
		}
		select {
		case <-p.proc.Done():
			log, _ := os.ReadFile(filepath.Join(dir, "hydra.log"))
			p.Stop()
			return nil, fmt.Errorf("hydra exited: %v\n%s", p.proc.Err(), log)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(dir, "hydra.log"))
			p.Stop()
			return nil, fmt.Errorf("hydra not ready after 30s\n%s", log)
		}
	}
}

// Stop kills the provider and removes its files.
func (p *Provider) Stop() {
	if p.ui != nil {
		p.ui.Close()
	}
	if p.proc != nil {
		_ = p.proc.Signal(os.Kill)
		<-p.proc.Done()
	}
	os.RemoveAll(p.dir)
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// ClientOptions shape a new client.
type ClientOptions struct {
	// Public makes a client without a secret (token_endpoint_auth_method none), as a CLI
	// that runs on people's machines is; it must use PKCE.
	Public bool
	// RedirectURI defaults to http://127.0.0.1/callback (a loopback redirect: Hydra
	// accepts any port on it, RFC 8252).
	RedirectURI string
	// IDTokenLifespan, when set, is how long the client's ID tokens last (Hydra's default:
	// an hour).
	IDTokenLifespan time.Duration
}

// NewClient registers an OAuth client allowed the authorization code and refresh grants.
func (p *Provider) NewClient(t testing.TB, o ClientOptions) Client {
	t.Helper()
	if o.RedirectURI == "" {
		o.RedirectURI = "http://127.0.0.1/callback"
	}
	req := map[string]any{
		"grant_types":    []string{"authorization_code", "refresh_token"},
		"response_types": []string{"code"},
		"redirect_uris":  []string{o.RedirectURI},
		"scope":          "openid email offline_access",
	}
	if o.Public {
		req["token_endpoint_auth_method"] = "none"
	} else {
		req["token_endpoint_auth_method"] = "client_secret_basic"
	}
	var c struct {
		ID     string `json:"client_id"`
		Secret string `json:"client_secret"`
	}
	if err := p.admin(http.MethodPost, "/admin/clients", req, &c); err != nil {
		t.Fatalf("testoidc: creating a client: %v", err)
	}
	cl := Client{ID: c.ID, Secret: c.Secret, RedirectURI: o.RedirectURI}
	if o.IDTokenLifespan > 0 {
		p.SetIDTokenLifespan(t, cl, o.IDTokenLifespan)
	}
	return cl
}

// SetIDTokenLifespan makes the ID tokens c gets from now on last d.
func (p *Provider) SetIDTokenLifespan(t testing.TB, c Client, d time.Duration) {
	t.Helper()
	ls := map[string]string{
		"authorization_code_grant_id_token_lifespan": d.String(),
		"refresh_token_grant_id_token_lifespan":      d.String(),
	}
	if err := p.admin(http.MethodPut, "/admin/clients/"+c.ID+"/lifespans", ls, nil); err != nil {
		t.Fatalf("testoidc: setting the client's token lifespans: %v", err)
	}
}

// IDToken logs u in through client c (a confidential client) and returns the ID token.
func (p *Provider) IDToken(t testing.TB, c Client, u User) string {
	t.Helper()
	verifier := hex.EncodeToString(randBytes(32))
	ch := sha256.Sum256([]byte(verifier))
	q := url.Values{
		"client_id": {c.ID}, "response_type": {"code"}, "scope": {"openid email"},
		"redirect_uri": {c.RedirectURI}, "state": {hex.EncodeToString(randBytes(8))},
		"code_challenge": {b64(ch[:])}, "code_challenge_method": {"S256"},
	}
	back, err := p.Authorize(p.Issuer+"/oauth2/auth?"+q.Encode(), u)
	if err != nil {
		t.Fatalf("testoidc: logging %s in: %v", u.Subject, err)
	}
	code := back.Query().Get("code")
	if code == "" {
		t.Fatalf("testoidc: the flow returned no code: %s", back.Redacted())
	}
	form := url.Values{"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {c.RedirectURI}, "code_verifier": {verifier}}
	if c.Secret == "" {
		form.Set("client_id", c.ID)
	}
	req, _ := http.NewRequest(http.MethodPost, p.Issuer+"/oauth2/token", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if c.Secret != "" {
		req.SetBasicAuth(url.QueryEscape(c.ID), url.QueryEscape(c.Secret))
	}
	var tok struct {
		IDToken string `json:"id_token"`
	}
	if err := do(req, &tok); err != nil {
		t.Fatalf("testoidc: exchanging the code: %v", err)
	}
	if tok.IDToken == "" {
		t.Fatal("testoidc: the token response has no id_token")
	}
	return tok.IDToken
}

// Authorize plays the browser in an authorization code flow that starts at authURL (any
// client's, for example one `vigil login` printed): it follows Hydra's redirects, accepts the
// login request as u and the consent request with u's claims in the ID token, and returns
// the final redirect to the client's redirect URI without following it.
func (p *Provider) Authorize(authURL string, u User) (*url.URL, error) {
	jar, _ := cookiejar.New(nil)
	hc := &http.Client{Jar: jar, Timeout: 10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	next := authURL
	for range 10 {
		resp, err := hc.Get(next)
		if err != nil {
			return nil, err
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusFound && resp.StatusCode != http.StatusSeeOther {
			return nil, fmt.Errorf("GET %s: %s: %s", strings.SplitN(next, "?", 2)[0], resp.Status, body)
		}
		loc, err := resp.Location()
		if err != nil {
			return nil, err
		}
		q := loc.Query()
		switch {
		case q.Get("error") != "":
			return nil, fmt.Errorf("provider refused: %s: %s", q.Get("error"), q.Get("error_description"))
		case q.Get("login_challenge") != "":
			if next, err = p.acceptLogin(q.Get("login_challenge"), u); err != nil {
				return nil, err
			}
		case q.Get("consent_challenge") != "":
			if next, err = p.acceptConsent(q.Get("consent_challenge"), u); err != nil {
				return nil, err
			}
		case strings.HasPrefix(loc.String(), p.Issuer):
			next = loc.String()
		default:
			return loc, nil
		}
	}
	return nil, errors.New("too many redirects")
}

type redirect struct {
	To string `json:"redirect_to"`
}

// acceptLogin accepts a login request as u and returns where the browser goes next.
func (p *Provider) acceptLogin(challenge string, u User) (string, error) {
	var r redirect
	if err := p.admin(http.MethodPut, "/admin/oauth2/auth/requests/login/accept?login_challenge="+url.QueryEscape(challenge),
		map[string]any{"subject": u.Subject}, &r); err != nil {
		return "", fmt.Errorf("accepting login: %w", err)
	}
	return r.To, nil
}

// acceptConsent grants a consent request what it asks, with u's claims in the ID token,
// and returns where the browser goes next.
func (p *Provider) acceptConsent(challenge string, u User) (string, error) {
	var cr struct {
		Scope    []string `json:"requested_scope"`
		Audience []string `json:"requested_access_token_audience"`
	}
	ch := url.QueryEscape(challenge)
	if err := p.admin(http.MethodGet, "/admin/oauth2/auth/requests/consent?consent_challenge="+ch, nil, &cr); err != nil {
		return "", fmt.Errorf("reading consent request: %w", err)
	}
	claims := map[string]any{}
	if u.Email != "" {
		claims["email"], claims["email_verified"] = u.Email, true
	}
	if u.Groups != nil {
		claims["groups"] = u.Groups
	}
	var r redirect
	if err := p.admin(http.MethodPut, "/admin/oauth2/auth/requests/consent/accept?consent_challenge="+ch, map[string]any{
		"grant_scope": cr.Scope, "grant_access_token_audience": cr.Audience,
		"session": map[string]any{"id_token": claims},
	}, &r); err != nil {
		return "", fmt.Errorf("accepting consent: %w", err)
	}
	return r.To, nil
}

// SetBrowserUser makes the provider's login page log real browsers in as u: Hydra sends
// them to its login and consent URLs, which this provider answers at once, accepting the
// requests through the admin API as Authorize does, as a login page would after checking
// a password.
func (p *Provider) SetBrowserUser(u User) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.browserUser = &u
}

// serveUI is the login and consent page Hydra sends browsers to.
func (p *Provider) serveUI(w http.ResponseWriter, r *http.Request) {
	p.mu.Lock()
	u := p.browserUser
	p.mu.Unlock()
	if u == nil {
		http.Error(w, "testoidc: no browser user (SetBrowserUser)", http.StatusForbidden)
		return
	}
	var next string
	var err error
	switch r.URL.Path {
	case "/login":
		next, err = p.acceptLogin(r.URL.Query().Get("login_challenge"), *u)
	case "/consent":
		next, err = p.acceptConsent(r.URL.Query().Get("consent_challenge"), *u)
	default:
		http.NotFound(w, r)
		return
	}
	if err != nil {
		http.Error(w, "testoidc: "+err.Error(), http.StatusBadGateway)
		return
	}
	http.Redirect(w, r, next, http.StatusFound)
}

// admin calls the admin API with a JSON body (nil: none) and decodes the answer into out.
func (p *Provider) admin(method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(context.Background(), method, p.Admin+path, body)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	return do(req, out)
}

func do(req *http.Request, out any) error {
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s %s: %s: %s", req.Method, req.URL.Path, resp.Status, b)
	}
	if out == nil {
		return nil
	}
	return json.Unmarshal(b, out)
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

func randBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}
