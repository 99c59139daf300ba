package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/vigil-db/vigil/pkg/approval"
	"github.com/vigil-db/vigil/pkg/capture"
	"github.com/vigil-db/vigil/pkg/config"
	"github.com/vigil-db/vigil/pkg/enforce"
	"github.com/vigil-db/vigil/pkg/event"
	"github.com/vigil-db/vigil/pkg/identity"
	"github.com/vigil-db/vigil/pkg/oidcauth"
	"github.com/vigil-db/vigil/pkg/policy"
	"github.com/vigil-db/vigil/pkg/steer"
)

// newProxy builds one enforcement proxy listener. Its upstream connections are announced to
// capture, which then leaves them to the proxy: each statement is recorded once.
func newProxy(px config.Proxy, recordParams bool, engine *policy.Engine, sink event.Sink, capt *capture.Capturer, st *steering, approvals *approval.Store, idOpts identity.Options, reg prometheus.Registerer, log *slog.Logger) (*enforce.Server, error) {
	cfg := enforce.Config{Listen: px.Listen, Upstream: px.Upstream, RecordParams: recordParams, Approvals: approvals,
		MaxConnections: px.MaxConnections, MaxMessageSize: px.MaxMessageSize}
	if px.TLSCert != "" {
		cert, err := tls.LoadX509KeyPair(px.TLSCert, px.TLSKey)
		if err != nil {
			return nil, fmt.Errorf("loading the proxy's TLS certificate: %w", err)
		}
		cfg.ClientTLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	if px.UpstreamTLS {
		tc := &tls.Config{MinVersion: tls.VersionTLS12}
		if px.UpstreamCA != "" {
			pem, err := os.ReadFile(px.UpstreamCA)
			if err != nil {
				return nil, fmt.Errorf("reading upstream_ca: %w", err)
			}
			tc.RootCAs = x509.NewCertPool()
			if !tc.RootCAs.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("upstream_ca %s: no PEM certificates", px.UpstreamCA)
			}
		}
		cfg.UpstreamTLS = tc
	}
	if px.CatalogUser != "" {
		cfg.Catalog.User = px.CatalogUser
	}
	var err error
	if cfg.Catalog.Password, err = secretFromEnv("catalog_password_env", px.CatalogPasswordEnv); err != nil {
		return nil, err
	}
	if px.UpstreamUser != "" {
		creds := &enforce.Credentials{User: px.UpstreamUser}
		if creds.Password, err = secretFromEnv("upstream_password_env", px.UpstreamPasswordEnv); err != nil {
			return nil, err
		}
		if creds.ClientPassword, err = secretFromEnv("client_password_env", px.ClientPasswordEnv); err != nil {
			return nil, err
		}
		switch {
		case creds.ClientPassword == "":
			log.Warn("proxy terminates authentication and asks clients for no password: anyone who reaches the listener is logged in upstream", "listen", px.Listen, "upstream_user", px.UpstreamUser)
		case cfg.ClientTLS == nil:
			log.Warn("proxy asks clients for a cleartext password without TLS (set tls_cert and tls_key)", "listen", px.Listen)
		}
		cfg.UpstreamCredentials = creds
	}
	if px.Auth == "oidc" {
		if cfg.TokenAuth, err = tokenAuth(px, log); err != nil {
			return nil, err
		}
		if cfg.ClientTLS == nil {
			log.Warn("proxy takes OIDC tokens without TLS: only clients on this host can log in (set tls_cert and tls_key)", "listen", px.Listen)
		}
	}
	ident := identity.New(idOpts)
	owners := &identity.OwnerCache{}
	cfg.Identify = func(_ context.Context, client net.Conn) enforce.Principal {
		if st != nil {
			if o, by, ok := st.origin(client); ok {
				return enforce.Principal{Process: steeredClient(ident, o), Steered: true, SteeredBy: by}
			}
			if by, ok := st.remoteOrigin(client); ok {
				// A client from another network namespace: its address is its identity,
				// unless it is a pod or container on this host, whose socket (and so its
				// process, container and pod) the agent can find. Capture sees the
				// connection on the wire as one to the server it dialled; the proxy records it.
				p := enforce.Principal{Steered: true, SteeredBy: by}
				ra, rok := addrPort(client.RemoteAddr())
				la, lok := addrPort(client.LocalAddr())
				if rok && lok {
					if owner, err := identity.TCPOwner(ra, la); err == nil {
						p.Process, _ = ident.Lookup(owner)
					}
				}
				if rok && capt != nil {
					capt.Ignore(ra)
					p.OnClose = func() { capt.Unignore(ra) }
				}
				return p
			}
		}
		return enforce.Principal{Process: localClient(ident, owners, client)}
	}
	if capt != nil {
		cfg.OnUpstreamConn = func(local, _ net.Addr, open bool) {
			ap, ok := addrPort(local)
			if !ok {
				return
			}
			if open {
				capt.Ignore(ap)
			} else {
				capt.Unignore(ap)
			}
		}
	}
	return enforce.New(cfg, engine, sink, reg, log)
}

