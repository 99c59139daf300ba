// Package enforce is Vigil's PostgreSQL enforcement proxy: a wire-protocol proxy that puts the
// policy between a client and its server. Every statement (simple or extended protocol,
// FunctionCall, startup parameters) is judged on exactly the bytes the server will run; refused
// ones are answered with an ErrorResponse that names the rule, while the server is kept in the
// same transaction state as the client; result columns that the policy classifies as PII leave
// masked; and each statement becomes one audit event (source "proxy") on a event.Sink.
package enforce

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/vigil-db/vigil/pkg/approval"
	"github.com/vigil-db/vigil/pkg/event"
)

// Config configures one proxy listener.
type Config struct {
	// Listen is the address to accept clients on (host:port).
	Listen string
	// Upstream is the PostgreSQL server (host:port) that clients are relayed to, unless Route
	// chooses another per connection.
	Upstream string

	// ClientTLS, when set, lets clients negotiate TLS with the proxy (SSLRequest, or a direct
	// TLS handshake); its certificates are the proxy's. Nil refuses TLS (clients in
	// sslmode=prefer fall back to plaintext; sslmode=require fails).
	ClientTLS *tls.Config
	// RequireClientTLS refuses clients that do not negotiate TLS.
	RequireClientTLS bool
	// UpstreamTLS, when set, makes every upstream connection TLS (required, not preferred).
	UpstreamTLS *tls.Config

	// UpstreamCredentials, when set, terminates authentication at the proxy: clients must
	// present ClientPassword (cleartext, so only over TLS unless the operator accepts it) or
	// nothing when it is empty, and the proxy logs in upstream as this user. When nil,
	// authentication is passed through (SCRAM, md5, cleartext, trust) and the proxy never sees
	// a usable secret.
	UpstreamCredentials *Credentials

	// TokenAuth, when set, makes people log in with an OIDC ID token as their password
	// (asked for in cleartext, so accepted only over TLS or from loopback). It verifies the
	// token and returns who the person is and which upstream login their session uses; the
	// session ends when the login expires. Its errors are shown to the client, so they must
	// not contain the token. It replaces UpstreamCredentials.
	TokenAuth func(ctx context.Context, token string) (*TokenLogin, error)

	// Catalog is the login the proxy uses on its side connections to read pg_catalog, to
	// learn which table and column a result column comes from. Zero: user "postgres" without
	// a password (trust or peer-equivalent setups).
	Catalog Credentials

	// Route chooses the upstream for one client connection. Nil: always Upstream. This is the
	// seam for transparent steering, where the agent knows the original destination.
	Route func(ctx context.Context, client net.Conn) (string, error)
	// Identify returns who is behind a client connection (process, verified identity, groups),
	// as the agent sees it. Nil: nothing beyond the startup message.
	Identify func(ctx context.Context, client net.Conn) Principal
	// OnUpstreamConn is called when the proxy opens (open=true) or closes an upstream
	// connection, with its local and remote addresses, so that capture on the same host can
	// ignore traffic the proxy already records.
	OnUpstreamConn func(local, remote net.Addr, open bool)

	// Approvals, when set, holds or refuses (as the rule says) statements that a rule sends
	// to require_approval, as approval requests, and runs them once granted. Nil refuses
	// them with no request.
	Approvals *approval.Store

	// RecordParams puts bind parameters (and FunctionCall arguments) on events, rendered as
	// capture renders them (audit.record_params).
	RecordParams bool

	// MaxMessageSize bounds any single message the proxy has to hold to inspect it (a
	// statement, a row to mask); a larger one ends its session with 54000. Zero: 64 MiB.
	MaxMessageSize int
	// MaxConnections caps concurrent client sessions: the next client gets FATAL 53300
	// once its startup packet is read, before an upstream connection is opened (cancel
	// requests are still served). With MaxMessageSize it bounds the proxy's memory. Zero:
	// DefaultMaxConnections.
	MaxConnections int
	// DialTimeout bounds connecting to the upstream. Zero: 10 s.
	DialTimeout time.Duration
}

