package enforce

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/subtle"
	"crypto/tls"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/vigil-db/vigil/pkg/event"
	"github.com/vigil-db/vigil/pkg/policy"
)

// Startup request codes (the first message of a connection has no type byte).
const (
	codeSSLRequest    = 80877103
	codeGSSENCRequest = 80877104
	codeCancelRequest = 80877102
	maxStartupLen     = 10000 // what PostgreSQL itself accepts
	// maxTokenLen bounds a password message carrying an ID token: tokens that list many
	// groups (Entra ID, Okta) run to several kilobytes.
	maxTokenLen    = 64 << 10
	startupTimeout = 60 * time.Second
)

// Authentication request codes (AuthenticationXXX messages).
const (
	authOK           = 0
	authCleartext    = 3
	authMD5          = 5
	authSASL         = 10
	authSASLContinue = 11
	authSASLFinal    = 12
)

// sessionError is an error that ends a session, with the reason it is counted under and,
// where the client should hear about it, the FATAL message it gets.
type sessionError struct {
	reason string
	resp   *pgproto3.ErrorResponse
	err    error
}

func (e *sessionError) Error() string { return e.err.Error() }
func (e *sessionError) Unwrap() error { return e.err }

func refuse(reason, code, msg, hint string) error {
	return &sessionError{reason: reason, resp: errorMsg("FATAL", code, msg, hint), err: errors.New(msg)}
}

// Handle serves one client connection until it ends. upstream overrides the configured (or
// routed) upstream when not empty: transparent steering passes the original destination here.
func (s *Server) Handle(ctx context.Context, client net.Conn, upstream string) {
	s.m.connections.Inc()
	s.m.active.Inc()
	defer s.m.active.Dec()
	defer client.Close()
	if tc, ok := client.(*net.TCPConn); ok {
		_ = tc.SetNoDelay(true)
	}
	sess := &session{srv: s, client: client, clientAddr: client.RemoteAddr().String()}
	defer func() {
		if f := sess.principal.OnClose; f != nil {
			f()
		}
	}()
	// The relay guards its own goroutines; this catches startup and login.
	err := sess.guarded("startup", func() error { return sess.run(ctx, upstream) })
	if err == nil || ctx.Err() != nil {
		return
	}
	var se *sessionError
	reason := reasonIO
	switch {
	case errors.As(err, &se):
		reason = se.reason
	case errors.Is(err, errProtocol):
		reason = reasonClientProtocol
	case errors.Is(err, io.EOF), errors.Is(err, net.ErrClosed):
		return // the client (or server) hung up: not an error
	}
	s.m.sessionErrors.WithLabelValues(reason).Inc()
	s.log.Warn("session closed with an error", "session_id", sess.id, "client_addr", sess.clientAddr,
		"db_user", sess.user, "database", sess.database, "reason", reason, "err", err)
}

// run performs the startup handshake and then relays the session.
func (ss *session) run(ctx context.Context, upstream string) error {
	ss.ctx = ctx
	var idb [8]byte
	_, _ = rand.Read(idb[:])
	ss.id = hex.EncodeToString(idb[:])
	_ = ss.client.SetDeadline(time.Now().Add(startupTimeout))
	startup, raw, err := ss.negotiate(ctx)
	if err != nil || startup == nil {
		ss.tellClient(err)
		return err
	}
	if n := ss.srv.admitted.Add(1); n > int64(ss.srv.cfg.MaxConnections) {
		ss.srv.admitted.Add(-1)
		err := refuse(reasonTooMany, "53300", fmt.Sprintf("Vigil proxy: too many connections (this proxy's max_connections is %d)", ss.srv.cfg.MaxConnections),
			"try again later, or raise max_connections in the proxy's configuration")
		ss.tellClient(err)
		return err
	}
	defer ss.srv.admitted.Add(-1)
	if err := ss.admit(ctx, startup, upstream); err != nil {
		ss.tellClient(err)
		return err
	}
	if ss.upCreds != nil {
		err = ss.loginTerminated(ctx, startup)
	} else {
		err = ss.loginPassThrough(ctx, raw)
	}
	if err != nil {
		ss.tellClient(err)
		if ss.server != nil {
			ss.server.Close()
		}
		return err
	}
	defer ss.srv.keys.remove(ss.key)
	_ = ss.client.SetDeadline(time.Time{})
	_ = ss.server.SetDeadline(time.Time{})
	if ss.expires.IsZero() {
		return ss.relay(ctx)
	}
	expired := make(chan struct{})
	t := time.AfterFunc(time.Until(ss.expires), func() {
		close(expired)
		ss.setFatal("28000", "Vigil proxy: the OIDC token of this session expired; log in again")
		// Ends both directions of the relay; the client still hears why.
		ss.server.Close()
	})
	defer t.Stop()
	err = ss.relay(ctx)
	select {
	case <-expired:
		return &sessionError{reason: reasonTokenExpired, err: fmt.Errorf("the session's token expired at %s", ss.expires.UTC().Format(time.RFC3339))}
	default:
		return err
	}
}

