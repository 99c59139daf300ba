package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/spf13/cobra"
	"golang.org/x/oauth2"
)

// loginTimeout bounds how long `vigil login` waits for the person to finish in the browser
// (or on another device).
const loginTimeout = 5 * time.Minute

// tokenMargin is how long a cached token must still be valid for --print-env to print it
// rather than refresh it: long enough for the client to connect with it.
const tokenMargin = 5 * time.Second

// cachedLogin is what `vigil login` keeps between runs, in the user's cache directory,
// readable by the user alone.
type cachedLogin struct {
	Issuer       string    `json:"issuer"`
	ClientID     string    `json:"client_id"`
	IDToken      string    `json:"id_token"`
	RefreshToken string    `json:"refresh_token,omitempty"`
	Expiry       time.Time `json:"expiry"`
	User         string    `json:"user"` // email, or subject when the token has none
}

func (c *cachedLogin) fresh() bool { return time.Until(c.Expiry) > tokenMargin }

func newLoginCmd() *cobra.Command {
	var (
		issuer, clientID, secretEnv string
		scopes                      []string
		device, printEnv            bool
	)
	cmd := &cobra.Command{
		Use:   "login",
		Short: "Log in with the identity provider (OIDC) and cache the ID token the proxy accepts",
		Long: `Logs in with an OIDC identity provider and caches the ID token, which a Vigil proxy
with auth: oidc accepts as the password. The default flow opens the browser ($BROWSER, or
xdg-open; the URL is printed too) with PKCE and a loopback redirect; --device uses the device
code flow for machines without a browser. --print-env prints PGUSER and PGPASSWORD for psql
and other libpq tools (logging in first when the cached token has expired and cannot be
refreshed):

  eval "$(vigil login --issuer https://id.example.com --client-id vigil --print-env)"
  psql -h proxy.example.com -p 6432 -d app`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			path, err := loginCachePath()
			if err != nil {
				return err
			}
			cached, _ := readLogin(path)
			if cached != nil && (issuer != "" && issuer != cached.Issuer || clientID != "" && clientID != cached.ClientID) {
				cached = nil // a login with another provider or client
			}
			if issuer == "" && cached != nil {
				issuer, clientID = cached.Issuer, cached.ClientID
			}
			if issuer == "" || clientID == "" {
				return errors.New("give --issuer and --client-id (no cached login to reuse)")
			}
			secret, err := secretFromEnv("--client-secret-env", secretEnv)
			if err != nil {
				return err
			}
			lc := &loginClient{issuer: issuer, clientID: clientID, secret: secret, scopes: scopes, out: cmd.ErrOrStderr()}
			login := cached
			if printEnv && login != nil && !login.fresh() {
				if login, err = lc.refresh(ctx, login); err != nil {
					fmt.Fprintf(lc.out, "vigil login: the cached token expired and could not be refreshed (%v); logging in again\n", err)
				}
			}
			if !printEnv || login == nil {
				if login, err = lc.login(ctx, device); err != nil {
					return err
				}
				fmt.Fprintf(lc.out, "vigil login: logged in as %s; the token is valid until %s\n", login.User, login.Expiry.Local().Format(time.DateTime))
			}
			if err := writeLogin(path, login); err != nil {
				return err
			}
			if printEnv {
				fmt.Fprintf(cmd.OutOrStdout(), "export PGUSER=%s\nexport PGPASSWORD=%s\n", shellQuote(login.User), shellQuote(login.IDToken))
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&issuer, "issuer", "", "the identity provider's issuer URL (default: the cached login's)")
	f.StringVar(&clientID, "client-id", "", "the OAuth client to log in with, the proxy's oidc.client_id")
	f.StringVar(&secretEnv, "client-secret-env", "", "environment variable holding the client secret, for providers that give installed apps one")
	f.StringSliceVar(&scopes, "scope", nil, "extra scopes to ask for (e.g. groups, offline_access); openid and email are always asked for")
	f.BoolVar(&device, "device", false, "use the device code flow (enter a code on another device) instead of the browser")
	f.BoolVar(&printEnv, "print-env", false, "print PGUSER and PGPASSWORD for psql, logging in only when the cached token cannot be used")
	return cmd
}

// loginClient runs the OAuth flows against one issuer and client.
type loginClient struct {
	issuer, clientID, secret string
	scopes                   []string
	out                      io.Writer // where the person is told what to do
}

func (lc *loginClient) config(ctx context.Context) (*oidc.Provider, *oauth2.Config, error) {
	p, err := oidc.NewProvider(ctx, lc.issuer)
	if err != nil {
		return nil, nil, fmt.Errorf("discovering %s: %w", lc.issuer, err)
	}
	return p, &oauth2.Config{ClientID: lc.clientID, ClientSecret: lc.secret, Endpoint: p.Endpoint(),
		Scopes: append([]string{oidc.ScopeOpenID, "email"}, lc.scopes...)}, nil
}

// login runs the browser flow (or the device flow) and returns the verified result.
func (lc *loginClient) login(ctx context.Context, device bool) (*cachedLogin, error) {
	ctx, cancel := context.WithTimeout(ctx, loginTimeout)
	defer cancel()
	p, cfg, err := lc.config(ctx)
	if err != nil {
		return nil, err
	}
	var tok *oauth2.Token
	nonce := ""
	if device {
		tok, err = lc.deviceFlow(ctx, cfg)
	} else {
		nonce = randomString()
		tok, err = lc.browserFlow(ctx, cfg, nonce)
	}
	if err != nil {
		return nil, err
	}
	return lc.result(ctx, p, tok, nonce)
}

// browserFlow is the authorization code flow with PKCE, returning to a loopback redirect
// (RFC 8252): the code never leaves this machine and is useless without the verifier.
func (lc *loginClient) browserFlow(ctx context.Context, cfg *oauth2.Config, nonce string) (*oauth2.Token, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("listening for the login's redirect: %w", err)
	}
	defer l.Close()
	cfg.RedirectURL = fmt.Sprintf("http://127.0.0.1:%d/callback", l.Addr().(*net.TCPAddr).Port)
	state, verifier := randomString(), oauth2.GenerateVerifier()
	type result struct {
		code string
		err  error
	}
	got := make(chan result, 1)
	srv := &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/callback" {
			http.NotFound(w, r)
			return
		}
		q := r.URL.Query()
		var res result
		switch {
		case q.Get("state") != state:
			res.err = errors.New("the login's redirect carries another state (a stale or forged redirect)")
		case q.Get("error") != "":
			res.err = fmt.Errorf("the identity provider refused: %s: %s", q.Get("error"), q.Get("error_description"))
		case q.Get("code") == "":
			res.err = errors.New("the login's redirect carries no code")
		default:
			res.code = q.Get("code")
		}
		if res.err != nil {
			http.Error(w, "Vigil login failed: "+res.err.Error(), http.StatusBadRequest)
		} else {
			fmt.Fprintln(w, "Vigil: you are logged in. You can close this window and go back to the terminal.")
		}
		select {
		case got <- res:
		default:
		}
	})}
	go func() { _ = srv.Serve(l) }()
	defer srv.Close()
	url := cfg.AuthCodeURL(state, oauth2.S256ChallengeOption(verifier), oidc.Nonce(nonce))
	fmt.Fprintf(lc.out, "vigil login: open this address to log in (waiting up to %v):\n  %s\n", loginTimeout, url)
	openBrowser(url)
	select {
	case <-ctx.Done():
		return nil, fmt.Errorf("waiting for the login in the browser: %w", ctx.Err())
	case res := <-got:
		if res.err != nil {
			return nil, res.err
		}
		tok, err := cfg.Exchange(ctx, res.code, oauth2.VerifierOption(verifier))
		if err != nil {
			return nil, fmt.Errorf("exchanging the login's code: %w", err)
		}
		return tok, nil
	}
}

