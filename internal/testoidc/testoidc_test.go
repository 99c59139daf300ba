package testoidc

import (
	"context"
	"errors"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"slices"
	"testing"
	"time"

	"github.com/vigil-db/vigil/pkg/oidcauth"
)

// A person logged in through Hydra gets an ID token that Vigil's verifier accepts, with
// the email and groups the login carried; a client's short token lifespan is honoured.
func TestLogin(t *testing.T) {
	start := time.Now()
	p := Start(t)
	t.Logf("hydra ready after %v", time.Since(start))
	c := p.NewClient(t, ClientOptions{})
	short := p.NewClient(t, ClientOptions{Public: true, IDTokenLifespan: 2 * time.Second})
	v, err := oidcauth.New(oidcauth.Config{Issuer: p.Issuer, ClientID: c.ID, Roles: []oidcauth.Role{{Group: "*", User: "u"}}})
	if err != nil {
		t.Fatal(err)
	}
	tok := p.IDToken(t, c, User{Subject: "ana", Email: "ana@example.com", Groups: []string{"dba", "ops"}})
	l, err := v.Verify(context.Background(), tok)
	if err != nil {
		t.Fatal(err)
	}
	if l.Identity.Issuer != p.Issuer || l.Identity.Subject != "ana" || l.Identity.Email != "ana@example.com" || !slices.Equal(l.Identity.Groups, []string{"dba", "ops"}) {
		t.Errorf("identity = %+v", l.Identity)
	}
	if d := time.Until(l.Expires); d < 50*time.Minute {
		t.Errorf("expires in %v, want about an hour", d)
	}

	tok = p.IDToken(t, short, User{Subject: "bob"})
	sv, err := oidcauth.New(oidcauth.Config{Issuer: p.Issuer, ClientID: short.ID, Roles: []oidcauth.Role{{Group: "*", User: "u"}}})
	if err != nil {
		t.Fatal(err)
	}
	l, err = sv.Verify(context.Background(), tok)
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Until(l.Expires.Add(-oidcauth.DefaultClockSkew)); d > 2*time.Second {
		t.Errorf("token of the short-lived client expires in %v", d)
	}
	var r *oidcauth.Refusal
	if _, err := v.Verify(context.Background(), tok); !errors.As(err, &r) || r.Reason != "audience" {
		t.Errorf("another client's token: %v, want an audience refusal", err)
	}
}

// A real browser's flow (redirects followed, cookies kept) passes through the provider's
// login page as the browser user and returns to the client with a code.
func TestBrowserLogin(t *testing.T) {
	p := Start(t)
	codes := make(chan string, 1)
	back := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		codes <- r.URL.Query().Get("code")
	}))
	defer back.Close()
	c := p.NewClient(t, ClientOptions{RedirectURI: back.URL + "/cb"})
	jar, _ := cookiejar.New(nil)
	hc := &http.Client{Jar: jar, Timeout: 10 * time.Second}
	auth := p.Issuer + "/oauth2/auth?" + url.Values{"client_id": {c.ID}, "response_type": {"code"}, "scope": {"openid email"},
		"redirect_uri": {c.RedirectURI}, "state": {"state-0123456789"}}.Encode()
	resp, err := hc.Get(auth)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("login with no browser user: HTTP %d, want 403", resp.StatusCode)
	}
	p.SetBrowserUser(User{Subject: "ana", Email: "ana@example.com"})
	if resp, err = hc.Get(auth); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	select {
	case code := <-codes:
		if code == "" {
			t.Error("the browser came back without a code")
		}
	default:
		t.Fatalf("the browser did not come back to the client: HTTP %d at %s", resp.StatusCode, resp.Request.URL.Redacted())
	}
}