// tokenAuth builds the verifier of a proxy with auth: oidc. The issuer is discovered now
// if it answers, and otherwise at the first login.
func tokenAuth(px config.Proxy, log *slog.Logger) (func(context.Context, string) (*enforce.TokenLogin, error), error) {
	o := px.OIDC
	roles := make([]oidcauth.Role, len(o.Roles))
	for i, r := range o.Roles {
		pw, err := rolePassword(r)
		if err != nil {
			return nil, fmt.Errorf("proxies: oidc.roles[%d]: %w", i, err)
		}
		roles[i] = oidcauth.Role{Group: r.Group, User: r.User, Password: pw}
	}
	v, err := oidcauth.New(oidcauth.Config{Issuer: o.Issuer, ClientID: o.ClientID, GroupsClaim: o.GroupsClaim, ClockSkew: o.ClockSkew, Roles: roles})
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := v.Discover(ctx); err != nil {
		log.Warn("OIDC issuer not reachable yet; logins fail until it is", "listen", px.Listen, "issuer", o.Issuer, "err", err)
	}
	return func(ctx context.Context, token string) (*enforce.TokenLogin, error) {
		l, err := v.Verify(ctx, token)
		if err != nil {
			return nil, err
		}
		return &enforce.TokenLogin{Identity: l.Identity, Upstream: enforce.Credentials{User: l.Role.User, Password: l.Role.Password}, Expires: l.Expires}, nil
	}, nil
}

// rolePassword reads an OIDC role's upstream password from its environment variable or
// file (the first line); neither means no password (trust, peer-equivalent setups).
func rolePassword(r config.OIDCRole) (string, error) {
	if r.PasswordFile != "" {
		b, err := os.ReadFile(r.PasswordFile)
		if err != nil {
			return "", fmt.Errorf("password_file: %w", err)
		}
		line, _, _ := strings.Cut(string(b), "\n")
		return strings.TrimRight(line, "\r"), nil
	}
	return secretFromEnv("password_env", r.PasswordEnv)
}

// secretFromEnv reads a password from the environment variable a config key names ("" when
// the key is unset), so that secrets never sit in the config file.
func secretFromEnv(key, name string) (string, error) {
	if name == "" {
		return "", nil
	}
	v, ok := os.LookupEnv(name)
	if !ok {
		return "", fmt.Errorf("%s: environment variable %s is not set", key, name)
	}
	return v, nil
}

// localClient names the process behind a proxied connection when it runs on this host.
func localClient(ident *identity.Resolver, owners *identity.OwnerCache, c net.Conn) *event.Process {
	remote, ok1 := addrPort(c.RemoteAddr())
	local, ok2 := addrPort(c.LocalAddr())
	if !ok1 || !ok2 || !remote.Addr().IsLoopback() {
		return nil
	}
	pid, err := owners.TCPOwner(remote, local)
	if err != nil {
		return nil
	}
	p, err := ident.Lookup(pid)
	if err != nil {
		return nil
	}
	return p
}

// steeredClient names the process behind a steered connection from what the kernel
// recorded at its connect(), enriched from /proc while the process lives.
func steeredClient(ident *identity.Resolver, o steer.Origin) *event.Process {
	if p, err := ident.Lookup(int(o.TGID)); err == nil && p.PID == int32(o.TGID) {
		return p
	}
	uid := int32(o.UID)
	return &event.Process{PID: int32(o.TGID), UID: &uid, Comm: o.Comm}
}

func addrPort(a net.Addr) (netip.AddrPort, bool) {
	ta, ok := a.(*net.TCPAddr)
	if !ok {
		return netip.AddrPort{}, false
	}
	ap := ta.AddrPort()
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), true
}