// tellClient sends a refusal's FATAL message to the client, if it carries one; a protocol
// violation carries 08P01.
func (ss *session) tellClient(err error) {
	var se *sessionError
	var resp *pgproto3.ErrorResponse
	switch {
	case errors.As(err, &se) && se.resp != nil:
		resp = se.resp
	case errors.Is(err, errProtocol):
		resp = errorMsg("FATAL", "08P01", "Vigil proxy: "+err.Error(), "")
	default:
		return
	}
	msg, encErr := encode(nil, resp)
	if encErr != nil {
		return
	}
	if ss.cw != nil {
		_, _ = ss.cw.Write(msg)
		_ = ss.cw.Flush()
		return
	}
	_, _ = ss.client.Write(msg)
}

// negotiate reads startup packets until a StartupMessage arrives, answering SSL and GSS
// encryption requests, and serving a CancelRequest (startup is then nil). It returns the
// StartupMessage decoded and as received.
func (ss *session) negotiate(ctx context.Context) (*pgproto3.StartupMessage, []byte, error) {
	cfg := ss.srv.cfg
	for {
		var hdr [4]byte
		if _, err := io.ReadFull(ss.client, hdr[:]); err != nil {
			return nil, nil, fmt.Errorf("reading startup packet: %w", err)
		}
		if hdr[0] == 0x16 && !ss.tls && cfg.ClientTLS != nil {
			// A TLS ClientHello without SSLRequest first (sslnegotiation=direct).
			if err := ss.startTLS(ctx, &prefixConn{Conn: ss.client, prefix: hdr[:]}); err != nil {
				return nil, nil, err
			}
			continue
		}
		n := int(binary.BigEndian.Uint32(hdr[:]))
		if n < 8 || n > maxStartupLen {
			return nil, nil, protoErr("startup packet length %d", n)
		}
		raw := make([]byte, n)
		copy(raw, hdr[:])
		if _, err := io.ReadFull(ss.client, raw[4:]); err != nil {
			return nil, nil, fmt.Errorf("reading startup packet: %w", truncated(err))
		}
		code := binary.BigEndian.Uint32(raw[4:8])
		switch {
		case code == codeSSLRequest:
			if ss.tls || cfg.ClientTLS == nil {
				if _, err := ss.client.Write([]byte{'N'}); err != nil {
					return nil, nil, err
				}
				continue
			}
			if _, err := ss.client.Write([]byte{'S'}); err != nil {
				return nil, nil, err
			}
			if err := ss.startTLS(ctx, ss.client); err != nil {
				return nil, nil, err
			}
		case code == codeGSSENCRequest:
			if _, err := ss.client.Write([]byte{'N'}); err != nil {
				return nil, nil, err
			}
		case code == codeCancelRequest:
			var req pgproto3.CancelRequest
			if err := req.Decode(raw[4:]); err != nil {
				return nil, nil, protoErr("cancel request: %v", err)
			}
			ss.srv.forwardCancel(ctx, &req)
			return nil, nil, nil
		case code>>16 == 3:
			var sm pgproto3.StartupMessage
			if err := sm.Decode(raw[4:]); err != nil {
				return nil, nil, refuse(reasonClientProtocol, "08P01", "invalid startup packet: "+err.Error(), "")
			}
			if cfg.RequireClientTLS && !ss.tls {
				return nil, nil, refuse(reasonRefused, "28000", "this Vigil proxy requires TLS", "connect with sslmode=require")
			}
			return &sm, raw, nil
		default:
			return nil, nil, refuse(reasonClientProtocol, "0A000", fmt.Sprintf("unsupported frontend protocol %d.%d", code>>16, code&0xffff), "")
		}
	}
}

