package oidcauth

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc/oidctest"
)

// issuer is go-oidc's test issuer (discovery and JWKS over real HTTP) with one signing key.
type issuer struct {
	url  string
	srv  *oidctest.Server
	key  *rsa.PrivateKey
	kid  string
	hits atomic.Int32 // requests for the key set
	down atomic.Bool  // answer 503 to everything
}

// countKeys serves the issuer, counting key set requests.
func countKeys(is *issuer) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if is.down.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		if r.URL.Path == "/keys" {
			is.hits.Add(1)
		}
		is.srv.ServeHTTP(w, r)
	})
}

func newIssuer(t *testing.T) *issuer {
	t.Helper()
	is := &issuer{srv: &oidctest.Server{}, kid: "k1"}
	is.key = rsaKey(t)
	is.srv.PublicKeys = []oidctest.PublicKey{{PublicKey: is.key.Public(), KeyID: is.kid, Algorithm: "RS256"}}
	hs := httptest.NewServer(countKeys(is))
	t.Cleanup(hs.Close)
	is.url = hs.URL
	is.srv.SetIssuer(hs.URL)
	return is
}

func rsaKey(t *testing.T) *rsa.PrivateKey {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// token signs claims over the defaults (this issuer, audience "vigil", valid for an hour).
func (is *issuer) token(t *testing.T, over map[string]any) string {
	t.Helper()
	c := map[string]any{
		"iss": is.url, "aud": "vigil", "sub": "u-123",
		"exp": time.Now().Add(time.Hour).Unix(), "iat": time.Now().Unix(),
		"email": "ana@example.com", "groups": []string{"analysts"},
	}
	for k, v := range over {
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
	}
	b, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	return oidctest.SignIDToken(is.key, is.kid, "RS256", string(b))
}

func newVerifier(t *testing.T, is *issuer) *Verifier {
	t.Helper()
	v, err := New(Config{Issuer: is.url, ClientID: "vigil", Roles: []Role{
		{Group: "dba", User: "dba_role", Password: "p1"},
		{Group: "analysts", User: "reader", Password: "p2"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestVerify(t *testing.T) {
	is := newIssuer(t)
	other := rsaKey(t)
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	claims := func(over map[string]any) string {
		b, _ := json.Marshal(over)
		return string(b)
	}
	v := newVerifier(t, is)
	for _, tc := range []struct {
		name   string
		token  string
		reason string
		user   string
		email  string
		groups []string
	}{
		{name: "valid", token: is.token(t, nil), user: "reader", email: "ana@example.com", groups: []string{"analysts"}},
		{name: "first mapping wins", token: is.token(t, map[string]any{"groups": []string{"analysts", "dba"}}), user: "dba_role", email: "ana@example.com", groups: []string{"analysts", "dba"}},
		{name: "audience list", token: is.token(t, map[string]any{"aud": []string{"other", "vigil"}}), user: "reader", email: "ana@example.com", groups: []string{"analysts"}},
		{name: "unverified email dropped", token: is.token(t, map[string]any{"email_verified": false}), user: "reader", groups: []string{"analysts"}},
		{name: "single group as string", token: is.token(t, map[string]any{"groups": "dba"}), user: "dba_role", email: "ana@example.com", groups: []string{"dba"}},
		{name: "within clock skew", token: is.token(t, map[string]any{"exp": time.Now().Add(-DefaultClockSkew / 2).Unix()}), user: "reader", email: "ana@example.com", groups: []string{"analysts"}},
		{name: "expired", token: is.token(t, map[string]any{"exp": time.Now().Add(-time.Minute).Unix()}), reason: "expired"},
		{name: "other issuer", token: is.token(t, map[string]any{"iss": "https://evil.example.com"}), reason: "issuer"},
		{name: "other audience", token: is.token(t, map[string]any{"aud": "someone-else"}), reason: "audience"},
		{name: "signed by another key", token: oidctest.SignIDToken(other, is.kid, "RS256", claims(map[string]any{"iss": is.url, "aud": "vigil", "sub": "x", "exp": time.Now().Add(time.Hour).Unix()})), reason: "signature"},
		{name: "algorithm not offered", token: oidctest.SignIDToken(ec, is.kid, "ES256", claims(map[string]any{"iss": is.url, "aud": "vigil", "sub": "x", "exp": time.Now().Add(time.Hour).Unix()})), reason: "signature"},
		{name: "not a token", token: "hunter2", reason: "malformed"},
		{name: "tampered payload", token: tamper(is.token(t, nil)), reason: "signature"},
		{name: "groups not strings", token: is.token(t, map[string]any{"groups": []int{1}}), reason: "malformed"},
		{name: "no mapped group", token: is.token(t, map[string]any{"groups": []string{"sales"}}), reason: "no_role"},
		{name: "no groups", token: is.token(t, map[string]any{"groups": nil}), reason: "no_role"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, err := v.Verify(context.Background(), tc.token)
			if tc.reason != "" {
				var r *Refusal
				if !errors.As(err, &r) || r.Reason != tc.reason {
					t.Fatalf("err = %v, want a refusal %q", err, tc.reason)
				}
				if strings.Contains(r.Error(), tc.token) || r.Unwrap() != nil && strings.Contains(r.Unwrap().Error(), tc.token) {
					t.Errorf("refusal %q repeats the token", r.Error())
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if l.Role.User != tc.user || l.Identity.Email != tc.email || !slices.Equal(l.Identity.Groups, tc.groups) ||
				l.Identity.Subject != "u-123" || l.Identity.Issuer != is.url {
				t.Errorf("login = %+v", l)
			}
		})
	}
}

// tamper changes the token's payload and keeps its signature.
func tamper(tok string) string {
	parts := strings.Split(tok, ".")
	p := []byte(parts[1])
	if p[5] == 'A' {
		p[5] = 'B'
	} else {
		p[5] = 'A'
	}
	parts[1] = string(p)
	return strings.Join(parts, ".")
}

// A token signed with a key the issuer published after the proxy fetched the key set is
// accepted: the key set is fetched again for an unknown key id.
func TestKeyRotation(t *testing.T) {
	is := newIssuer(t)
	v := newVerifier(t, is)
	if _, err := v.Verify(context.Background(), is.token(t, nil)); err != nil {
		t.Fatal(err)
	}
	before := is.hits.Load()
	is.key, is.kid = rsaKey(t), "k2"
	is.srv.PublicKeys = []oidctest.PublicKey{{PublicKey: is.key.Public(), KeyID: is.kid, Algorithm: "RS256"}}
	l, err := v.Verify(context.Background(), is.token(t, nil))
	if err != nil {
		t.Fatalf("token signed with the rotated key: %v", err)
	}
	if is.hits.Load() == before {
		t.Error("the key set was not fetched again")
	}
	if want := time.Now().Add(time.Hour + DefaultClockSkew); l.Expires.Sub(want).Abs() > 5*time.Second {
		t.Errorf("expires %v, want about %v", l.Expires, want)
	}
}

// An issuer that is down when the verifier is built is discovered once it is up.
func TestDiscoveryRetried(t *testing.T) {
	is := newIssuer(t)
	is.down.Store(true)
	v := newVerifier(t, is)
	var r *Refusal
	if _, err := v.Verify(context.Background(), is.token(t, nil)); !errors.As(err, &r) || r.Reason != "unavailable" {
		t.Fatalf("err = %v, want unavailable", err)
	}
	is.down.Store(false)
	if _, err := v.Verify(context.Background(), is.token(t, nil)); err != nil {
		t.Fatal(err)
	}
}

func TestNewRejects(t *testing.T) {
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{ClientID: "c", Roles: []Role{{Group: "*", User: "u"}}}, "issuer and client_id"},
		{Config{Issuer: "example.com", ClientID: "c", Roles: []Role{{Group: "*", User: "u"}}}, "http(s) URL"},
		{Config{Issuer: "https://x", ClientID: "c"}, "at least one role"},
		{Config{Issuer: "https://x", ClientID: "c", Roles: []Role{{Group: "g"}}}, "roles[0]"},
	} {
		if _, err := New(tc.cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("New(%+v) = %v, want %q", tc.cfg, err, tc.want)
		}
	}
}
