package enforce

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc/oidctest"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/vigil-db/vigil/internal/testpg"
	"github.com/vigil-db/vigil/pkg/event"
	"github.com/vigil-db/vigil/pkg/oidcauth"
)

// tokenIssuer is go-oidc's test issuer and a function signing tokens for it.
func tokenIssuer(t *testing.T) (string, func(exp time.Time, groups ...string) string) {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	srv := &oidctest.Server{PublicKeys: []oidctest.PublicKey{{PublicKey: key.Public(), KeyID: "k", Algorithm: "RS256"}}}
	hs := httptest.NewServer(srv)
	t.Cleanup(hs.Close)
	srv.SetIssuer(hs.URL)
	return hs.URL, func(exp time.Time, groups ...string) string {
		b, _ := json.Marshal(map[string]any{"iss": hs.URL, "aud": "vigil", "sub": "ana-1", "email": "ana@example.com",
			"groups": groups, "exp": exp.Unix(), "iat": time.Now().Unix()})
		return oidctest.SignIDToken(key, "k", "RS256", string(b))
	}
}

func withTokens(t *testing.T, issuer, upstreamPW string) harnessOpt {
	v, err := oidcauth.New(oidcauth.Config{Issuer: issuer, ClientID: "vigil", ClockSkew: -1,
		Roles: []oidcauth.Role{{Group: "dba", User: "vigil_scram", Password: upstreamPW}}})
	if err != nil {
		t.Fatal(err)
	}
	return func(c *Config) {
		c.TokenAuth = func(ctx context.Context, token string) (*TokenLogin, error) {
			l, err := v.Verify(ctx, token)
			if err != nil {
				return nil, err
			}
			return &TokenLogin{Identity: l.Identity, Upstream: Credentials{User: l.Role.User, Password: l.Role.Password}, Expires: l.Expires}, nil
		}
	}
}

// A person logs in with an ID token as the password: the session runs as the role their
// group maps to, every event carries their identity, a refused token is not repeated back,
// and the session ends with FATAL 28000 when the token expires.
func TestTokenAuth(t *testing.T) {
	issuer, sign := tokenIssuer(t)
	pg := testpg.Start(t)
	h := startOn(t, pg, withTokens(t, issuer, pg.Password))
	ctx := context.Background()
	connect := func(token string) (*pgx.Conn, error) {
		return pgx.Connect(ctx, h.dsn("ana", "postgres")+"&password="+token)
	}

	c, err := connect(sign(time.Now().Add(time.Hour), "dba"))
	if err != nil {
		t.Fatal(err)
	}
	var user string
	if err := c.QueryRow(ctx, "SELECT current_user /* as ana */").Scan(&user); err != nil || user != "vigil_scram" {
		t.Errorf("current_user = %q, %v; want the mapped role vigil_scram", user, err)
	}
	c.Close(ctx)
	e := h.log.Find(t, "/* as ana */")
	if e.Identity == nil || e.Identity.Subject != "ana-1" || e.Identity.Email != "ana@example.com" || e.Identity.Issuer != issuer ||
		len(e.Identity.Groups) != 1 || e.Identity.Groups[0] != "dba" || e.DBUser != "vigil_scram" {
		t.Errorf("event identity %+v, db_user %q", e.Identity, e.DBUser)
	}

	refused := map[string]string{
		"expired":       sign(time.Now().Add(-time.Minute), "dba"),
		"unmapped":      sign(time.Now().Add(time.Hour), "sales"),
		"forged":        sign(time.Now().Add(time.Hour), "dba")[:40] + "x" + sign(time.Now().Add(time.Hour), "dba")[41:],
		"not-a-token":   "hunter2",
		"the-upstreams": h.pg.Password,
	}
	for name, tok := range refused {
		_, err := connect(tok)
		if pgCode(err) != "28000" || !strings.Contains(err.Error(), "OIDC authentication failed") {
			t.Errorf("%s token: %v, want FATAL 28000", name, err)
		}
		if err != nil && strings.Contains(err.Error(), tok) {
			t.Errorf("%s token: the refusal repeats it: %v", name, err)
		}
	}

	evs := h.log.Wait(t, len(refused), "refused logins", func(e *event.Event) bool { return e.Rule == "proxy:oidc" })
	for _, e := range evs {
		if e.Error != "28000" || e.Decision != event.DecisionBlock || e.DBUser != "ana" || e.Identity != nil ||
			!strings.HasPrefix(e.ErrorMessage, "OIDC authentication failed: ") {
			t.Errorf("refused login event: %+v", e)
		}
		for _, tok := range refused {
			if strings.Contains(e.ErrorMessage, tok) {
				t.Errorf("refused login event repeats the token: %s", e.ErrorMessage)
			}
		}
	}

	c, err = connect(sign(time.Now().Add(1500*time.Millisecond), "dba"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	if _, err := c.Exec(ctx, "SELECT 1"); err != nil {
		t.Fatal(err)
	}
	qctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	_, err = c.Exec(qctx, "SELECT pg_sleep(5)")
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.Code != "28000" || pe.Severity != "FATAL" || !strings.Contains(pe.Message, "expired") {
		t.Errorf("a statement running past the token's expiry: %v, want FATAL 28000", err)
	}
}

// A token sent in cleartext over the network could be replayed by whoever saw it: from
// another host the proxy takes tokens over TLS only, and says so before asking for one.
func TestTokenAuthNeedsTLS(t *testing.T) {
	ip := nonLoopbackIP(t)
	issuer, sign := tokenIssuer(t)
	pg := testpg.Start(t)
	h := startOn(t, pg, withTokens(t, issuer, pg.Password), func(c *Config) { c.Listen = "0.0.0.0:0" })
	ctx := context.Background()
	tok := sign(time.Now().Add(time.Hour), "dba")
	dsn := func(mode string) string {
		return fmt.Sprintf("postgres://ana@%s/postgres?sslmode=%s&password=%s", net.JoinHostPort(ip, h.port()), mode, tok)
	}
	_, err := pgx.Connect(ctx, dsn("disable"))
	if pgCode(err) != "28000" || !strings.Contains(err.Error(), "only over TLS") {
		t.Errorf("cleartext from %s: %v, want FATAL 28000 asking for TLS", ip, err)
	}
	c, err := pgx.Connect(ctx, dsn("require"))
	if err != nil {
		t.Fatalf("over TLS from %s: %v", ip, err)
	}
	c.Close(ctx)
}

// nonLoopbackIP is an address of this host that is not loopback.
func nonLoopbackIP(t *testing.T) string {
	t.Helper()
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && !n.IP.IsLoopback() && n.IP.To4() != nil {
			return n.IP.String()
		}
	}
	t.Skip("this host has no non-loopback IPv4 address to connect from")
	return ""
}