// DefaultMaxConnections is the session cap of a proxy configured without one: above
// PostgreSQL's own default (100), so that the server, not the proxy, is what limits an
// ordinary deployment.
const DefaultMaxConnections = 1000

// Credentials are a PostgreSQL login.
type Credentials struct {
	User, Password string
	// ClientPassword is what clients must present to the proxy when authentication is
	// terminated (UpstreamCredentials); empty accepts any client.
	ClientPassword string
}

// TokenLogin is a person verified by TokenAuth.
type TokenLogin struct {
	// Identity is recorded on every event of the session and judged by the policy.
	Identity event.Identity
	// Upstream is the login the proxy uses for the session (ClientPassword unused).
	Upstream Credentials
	// Expires is when the session ends.
	Expires time.Time
}

// Principal is what the agent knows about the client behind a connection.
type Principal struct {
	Process  *event.Process
	Identity *event.Identity
	Groups   []string
	// Steered says the kernel moved the connection into the proxy; SteeredBy names the
	// selector or flag that did ("" when it has no name).
	Steered   bool
	SteeredBy string
	// OnClose, when set, is called once the session has ended (the agent's bookkeeping for
	// the connection).
	OnClose func()
}

// Server is one proxy listener.
type Server struct {
	cfg    Config
	policy Policy
	sink   event.Sink
	log    *slog.Logger
	m      *metrics
	keys   *cancelKeys
	cat    *catalog

	ready    chan struct{}
	addr     net.Addr
	upMu     sync.Mutex
	upstream map[string]net.Addr // open upstream connections by local address
	sessions sync.WaitGroup
	// admitted counts the sessions past startup negotiation, against cfg.MaxConnections.
	admitted atomic.Int64
	// holds are the sessions holding a statement for approval, by the key a client's
	// CancelRequest names: a cancel withdraws the request.
	holds sync.Map // proxyKey -> context.CancelCauseFunc
}

// New checks cfg and builds a Server; nothing listens until Serve.
func New(cfg Config, engine Policy, sink event.Sink, reg prometheus.Registerer, log *slog.Logger) (*Server, error) {
	if engine == nil || sink == nil {
		return nil, errors.New("enforce: a policy engine and a sink are required")
	}
	if cfg.Upstream == "" && cfg.Route == nil {
		return nil, errors.New("enforce: no upstream configured")
	}
	if cfg.Upstream != "" {
		if _, _, err := net.SplitHostPort(cfg.Upstream); err != nil {
			return nil, fmt.Errorf("enforce: upstream %q: %w", cfg.Upstream, err)
		}
	}
	if cfg.TokenAuth != nil && cfg.UpstreamCredentials != nil {
		return nil, errors.New("enforce: TokenAuth and UpstreamCredentials exclude each other")
	}
	if cfg.RequireClientTLS && cfg.ClientTLS == nil {
		return nil, errors.New("enforce: RequireClientTLS needs ClientTLS")
	}
	if cfg.MaxMessageSize <= 0 {
		cfg.MaxMessageSize = 64 << 20
	}
	if cfg.MaxConnections <= 0 {
		cfg.MaxConnections = DefaultMaxConnections
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = 10 * time.Second
	}
	if cfg.Catalog.User == "" {
		cfg.Catalog.User = "postgres"
	}
	if log == nil {
		log = slog.Default()
	}
	log = log.With("component", "enforce", "listen", cfg.Listen)
	m, err := newMetrics(reg, cfg.Listen)
	if err != nil {
		return nil, err
	}
	s := &Server{
		cfg: cfg, policy: engine, sink: sink, log: log, m: m,
		keys:     newCancelKeys(),
		ready:    make(chan struct{}),
		upstream: make(map[string]net.Addr),
	}
	s.cat = newCatalog(s)
	return s, nil
}