func (ss *session) startTLS(ctx context.Context, c net.Conn) error {
	tc := tls.Server(c, ss.srv.cfg.ClientTLS)
	if err := tc.HandshakeContext(ctx); err != nil {
		return &sessionError{reason: reasonTLS, err: fmt.Errorf("TLS handshake with client: %w", err)}
	}
	ss.client = tc
	ss.tls = true
	return nil
}

// prefixConn replays bytes already read before the rest of the connection.
type prefixConn struct {
	net.Conn
	prefix []byte
}

func (c *prefixConn) Read(b []byte) (int, error) {
	if len(c.prefix) > 0 {
		n := copy(b, c.prefix)
		c.prefix = c.prefix[n:]
		return n, nil
	}
	return c.Conn.Read(b)
}

// admit applies the startup policy: who the client is, which upstream, replication refused
// unless allowed, and every run-time parameter in the startup message judged as the SET it is
// equivalent to.
func (ss *session) admit(ctx context.Context, sm *pgproto3.StartupMessage, upstream string) error {
	cfg := ss.srv.cfg
	p := sm.Parameters
	ss.user, ss.database, ss.application = p["user"], p["database"], p["application_name"]
	if ss.user == "" {
		return refuse(reasonClientProtocol, "28000", "no PostgreSQL user name specified in startup packet", "")
	}
	if ss.database == "" {
		ss.database = ss.user
	}
	ss.claimedUser = ss.user
	if creds := cfg.UpstreamCredentials; creds != nil {
		// Authentication ends here: the database runs every statement as the configured
		// login, so that is the user the policy judges and the trail records. The client's
		// user name is only a claim (it proved the shared client password at most).
		ss.user = creds.User
		ss.upCreds = creds
	}
	if cfg.Identify != nil {
		ss.principal = cfg.Identify(ctx, ss.client)
	}
	if cfg.TokenAuth != nil {
		// Before anything is judged: startup parameters are judged as the person.
		if err := ss.authenticateToken(ctx); err != nil {
			return err
		}
	}
	ss.upstream = upstream
	if ss.upstream == "" && cfg.Route != nil {
		u, err := cfg.Route(ctx, ss.client)
		if err != nil {
			return &sessionError{reason: reasonUpstream, resp: errorMsg("FATAL", "08006", "Vigil proxy: no upstream for this connection", ""), err: fmt.Errorf("routing: %w", err)}
		}
		ss.upstream = u
	}
	if ss.upstream == "" {
		ss.upstream = cfg.Upstream
	}
	ss.serverAddr = ss.upstream
	ss.baseReq()

	if r, ok := p["replication"]; ok && !strings.EqualFold(r, "false") && !strings.EqualFold(r, "off") && r != "0" && !strings.EqualFold(r, "no") {
		if !ss.replicationAllowed() {
			ss.emitStartup(&stmt{text: "START_REPLICATION", blocked: true,
				dec: policy.Decision{Action: policy.ActionBlock, Rule: "proxy:replication"}})
			return refuse(reasonRefused, "42501", "Vigil: replication connections are not allowed through this proxy",
				"connect to the server directly with a replication role, or ask for a policy rule that allows it")
		}
	}
	settings, err := startupSettings(p)
	if err != nil {
		return refuse(reasonRefused, "42501", "Vigil: "+err.Error(), "pass run-time parameters with SET after connecting")
	}
	for _, kv := range settings {
		if isUnsafeClientEncoding(kv[0], kv[1]) {
			return refuse(reasonRefused, "22023", fmt.Sprintf("Vigil: client_encoding %q is not supported through the proxy", kv[1]),
				"use UTF8: in this encoding bytes of multi-byte characters can look like quotes, so the proxy could not judge statements safely")
		}
		sql := "SET " + quoteIdent(kv[0]) + " TO " + quoteLiteral(kv[1])
		if st := ss.decide(sql); st.blocked {
			ss.emitStartup(st)
			return refuse(reasonRefused, "42501", fmt.Sprintf("Vigil: startup parameter %s refused by policy rule %s%s", kv[0], quoteRule(st.dec.Rule), suffix(st.dec.Message)),
				"remove it from the connection options, or ask for an exception to the rule")
		}
	}
	return nil
}