// deviceFlow is the device authorization grant (RFC 8628): the person enters a code at the
// provider's address on any device.
func (lc *loginClient) deviceFlow(ctx context.Context, cfg *oauth2.Config) (*oauth2.Token, error) {
	if cfg.Endpoint.DeviceAuthURL == "" {
		return nil, fmt.Errorf("%s offers no device authorization endpoint; log in without --device", lc.issuer)
	}
	da, err := cfg.DeviceAuth(ctx)
	if err != nil {
		return nil, fmt.Errorf("starting the device flow: %w", err)
	}
	if da.VerificationURIComplete != "" {
		fmt.Fprintf(lc.out, "vigil login: open %s (code %s) on any device to log in\n", da.VerificationURIComplete, da.UserCode)
		openBrowser(da.VerificationURIComplete)
	} else {
		fmt.Fprintf(lc.out, "vigil login: open %s on any device and enter the code %s\n", da.VerificationURI, da.UserCode)
		openBrowser(da.VerificationURI)
	}
	tok, err := cfg.DeviceAccessToken(ctx, da)
	if err != nil {
		return nil, fmt.Errorf("waiting for the device login: %w", err)
	}
	return tok, nil
}

// refresh trades the cached refresh token for a new ID token.
func (lc *loginClient) refresh(ctx context.Context, c *cachedLogin) (*cachedLogin, error) {
	if c.RefreshToken == "" {
		return nil, errors.New("no refresh token (ask for the offline_access scope)")
	}
	p, cfg, err := lc.config(ctx)
	if err != nil {
		return nil, err
	}
	tok, err := cfg.TokenSource(ctx, &oauth2.Token{RefreshToken: c.RefreshToken}).Token()
	if err != nil {
		return nil, fmt.Errorf("refreshing: %w", err)
	}
	if tok.RefreshToken == "" {
		tok.RefreshToken = c.RefreshToken
	}
	return lc.result(ctx, p, tok, "")
}

