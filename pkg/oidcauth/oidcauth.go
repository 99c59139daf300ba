// Package oidcauth verifies the OpenID Connect ID tokens people present to the enforcing
// proxy as their password, and maps a verified person to a policy principal and to the
// upstream role the proxy logs in as. Any compliant issuer works (Okta, Entra ID, Google,
// Keycloak, Hydra): the issuer's keys come from its discovery document and JWKS, refetched
// when a token names a key the proxy has not seen, so the issuer can rotate keys at will.
//
// The proxy accepts ID tokens, not access tokens: an ID token's audience is the OAuth client
// the person logged in with (the one `vigil login` uses), which is what binds the token to
// this use; access tokens are often opaque, and their audience is an API, not the proxy.
package oidcauth

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"

	"github.com/vigil-db/vigil/pkg/event"
)

// DefaultClockSkew is how far the proxy's clock may be behind the issuer's, unless
// configured: a token is accepted until this long after its expiry, and its session lasts
// as long.
const DefaultClockSkew = 30 * time.Second

// fetchTimeout bounds fetching the issuer's discovery document or keys: a login waits for
// them, and an issuer that hangs must not hold sessions in startup.
const fetchTimeout = 10 * time.Second

// Config says which tokens are accepted and what a verified person becomes.
type Config struct {
	// Issuer is the issuer URL, exactly as tokens carry it in "iss".
	Issuer string
	// ClientID is the OAuth client people log in with: tokens must carry it in "aud".
	ClientID string
	// GroupsClaim names the claim that lists the person's groups; default "groups".
	GroupsClaim string
	// Roles map groups to upstream roles, first match wins (in the configured order).
	Roles []Role
	// HTTPClient fetches discovery and keys; nil: a client with a 10 s timeout.
	HTTPClient *http.Client
	// ClockSkew is the tolerance for clocks; zero: DefaultClockSkew, negative: none.
	ClockSkew time.Duration
	// Now is the clock (tests); nil: time.Now.
	Now func() time.Time
}

// Role is the upstream login a group's members get.
type Role struct {
	// Group is a group name from the token, or "*" for every verified person.
	Group string
	// User and Password are the PostgreSQL login the proxy uses upstream.
	User, Password string
}

// Login is a verified person.
type Login struct {
	Identity event.Identity
	Role     Role
	// Expires is when the session must end: the token's expiry plus the clock skew.
	Expires time.Time
}

// Refusal is why a token was not accepted, in words safe to show the client and to log:
// it never contains the token.
type Refusal struct {
	Reason string // expired, not_yet_valid, issuer, audience, signature, malformed, no_role, unavailable
	msg    string
	err    error
}

func (r *Refusal) Error() string { return r.msg }
func (r *Refusal) Unwrap() error { return r.err }

// Verifier checks tokens against one issuer.
type Verifier struct {
	cfg Config

	mu       sync.Mutex
	verifier *oidc.IDTokenVerifier // nil until discovery succeeded
}

// New checks cfg; discovery happens on first use (and is retried until it succeeds), so an
// issuer that is down when the agent starts does not keep the proxy from starting.
func New(cfg Config) (*Verifier, error) {
	if cfg.Issuer == "" || cfg.ClientID == "" {
		return nil, errors.New("oidcauth: issuer and client_id are required")
	}
	if !strings.HasPrefix(cfg.Issuer, "https://") && !strings.HasPrefix(cfg.Issuer, "http://") {
		return nil, fmt.Errorf("oidcauth: issuer %q: want an http(s) URL", cfg.Issuer)
	}
	if len(cfg.Roles) == 0 {
		return nil, errors.New("oidcauth: at least one role mapping (group → upstream user) is required")
	}
	for i, r := range cfg.Roles {
		if r.Group == "" || r.User == "" {
			return nil, fmt.Errorf("oidcauth: roles[%d]: group and user are required", i)
		}
	}
	if cfg.GroupsClaim == "" {
		cfg.GroupsClaim = "groups"
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{Timeout: fetchTimeout}
	}
	switch {
	case cfg.ClockSkew == 0:
		cfg.ClockSkew = DefaultClockSkew
	case cfg.ClockSkew < 0:
		cfg.ClockSkew = 0
	}
	return &Verifier{cfg: cfg}, nil
}

// Discover fetches the issuer's discovery document if that has not happened yet.
func (v *Verifier) Discover(ctx context.Context) error {
	_, err := v.idVerifier(ctx)
	return err
}

func (v *Verifier) idVerifier(ctx context.Context) (*oidc.IDTokenVerifier, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.verifier != nil {
		return v.verifier, nil
	}
	ctx = oidc.ClientContext(ctx, v.cfg.HTTPClient)
	dctx, cancel := context.WithTimeout(ctx, fetchTimeout)
	defer cancel()
	p, err := oidc.NewProvider(dctx, v.cfg.Issuer)
	if err != nil {
		return nil, fmt.Errorf("oidcauth: discovering issuer %s: %w", v.cfg.Issuer, err)
	}
	// The key set fetches keys with the context given here, for the provider's lifetime.
	keysCtx := oidc.ClientContext(context.Background(), v.cfg.HTTPClient)
	var claims struct {
		JWKS string   `json:"jwks_uri"`
		Algs []string `json:"id_token_signing_alg_values_supported"`
	}
	if err := p.Claims(&claims); err != nil {
		return nil, fmt.Errorf("oidcauth: issuer %s discovery document: %w", v.cfg.Issuer, err)
	}
	if claims.JWKS == "" {
		return nil, fmt.Errorf("oidcauth: issuer %s publishes no jwks_uri", v.cfg.Issuer)
	}
	keys := oidc.NewRemoteKeySet(keysCtx, claims.JWKS)
	v.verifier = oidc.NewVerifier(v.cfg.Issuer, keys, &oidc.Config{
		ClientID:             v.cfg.ClientID,
		SupportedSigningAlgs: claims.Algs,
		Now:                  func() time.Time { return v.cfg.Now().Add(-v.cfg.ClockSkew) },
	})
	return v.verifier, nil
}

// Verify checks a token's issuer, audience, expiry and signature, and maps the person it
// names to a role. Errors are *Refusal.
func (v *Verifier) Verify(ctx context.Context, token string) (*Login, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*fetchTimeout)
	defer cancel()
	iv, err := v.idVerifier(ctx)
	if err != nil {
		return nil, &Refusal{Reason: "unavailable", msg: "the identity provider could not be reached", err: err}
	}
	tok, err := iv.Verify(ctx, token)
	if err != nil {
		return nil, classify(err)
	}
	var claims map[string]any
	if err := tok.Claims(&claims); err != nil {
		return nil, &Refusal{Reason: "malformed", msg: "the token's claims are not a JSON object", err: err}
	}
	id := event.Identity{Issuer: tok.Issuer, Subject: tok.Subject}
	if email, ok := claims["email"].(string); ok && claims["email_verified"] != false {
		// An address the issuer says it has not verified names nobody.
		id.Email = email
	}
	groups, err := stringList(claims[v.cfg.GroupsClaim])
	if err != nil {
		return nil, &Refusal{Reason: "malformed", msg: fmt.Sprintf("claim %q: %v", v.cfg.GroupsClaim, err), err: err}
	}
	id.Groups = groups
	role, ok := v.role(groups)
	if !ok {
		return nil, &Refusal{Reason: "no_role", msg: "none of your groups is mapped to a database role on this proxy"}
	}
	return &Login{Identity: id, Role: role, Expires: tok.Expiry.Add(v.cfg.ClockSkew)}, nil
}

// role is the first mapping that matches one of groups.
func (v *Verifier) role(groups []string) (Role, bool) {
	for _, r := range v.cfg.Roles {
		if r.Group == "*" {
			return r, true
		}
		for _, g := range groups {
			if g == r.Group {
				return r, true
			}
		}
	}
	return Role{}, false
}

// stringList reads a claim that is a list of strings (or a single string, as some issuers
// send a one-group list); absent is empty.
func stringList(c any) ([]string, error) {
	switch c := c.(type) {
	case nil:
		return nil, nil
	case string:
		return []string{c}, nil
	case []any:
		out := make([]string, 0, len(c))
		for _, x := range c {
			s, ok := x.(string)
			if !ok {
				return nil, fmt.Errorf("want a list of strings, found a %T in it", x)
			}
			out = append(out, s)
		}
		return out, nil
	default:
		return nil, fmt.Errorf("want a list of strings, got %T", c)
	}
}

// classify turns go-oidc's verification errors into refusals. Its messages name the
// expected and found issuer or audience, never the token.
func classify(err error) *Refusal {
	var exp *oidc.TokenExpiredError
	msg := err.Error()
	switch {
	case errors.As(err, &exp):
		return &Refusal{Reason: "expired", msg: "the token expired at " + exp.Expiry.UTC().Format(time.RFC3339) + "; log in again", err: err}
	case strings.Contains(msg, "different provider"):
		return &Refusal{Reason: "issuer", msg: "the token was issued by another identity provider", err: err}
	case strings.Contains(msg, "expected audience"):
		return &Refusal{Reason: "audience", msg: "the token was issued for another client", err: err}
	case strings.Contains(msg, "fetching keys"), strings.Contains(msg, "get keys failed"):
		return &Refusal{Reason: "unavailable", msg: "the identity provider's keys could not be fetched", err: err}
	case strings.Contains(msg, "before the nbf"):
		return &Refusal{Reason: "not_yet_valid", msg: "the token is not valid yet (check the clocks)", err: err}
	case strings.Contains(msg, "verify signature"), strings.Contains(msg, "verify id token signature"),
		strings.Contains(msg, "signature algorithm"), strings.Contains(msg, "not signed"):
		return &Refusal{Reason: "signature", msg: "the token's signature does not verify", err: err}
	default:
		return &Refusal{Reason: "malformed", msg: "the password is not a valid ID token", err: err}
	}
}