// startupSettings lists the run-time parameters a StartupMessage sets: the plain parameters
// other than the connection's identity, and every setting inside "options" (-c name=value,
// --name=value), in the order PostgreSQL applies them.
func startupSettings(p map[string]string) ([][2]string, error) {
	var out [][2]string
	for k, v := range p {
		switch {
		case k == "user" || k == "database" || k == "replication" || k == "application_name" || k == "options":
		case strings.HasPrefix(k, "_pq_."): // protocol extensions, answered by the server
		default:
			out = append(out, [2]string{k, v})
		}
	}
	opts, err := splitOptions(p["options"])
	if err != nil {
		return nil, err
	}
	for i := 0; i < len(opts); i++ {
		var setting string
		switch o := opts[i]; {
		case o == "-c":
			if i+1 >= len(opts) {
				return nil, errors.New(`startup option "-c" without a setting`)
			}
			i++
			setting = opts[i]
		case strings.HasPrefix(o, "-c"):
			setting = o[2:]
		case strings.HasPrefix(o, "--"):
			setting = o[2:]
		default:
			return nil, fmt.Errorf("startup option %q is not allowed through the proxy", o)
		}
		name, value, ok := strings.Cut(setting, "=")
		if !ok || name == "" {
			return nil, fmt.Errorf("startup option %q has no value", setting)
		}
		// PostgreSQL accepts dashes for underscores in option names.
		out = append(out, [2]string{strings.ReplaceAll(name, "-", "_"), value})
	}
	return out, nil
}

// splitOptions splits the "options" startup parameter like PostgreSQL does (pg_split_opts):
// on whitespace, with a backslash escaping the next character.
func splitOptions(s string) ([]string, error) {
	var out []string
	var cur strings.Builder
	inTok, esc := false, false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case esc:
			cur.WriteByte(c)
			esc = false
		case c == '\\':
			esc, inTok = true, true
		case c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v':
			if inTok {
				out = append(out, cur.String())
				cur.Reset()
				inTok = false
			}
		default:
			cur.WriteByte(c)
			inTok = true
		}
	}
	if esc {
		return nil, errors.New(`startup "options" ends with a lone backslash`)
	}
	if inTok {
		out = append(out, cur.String())
	}
	return out, nil
}

// unsafeEncodings are the client-only encodings whose multi-byte characters can contain ASCII
// bytes (a quote or backslash inside a character): the server would tokenize a statement
// differently from the proxy. Names are normalized (lower case, no '-' or '_').
var unsafeEncodings = map[string]bool{
	"sjis": true, "shiftjis": true, "mskanji": true, "win932": true, "windows932": true, "shiftjis2004": true,
	"big5": true, "win950": true, "windows950": true, "gbk": true, "win936": true, "windows936": true,
	"uhc": true, "win949": true, "windows949": true, "gb18030": true, "johab": true,
}

func isUnsafeClientEncoding(name, value string) bool {
	if !strings.EqualFold(name, "client_encoding") {
		return false
	}
	v := strings.ToLower(strings.NewReplacer("-", "", "_", "").Replace(value))
	return unsafeEncodings[v]
}

func quoteIdent(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }

func quoteLiteral(s string) string {
	if strings.Contains(s, `\`) {
		return `E'` + strings.ReplaceAll(strings.ReplaceAll(s, `\`, `\\`), `'`, `''`) + `'`
	}
	return `'` + strings.ReplaceAll(s, `'`, `''`) + `'`
}

// connectUpstream dials the session's upstream and negotiates TLS when configured.
func (ss *session) connectUpstream(ctx context.Context) error {
	c, err := ss.srv.dialUpstream(ctx, ss.upstream)
	if err != nil {
		return &sessionError{reason: reasonUpstream, resp: errorMsg("FATAL", "08006", "Vigil proxy: the database server is not reachable", ""), err: err}
	}
	_ = c.SetDeadline(time.Now().Add(startupTimeout))
	if ss.srv.cfg.UpstreamTLS != nil {
		tc, err := ss.srv.upstreamTLS(c, ss.upstream)
		if err != nil {
			c.Close()
			return &sessionError{reason: reasonUpstream, resp: errorMsg("FATAL", "08006", "Vigil proxy: TLS to the database server failed", ""), err: err}
		}
		c = tc
	}
	ss.server = c
	return nil
}

// upstreamTLS asks the upstream for TLS and performs the handshake; a server that declines is
// an error, since UpstreamTLS means TLS is required.
func (s *Server) upstreamTLS(c net.Conn, addr string) (net.Conn, error) {
	req := []byte{0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f} // SSLRequest
	if _, err := c.Write(req); err != nil {
		return nil, fmt.Errorf("sending SSLRequest to %s: %w", addr, err)
	}
	var ans [1]byte
	if _, err := io.ReadFull(c, ans[:]); err != nil {
		return nil, fmt.Errorf("reading SSLRequest answer from %s: %w", addr, err)
	}
	if ans[0] != 'S' {
		return nil, fmt.Errorf("upstream %s refused TLS", addr)
	}
	cfg := s.cfg.UpstreamTLS.Clone()
	if cfg.ServerName == "" && !cfg.InsecureSkipVerify {
		host, _, _ := net.SplitHostPort(addr)
		cfg.ServerName = host
	}
	tc := tls.Client(c, cfg)
	if err := tc.Handshake(); err != nil {
		return nil, fmt.Errorf("TLS handshake with upstream %s: %w", addr, err)
	}
	return tc, nil
}

// startBuffers sets up the buffered readers and writers both directions use from now on.
func (ss *session) startBuffers() {
	max := ss.srv.cfg.MaxMessageSize
	client, server := rawIO(ss.client), rawIO(ss.server)
	ss.cr = newMsgReader(client, max)
	ss.cw = bufio.NewWriterSize(client, bufSize)
	ss.sr = newMsgReader(server, max)
	ss.sw = bufio.NewWriterSize(server, bufSize)
}

// loginPassThrough forwards the startup message unchanged and relays the authentication
// exchange: the server authenticates the client itself. Only the mechanism list is touched:
// SCRAM channel binding (-PLUS) cannot work across a proxy that terminates TLS, so it is not
// offered. Authentication messages are never logged.
func (ss *session) loginPassThrough(ctx context.Context, startup []byte) error {
	if err := ss.connectUpstream(ctx); err != nil {
		return err
	}
	ss.startBuffers()
	if _, err := ss.sw.Write(startup); err != nil {
		return err
	}
	if err := ss.sw.Flush(); err != nil {
		return fmt.Errorf("sending startup message upstream: %w", err)
	}
	for {
		typ, _, msg, err := ss.sr.next()
		if err != nil {
			return serverErr("reading upstream authentication", err)
		}
		if msg == nil {
			return &sessionError{reason: reasonServerProtocol, err: errors.New("oversized message from upstream during startup")}
		}
		body := msg[5:]
		switch typ {
		case 'R':
			if len(body) < 4 {
				return &sessionError{reason: reasonServerProtocol, err: errors.New("short authentication request from upstream")}
			}
			switch code := binary.BigEndian.Uint32(body); code {
			case authOK, authSASLFinal:
				_, _ = ss.cw.Write(msg)
			case authSASL:
				var a pgproto3.AuthenticationSASL
				if err := a.Decode(body); err != nil {
					return &sessionError{reason: reasonServerProtocol, err: fmt.Errorf("upstream SASL request: %w", err)}
				}
				mechs := a.AuthMechanisms[:0]
				for _, m := range a.AuthMechanisms {
					if !strings.HasSuffix(m, "-PLUS") {
						mechs = append(mechs, m)
					}
				}
				a.AuthMechanisms = mechs
				out, err := encode(nil, &a)
				if err != nil {
					return err
				}
				_, _ = ss.cw.Write(out)
				if err := ss.relayClientAuth(); err != nil {
					return err
				}
			case authCleartext, authMD5, authSASLContinue:
				_, _ = ss.cw.Write(msg)
				if err := ss.relayClientAuth(); err != nil {
					return err
				}
			default:
				return refuse(reasonRefused, "28000", fmt.Sprintf("Vigil proxy: authentication method %d is not supported through the proxy", code),
					"use SCRAM, md5, password or trust authentication")
			}
		case 'E':
			_, _ = ss.cw.Write(msg)
			_ = ss.cw.Flush()
			return io.EOF // the server refused the login and told the client why
		case 'K':
			var k pgproto3.BackendKeyData
			if err := k.Decode(body); err != nil {
				return &sessionError{reason: reasonServerProtocol, err: fmt.Errorf("upstream BackendKeyData: %w", err)}
			}
			if err := ss.registerKey(k.ProcessID, k.SecretKey); err != nil {
				return err
			}
		case 'S':
			ss.noteParameter(body)
			_, _ = ss.cw.Write(msg)
		case 'N', 'v':
			_, _ = ss.cw.Write(msg)
		case 'Z':
			_, _ = ss.cw.Write(msg)
			if err := ss.cw.Flush(); err != nil {
				return err
			}
			return nil
		default:
			return &sessionError{reason: reasonServerProtocol, err: fmt.Errorf("unexpected message %q from upstream during startup", typ)}
		}
	}
}

// relayClientAuth passes the client's answer to an authentication request to the server.
func (ss *session) relayClientAuth() error {
	if err := ss.cw.Flush(); err != nil {
		return err
	}
	typ, total, msg, err := ss.cr.next()
	if err != nil {
		return fmt.Errorf("reading client authentication: %w", err)
	}
	if typ != 'p' || msg == nil {
		return protoErr("expected a password message from the client, got %q (%d bytes)", typ, total)
	}
	if _, err := ss.sw.Write(msg); err != nil {
		return err
	}
	return ss.sw.Flush()
}

// registerKey replaces the server's cancel key with one of the proxy's own and sends it on.
func (ss *session) registerKey(pid uint32, secret []byte) error {
	ss.backendPID = pid
	key, err := ss.srv.keys.register(cancelTarget{upstream: ss.upstream, pid: pid, secretKey: append([]byte(nil), secret...)})
	if err != nil {
		return err
	}
	ss.key = key
	var sk [4]byte
	binary.BigEndian.PutUint32(sk[:], key.secret)
	out, err := encode(nil, &pgproto3.BackendKeyData{ProcessID: key.pid, SecretKey: sk[:]})
	if err != nil {
		return err
	}
	_, err = ss.cw.Write(out)
	return err
}

// loginTerminated authenticates the client at the proxy and logs in upstream with the
// configured credentials, then tells the client what the server told the proxy.
func (ss *session) loginTerminated(ctx context.Context, sm *pgproto3.StartupMessage) error {
	creds := ss.upCreds
	if creds.ClientPassword != "" {
		if err := ss.checkClientPassword(creds.ClientPassword); err != nil {
			return err
		}
	}
	host, port, err := net.SplitHostPort(ss.upstream)
	if err != nil {
		return &sessionError{reason: reasonUpstream, err: fmt.Errorf("upstream address %q: %w", ss.upstream, err)}
	}
	pc, err := pgconn.ParseConfig(fmt.Sprintf("host=%s port=%s sslmode=disable", host, port))
	if err != nil {
		return &sessionError{reason: reasonUpstream, err: fmt.Errorf("upstream config: %w", err)}
	}
	pc.User, pc.Password, pc.Database = creds.User, creds.Password, ss.database
	pc.TLSConfig = ss.srv.cfg.UpstreamTLS
	pc.Fallbacks = nil
	pc.ConnectTimeout = ss.srv.cfg.DialTimeout
	pc.DialFunc = func(ctx context.Context, _, addr string) (net.Conn, error) { return ss.srv.dialUpstream(ctx, addr) }
	pc.RuntimeParams = map[string]string{}
	for k, v := range sm.Parameters {
		if k != "user" && k != "database" {
			pc.RuntimeParams[k] = v
		}
	}
	conn, err := pgconn.ConnectConfig(ctx, pc)
	if err != nil {
		return &sessionError{reason: reasonUpstream, resp: errorMsg("FATAL", "08006", "Vigil proxy: logging in to the database server failed", ""), err: fmt.Errorf("upstream login: %w", err)}
	}
	hc, err := conn.Hijack()
	if err != nil {
		conn.Close(ctx)
		return fmt.Errorf("taking over the upstream connection: %w", err)
	}
	ss.server = hc.Conn
	ss.startBuffers()
	out, _ := encode(nil, &pgproto3.AuthenticationOk{})
	for k, v := range hc.ParameterStatuses {
		out, _ = encode(out, &pgproto3.ParameterStatus{Name: k, Value: v})
	}
	_, _ = ss.cw.Write(out)
	if err := ss.registerKey(hc.PID, hc.SecretKey); err != nil {
		return err
	}
	_, _ = ss.cw.Write([]byte{'Z', 0, 0, 0, 5, hc.TxStatus})
	return ss.cw.Flush()
}

func (ss *session) checkClientPassword(want string) error {
	pw, err := ss.readPassword(maxStartupLen)
	if err != nil {
		return err
	}
	if subtle.ConstantTimeCompare(pw, []byte(want)) != 1 {
		return refuse(reasonRefused, "28P01", fmt.Sprintf("password authentication failed for user %q", ss.claimedUser), "")
	}
	return nil
}

// readPassword asks the client for a cleartext password and reads it (at most max bytes).
func (ss *session) readPassword(max int) ([]byte, error) {
	if ss.cr == nil {
		ss.cr = newMsgReader(ss.client, max)
		ss.cw = bufio.NewWriterSize(ss.client, 512)
	}
	out, _ := encode(nil, &pgproto3.AuthenticationCleartextPassword{})
	_, _ = ss.cw.Write(out)
	if err := ss.cw.Flush(); err != nil {
		return nil, err
	}
	typ, total, msg, err := ss.cr.next()
	if err != nil {
		return nil, fmt.Errorf("reading client password: %w", err)
	}
	if msg == nil {
		return nil, protoErr("password message of %d bytes", total)
	}
	pw, _, ok := cstring(msg[5:])
	if typ != 'p' || !ok {
		return nil, protoErr("expected a password message from the client, got %q", typ)
	}
	// The password message itself stays buffered until the next read.
	if ss.cr.r.Buffered() > total {
		return nil, protoErr("client sent data before authentication completed")
	}
	return pw, nil
}

// authenticateToken asks the client for an OIDC ID token as its password and verifies it:
// the session then runs as the person it names, on the upstream login their groups map to.
// The token never reaches a log, an event or the upstream.
func (ss *session) authenticateToken(ctx context.Context) error {
	if !ss.tls && !isLoopback(ss.client.RemoteAddr()) {
		// A token sent in cleartext over a network can be replayed by whoever saw it.
		ss.emitLoginRefused("a cleartext connection from another host (tokens need TLS)")
		return refuse(reasonAuth, "28000", "Vigil proxy: OIDC tokens are accepted only over TLS (or from this host)",
			"connect with sslmode=require")
	}
	tok, err := ss.readPassword(maxTokenLen)
	if err != nil {
		return err
	}
	login, err := ss.srv.cfg.TokenAuth(ctx, string(tok))
	if err != nil {
		ss.emitLoginRefused(err.Error())
		return &sessionError{reason: reasonAuth,
			resp: errorMsg("FATAL", "28000", fmt.Sprintf("Vigil proxy: OIDC authentication failed for user %q: %v", ss.claimedUser, err),
				"get a new token with: vigil login --print-env"),
			err: fmt.Errorf("token refused: %w", err)}
	}
	id := login.Identity
	ss.principal.Identity = &id
	ss.user = login.Upstream.User
	ss.upCreds = &login.Upstream
	ss.expires = login.Expires
	return nil
}

// emitLoginRefused records a refused login in the trail: who tried (the user name they
// claimed), from where, and why — never the token.
func (ss *session) emitLoginRefused(why string) {
	e := ss.eventBase(time.Now())
	e.Decision, e.Rule = event.DecisionBlock, "proxy:oidc"
	e.Error, e.ErrorMessage = "28000", "OIDC authentication failed: "+why
	ss.srv.sink.Emit(e)
}

func isLoopback(a net.Addr) bool {
	ta, ok := a.(*net.TCPAddr)
	return ok && ta.IP.IsLoopback()
}

// serverErr wraps an error reading from the upstream.
func serverErr(what string, err error) error {
	if errors.Is(err, errProtocol) {
		return &sessionError{reason: reasonServerProtocol, err: fmt.Errorf("%s: %w", what, err)}
	}
	return fmt.Errorf("%s: %w", what, err)
}

// noteParameter records ParameterStatus values the proxy depends on.
func (ss *session) noteParameter(body []byte) {
	name, rest, ok := cstring(body)
	if !ok {
		return
	}
	value, _, _ := cstring(rest)
	switch string(name) {
	case "client_encoding":
		// Set by a role's or database's default, or cleared by a later change back.
		ss.unsafeEncoding.Store(isUnsafeClientEncoding("client_encoding", string(value)))
	case "application_name":
		// Reported at startup and whenever it changes (SET, set_config, a RESET): later
		// events and decisions carry the new name, as capture's do.
		if string(value) != ss.application {
			app := string(value)
			ss.application = app
			ss.app.Store(&app)
		}
	}
}