// Serve listens on cfg.Listen and proxies clients until ctx ends; then it closes every session
// and returns nil. Ready is closed once the listener is open.
func (s *Server) Serve(ctx context.Context) error {
	l, err := Listen(ctx, s.cfg.Listen)
	if err != nil {
		return fmt.Errorf("enforce: listening on %s: %w", s.cfg.Listen, err)
	}
	return s.ServeListener(ctx, l)
}

// Listen opens a proxy listener: plain TCP. Go listens with MPTCP by default where the
// kernel has it, and an MPTCP listening socket cannot be handed connections by the agent's
// sk_lookup steering (the kernel's socket maps take TCP sockets only).
func Listen(ctx context.Context, addr string) (net.Listener, error) {
	var lc net.ListenConfig
	lc.SetMultipathTCP(false)
	return lc.Listen(ctx, "tcp", addr)
}

// ServeListener is Serve on a listener the caller opened (for example one that receives
// connections steered by the agent). It closes l when ctx ends.
func (s *Server) ServeListener(ctx context.Context, l net.Listener) error {
	s.addr = l.Addr()
	close(s.ready)
	s.log.Info("proxy listening", "addr", l.Addr().String(), "upstream", s.cfg.Upstream)
	stop := context.AfterFunc(ctx, func() { l.Close() })
	defer stop()
	defer s.cat.close()
	var tempDelay time.Duration
	for {
		c, err := l.Accept()
		if err != nil {
			if ctx.Err() != nil {
				s.sessions.Wait()
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, syscall.EMFILE) {
				// Out of descriptors or similar: back off instead of spinning.
				tempDelay = min(max(2*tempDelay, 5*time.Millisecond), time.Second)
				s.log.Warn("accept failed; retrying", "err", err, "delay", tempDelay)
				time.Sleep(tempDelay)
				continue
			}
			s.sessions.Wait()
			return fmt.Errorf("enforce: accepting on %s: %w", l.Addr(), err)
		}
		tempDelay = 0
		s.sessions.Add(1)
		go func() {
			defer s.sessions.Done()
			s.Handle(ctx, c, "")
		}()
	}
}

// Ready is closed when the listener accepts connections.
func (s *Server) Ready() <-chan struct{} { return s.ready }

// Addr is the listening address (valid after Ready).
func (s *Server) Addr() net.Addr { return s.addr }

// UpstreamConns returns the local addresses of the proxy's open upstream connections (client
// sessions, cancel requests and catalog lookups), for capture to ignore.
func (s *Server) UpstreamConns() []net.Addr {
	s.upMu.Lock()
	defer s.upMu.Unlock()
	out := make([]net.Addr, 0, len(s.upstream))
	for _, local := range s.upstream {
		out = append(out, local)
	}
	return out
}

// dialUpstream opens a TCP connection to addr and registers it as one of the proxy's own.
func (s *Server) dialUpstream(ctx context.Context, addr string) (net.Conn, error) {
	d := net.Dialer{Timeout: s.cfg.DialTimeout, KeepAlive: 30 * time.Second}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("connecting to upstream %s: %w", addr, err)
	}
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetNoDelay(true)
	}
	s.upMu.Lock()
	s.upstream[c.LocalAddr().String()] = c.LocalAddr()
	s.upMu.Unlock()
	if s.cfg.OnUpstreamConn != nil {
		s.cfg.OnUpstreamConn(c.LocalAddr(), c.RemoteAddr(), true)
	}
	return &upstreamConn{Conn: c, srv: s}, nil
}

// upstreamConn unregisters itself on Close.
type upstreamConn struct {
	net.Conn
	srv  *Server
	once sync.Once
}

func (c *upstreamConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() {
		c.srv.upMu.Lock()
		delete(c.srv.upstream, c.LocalAddr().String())
		c.srv.upMu.Unlock()
		if c.srv.cfg.OnUpstreamConn != nil {
			c.srv.cfg.OnUpstreamConn(c.LocalAddr(), c.RemoteAddr(), false)
		}
	})
	return err
}