// result verifies the ID token of a token response as the proxy will, and keeps it.
func (lc *loginClient) result(ctx context.Context, p *oidc.Provider, tok *oauth2.Token, nonce string) (*cachedLogin, error) {
	raw, _ := tok.Extra("id_token").(string)
	if raw == "" {
		return nil, errors.New("the identity provider returned no ID token (is openid among the client's scopes?)")
	}
	idt, err := p.Verifier(&oidc.Config{ClientID: lc.clientID}).Verify(ctx, raw)
	if err != nil {
		return nil, fmt.Errorf("the identity provider's ID token does not verify: %w", err)
	}
	if nonce != "" && idt.Nonce != nonce {
		return nil, errors.New("the ID token carries another nonce (a replayed login)")
	}
	var claims struct {
		Email string `json:"email"`
	}
	_ = idt.Claims(&claims)
	user := claims.Email
	if user == "" {
		user = idt.Subject
	}
	return &cachedLogin{Issuer: lc.issuer, ClientID: lc.clientID, IDToken: raw, RefreshToken: tok.RefreshToken, Expiry: idt.Expiry, User: user}, nil
}

// openBrowser starts $BROWSER (or xdg-open) on url, if there is one (a machine without a
// browser has neither); the address is printed anyway for whoever has to open it by hand.
func openBrowser(url string) {
	name := os.Getenv("BROWSER")
	if name == "" {
		name = "xdg-open"
	}
	path, err := exec.LookPath(name)
	if err != nil {
		return
	}
	cmd := exec.Command(path, url)
	if cmd.Start() == nil {
		go func() { _ = cmd.Wait() }()
	}
}

// loginCachePath is where the login is cached: ~/.cache/vigil/login.json.
func loginCachePath() (string, error) {
	dir, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("finding the cache directory: %w", err)
	}
	return filepath.Join(dir, "vigil", "login.json"), nil
}

func readLogin(path string) (*cachedLogin, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var c cachedLogin
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &c, nil
}

// writeLogin replaces the cache file atomically, readable by the user alone: it holds a
// token that logs the person in.
func writeLogin(path string, c *cachedLogin) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("creating the cache directory: %w", err)
	}
	b, err := json.Marshal(c)
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".login-*")
	if err != nil {
		return fmt.Errorf("caching the login: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return fmt.Errorf("caching the login: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

func randomString() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// shellQuote quotes s for a POSIX shell's eval.
func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }
