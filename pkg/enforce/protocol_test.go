package enforce

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgproto3"
)

// rawSession is a PostgreSQL client that writes exactly the bytes a test builds, in the TCP
// writes the test chooses: the shapes pgx and libpq never send.
type rawSession struct {
	t *testing.T
	c net.Conn
	r *pgproto3.Frontend
}

// rawDial opens a session to addr (the proxy or PostgreSQL itself) as user, with trust
// authentication, and reads up to its first ReadyForQuery.
func rawDial(t *testing.T, addr, user string) *rawSession {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	rs := &rawSession{t: t, c: c, r: pgproto3.NewFrontend(c, c)}
	rs.write(wire(t, &pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersionNumber,
		Parameters: map[string]string{"user": user, "database": "postgres"}}))
	if got := rs.read(1); !strings.HasSuffix(got, "Z") {
		t.Fatalf("startup: %s", got)
	}
	return rs
}

func (rs *rawSession) write(b []byte) {
	rs.t.Helper()
	if _, err := rs.c.Write(b); err != nil {
		rs.t.Fatal(err)
	}
}

// read returns the types of the messages that arrive until the n-th ReadyForQuery, a
// CopyInResponse, the end of the connection ("<eof>") or a second of silence ("<hang>").
// Errors are written as E(code).
func (rs *rawSession) read(n int) string { return rs.readWithin(n, time.Second) }

// readWithin is read with silence of d taken as a hang.
func (rs *rawSession) readWithin(n int, d time.Duration) string {
	var sb strings.Builder
	for n > 0 {
		_ = rs.c.SetReadDeadline(time.Now().Add(d))
		m, err := rs.r.Receive()
		var ne net.Error
		switch {
		case errors.As(err, &ne) && ne.Timeout():
			return sb.String() + "<hang>"
		case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) || errors.Is(err, syscall.ECONNRESET):
			return sb.String() + "<eof>"
		case err != nil:
			return sb.String() + "<" + err.Error() + ">"
		}
		switch m := m.(type) {
		case *pgproto3.ErrorResponse:
			sb.WriteString("E(" + m.Code + ")")
		case *pgproto3.NoticeResponse, *pgproto3.ParameterStatus:
		case *pgproto3.ReadyForQuery:
			sb.WriteByte('Z')
			n--
		case *pgproto3.CopyInResponse:
			return sb.String() + "G"
		default:
			b, _ := m.Encode(nil)
			sb.WriteByte(b[0])
		}
	}
	return sb.String()
}

// receiveMsg returns the next message (within 10 s).
func (rs *rawSession) receiveMsg() pgproto3.BackendMessage {
	rs.t.Helper()
	_ = rs.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	m, err := rs.r.Receive()
	if err != nil {
		rs.t.Fatal(err)
	}
	return m
}

// wire encodes frontend messages back to back, as one write will send them.
func wire(t testing.TB, msgs ...pgproto3.FrontendMessage) []byte {
	t.Helper()
	var out []byte
	for _, m := range msgs {
		var err error
		if out, err = m.Encode(out); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// rawMsg builds a message with any type and body, and a length that may lie (length < 0:
// the true one).
func rawMsg(typ byte, length int, body []byte) []byte {
	if length < 0 {
		length = 4 + len(body)
	}
	out := []byte{typ, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(out[1:], uint32(length))
	return append(out, body...)
}

// TestStartupProtocol: malformed startup and authentication get a FATAL 08P01 and are
// counted as client_protocol.
func TestStartupProtocol(t *testing.T) {
	h := start(t)
	startup := func(user string) []byte {
		return wire(t, &pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersionNumber,
			Parameters: map[string]string{"user": user, "database": "postgres"}})
	}
	for _, c := range []struct {
		name      string
		steps     [][]byte
		closeSend bool
		want      string // "": a FATAL 08P01, counted as client_protocol
	}{
		{name: "startup length below 8", steps: [][]byte{{0, 0, 0, 4}}},
		{name: "startup length over the limit", steps: [][]byte{{0, 1, 0, 0, 0, 3, 0, 0}}},
		{name: "startup packet cut short", steps: [][]byte{startup("analyst")[:12]}, closeSend: true},
		{name: "cancel request without its key", steps: [][]byte{{0, 0, 0, 12, 0x04, 0xd2, 0x16, 0x2e, 0, 0, 0, 1}}},
		{name: "unknown protocol version", steps: [][]byte{{0, 0, 0, 8, 0, 9, 0, 0}}, want: "E(0A000)<eof>"},
		{name: "query instead of a password", steps: [][]byte{startup("vigil_md5"), wire(t, &pgproto3.Query{String: "SELECT 1"})}},
	} {
		t.Run(c.name, func(t *testing.T) {
			before := metricValue(t, h, "vigil_proxy_session_errors_total", reasonClientProtocol)
			conn, err := net.DialTimeout("tcp", h.addr, 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			rs := &rawSession{t: t, c: conn, r: pgproto3.NewFrontend(conn, conn)}
			var got string
			for i, s := range c.steps {
				rs.write(s)
				if i == len(c.steps)-1 && c.closeSend {
					_ = conn.(*net.TCPConn).CloseWrite()
				}
				got = rs.read(1)
			}
			want := c.want
			if want == "" {
				want = "E(08P01)<eof>"
			}
			if !strings.HasSuffix(got, want) {
				t.Fatalf("answer %q, want %s", got, want)
			}
			waitMetric(t, h, "vigil_proxy_session_errors_total", reasonClientProtocol, before+1)
		})
	}
}

// waitMetric waits for a counter to reach want (sessions are counted as they end).
func waitMetric(t *testing.T, h *harness, name, label string, want float64) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for metricValue(t, h, name, label) != want {
		if time.Now().After(deadline) {
			t.Fatalf("%s{%s} = %v, want %v", name, label, metricValue(t, h, name, label), want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestProtocolStates drives every protocol state of a session with raw messages, each list
// of messages in one TCP write. Well-formed shapes must be answered as PostgreSQL itself
// answers them (the same message types, compared against a direct connection); malformed
// ones end the session with a FATAL (08P01, or 54000 over the size limit), a log line and
// a count in vigil_proxy_session_errors_total{reason="client_protocol"}.
func TestProtocolStates(t *testing.T) {
	const maxMsg = 1 << 20
	h := start(t, func(c *Config) { c.MaxMessageSize = maxMsg })
	if _, err := h.pg.Psql("postgres", "CREATE TABLE bulk (id int, v text); GRANT ALL ON bulk TO analyst"); err != nil {
		t.Fatal(err)
	}
	m := func(msgs ...pgproto3.FrontendMessage) []byte { return wire(t, msgs...) }
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	copyQ := m(&pgproto3.Query{String: "COPY bulk FROM STDIN"})
	extCopy := m(&pgproto3.Parse{Query: "COPY bulk FROM STDIN"}, &pgproto3.Bind{}, &pgproto3.Execute{}, &pgproto3.Sync{})
	row := m(&pgproto3.CopyData{Data: []byte("1\ta\n")})
	bad := m(&pgproto3.CopyData{Data: []byte("x\ta\n")})
	bigRow := m(&pgproto3.CopyData{Data: []byte(strings.Repeat("2\tbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb\n", 5000))}) // over the read buffer
	done, sync := m(&pgproto3.CopyDone{}), m(&pgproto3.Sync{})
	sel := m(&pgproto3.Query{String: "SELECT count(*) FROM bulk"})
	masked := m(&pgproto3.Query{String: "SELECT email FROM customers"})
	extSel := m(&pgproto3.Parse{Query: "SELECT email FROM customers WHERE id = $1"}, &pgproto3.Bind{Parameters: [][]byte{[]byte("1")}},
		&pgproto3.Describe{ObjectType: 'P'}, &pgproto3.Execute{}, &pgproto3.Sync{})
	fail := m(&pgproto3.CopyFail{Message: "client gave up"})
	md5Call := m(&pgproto3.FunctionCall{Function: 2311, ArgFormatCodes: []uint16{0}, Arguments: [][]byte{[]byte("abc")}}) // md5(text)

	type tc struct {
		name  string
		user  string   // "" is analyst (masked, not raw)
		steps [][]byte // each one TCP write, answered up to ReadyForQuery or CopyInResponse
		// want is the proxy's answer to the last step for malformed input; "" compares
		// every step's answer with PostgreSQL's own.
		want      string
		closeSend bool // half-close after the last step (a message cut short)
	}
	for _, c := range []tc{
		// COPY FROM STDIN, simple protocol: the end of the COPY and the next Query together.
		{name: "copy data, done and query in one write", steps: [][]byte{copyQ, cat(row, done, sel)}},
		{name: "copy done and query in one write", steps: [][]byte{copyQ, cat(done, sel)}},
		{name: "copy, data, done and query in one write", steps: [][]byte{cat(copyQ, row, done, sel)}},
		{name: "large copy data, done and query", steps: [][]byte{copyQ, cat(bigRow, done, sel)}},
		{name: "copy done and a masked query", steps: [][]byte{copyQ, cat(row, done, masked)}},
		{name: "bad copy data, done and query", steps: [][]byte{copyQ, cat(bad, done, sel)}},
		{name: "copy fail and query", steps: [][]byte{copyQ, cat(row, fail, sel)}},
		{name: "query inside copy", steps: [][]byte{copyQ, cat(row, sel, done)}},
		{name: "function call inside copy", steps: [][]byte{copyQ, cat(row, md5Call, done)}},
		// COPY FROM STDIN, extended protocol (the Sync before the data is ignored).
		{name: "extended copy, done, sync and query", steps: [][]byte{extCopy, cat(row, done, sync, sel)}},
		{name: "extended copy in one write", steps: [][]byte{cat(extCopy, row, done, sync, sel)}},
		{name: "extended copy, bad data, sync", steps: [][]byte{extCopy, cat(bad, done, sync, sel)}},
		{name: "extended copy fail", steps: [][]byte{extCopy, cat(row, fail, sync, sel)}},
		{name: "extended copy then masked extended query", steps: [][]byte{extCopy, cat(row, done, sync, extSel)}},
		// COPY messages outside COPY are ignored by the server, as the protocol says.
		{name: "stray copy data and done", steps: [][]byte{cat(row, done, sel)}},
		// COPY TO STDOUT, with and without masking.
		{name: "copy out", steps: [][]byte{m(&pgproto3.Query{String: "COPY bulk TO STDOUT"})}},
		{name: "masked copy out then query", steps: [][]byte{cat(m(&pgproto3.Query{String: "COPY customers (email) TO STDOUT"}), sel)}},
		// FunctionCall, and Flush in the middle of a batch.
		{name: "function call", steps: [][]byte{md5Call}},
		{name: "flush mid batch", steps: [][]byte{cat(m(&pgproto3.Parse{Query: "SELECT 1"}, &pgproto3.Flush{}), m(&pgproto3.Bind{}, &pgproto3.Execute{}, &pgproto3.Sync{}))}},

		// Malformed input, in each state.
		{name: "unknown message type", steps: [][]byte{rawMsg('y', -1, nil)}, want: "E(08P01)<eof>"},
		{name: "length below 4", steps: [][]byte{rawMsg('Q', 3, nil)}, want: "E(08P01)<eof>"},
		{name: "length over 1 GiB", steps: [][]byte{rawMsg('Q', 1<<30+1, nil)}, want: "E(08P01)<eof>"},
		{name: "query over the size limit", steps: [][]byte{rawMsg('Q', -1, append(bytes.Repeat([]byte("x"), maxMsg), 0))}, want: "E(54000)<eof>"},
		{name: "query without its NUL", steps: [][]byte{rawMsg('Q', -1, []byte("SELECT 1"))}, want: "E(08P01)<eof>"},
		{name: "query with bytes after its NUL", steps: [][]byte{rawMsg('Q', -1, []byte("SELECT 1\x00x"))}, want: "E(08P01)<eof>"},
		{name: "parse with a short parameter list", steps: [][]byte{rawMsg('P', -1, []byte("\x00SELECT 1\x00\x00\x02"))}, want: "E(08P01)<eof>"},
		{name: "bind without names", steps: [][]byte{rawMsg('B', -1, []byte("p"))}, want: "E(08P01)<eof>"},
		{name: "describe of an unknown kind", steps: [][]byte{rawMsg('D', -1, []byte("X\x00"))}, want: "E(08P01)<eof>"},
		{name: "execute without its row limit", steps: [][]byte{rawMsg('E', -1, []byte("\x00"))}, want: "E(08P01)<eof>"},
		{name: "close of an unknown kind", steps: [][]byte{rawMsg('C', -1, []byte("X\x00"))}, want: "E(08P01)<eof>"},
		{name: "function call cut short", steps: [][]byte{rawMsg('F', -1, []byte{0, 0})}, want: "E(08P01)<eof>"},
		{name: "message cut short by the client", steps: [][]byte{rawMsg('Q', 100, []byte("SELECT"))}, closeSend: true, want: "E(08P01)<eof>"},
		{name: "unknown message type inside copy", steps: [][]byte{copyQ, rawMsg('y', -1, nil)}, want: "E(08P01)<eof>"},
		{name: "copy data cut short inside copy", steps: [][]byte{copyQ, rawMsg('d', 100, []byte("1\t"))}, closeSend: true, want: "E(08P01)<eof>"},
	} {
		t.Run(c.name, func(t *testing.T) {
			user := c.user
			if user == "" {
				user = "analyst"
			}
			run := func(addr string) []string {
				rs := rawDial(t, addr, user)
				var got []string
				for i, s := range c.steps {
					rs.write(s)
					if i == len(c.steps)-1 && c.closeSend {
						_ = rs.c.(*net.TCPConn).CloseWrite()
					}
					got = append(got, rs.read(2))
				}
				return got
			}
			before := metricValue(t, h, "vigil_proxy_session_errors_total", reasonClientProtocol)
			got := run(h.addr)
			if c.want == "" {
				if pg := run(h.pg.Addr()); !slices.Equal(got, pg) {
					t.Fatalf("through the proxy %q, PostgreSQL answers %q", got, pg)
				}
				return
			}
			if last := got[len(got)-1]; last != c.want {
				t.Fatalf("answer %q, want %q", last, c.want)
			}
			waitMetric(t, h, "vigil_proxy_session_errors_total", reasonClientProtocol, before+1)
			if !strings.Contains(h.logs.String(), "reason=client_protocol") {
				t.Fatalf("no log line: %s", h.logs.String())
			}
		})
	}
}

// TestMaxConnections: the session over max_connections gets FATAL 53300 before an upstream
// connection is opened, and is counted; cancel requests still reach sessions of a full
// proxy; a freed slot admits the next client.
func TestMaxConnections(t *testing.T) {
	h := start(t, func(c *Config) { c.MaxConnections = 2 })
	ctx := context.Background()
	a := h.connect(t, "analyst")
	h.connect(t, "analyst")
	upstream := len(h.srv.UpstreamConns())
	_, err := pgx.Connect(ctx, h.dsn("analyst", "postgres"))
	if pe := asPgError(err); pe == nil || pe.Code != "53300" || pe.Severity != "FATAL" || !strings.Contains(pe.Message, "max_connections is 2") {
		t.Fatalf("third session: %v, want FATAL 53300", err)
	}
	if got := len(h.srv.UpstreamConns()); got != upstream {
		t.Fatalf("the refused session opened an upstream connection: %d, were %d", got, upstream)
	}
	out, err := h.psql(t, "analyst", "-c", "SELECT 1")
	if err == nil || !strings.Contains(out, "too many connections") {
		t.Fatalf("psql over the limit: %q %v", out, err)
	}
	waitMetric(t, h, "vigil_proxy_session_errors_total", reasonTooMany, 2)
	if !strings.Contains(h.logs.String(), "reason=max_connections") {
		t.Fatal("no log line for the refusal")
	}
	errc := make(chan error, 1)
	go func() {
		_, err := a.Exec(ctx, "SELECT pg_sleep(20)")
		errc <- err
	}()
	time.Sleep(300 * time.Millisecond)
	if err := a.PgConn().CancelRequest(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; pgCode(err) != "57014" {
		t.Fatalf("cancel on a full proxy: %v", err)
	}
	a.Close(ctx)
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := pgx.Connect(ctx, h.dsn("analyst", "postgres"))
		if err == nil {
			c.Close(ctx)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after a session closed: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
