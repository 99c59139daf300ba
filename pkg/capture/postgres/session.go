// Package postgres decodes one PostgreSQL connection, seen from the outside in both
// directions, into one audit event per statement the server executed: its text (resolved
// through prepared statements and portals), parameters, rows, duration and error.
//
// It reads the frontend/backend protocol v3 passively: message bodies are decoded with
// pgproto3, request and response are paired in order (the protocol answers every request in
// order, pipelined or not), and nothing is ever invented. When capture loses bytes, the
// decoder skips within the current message if it can, else scans for the next message
// boundary (a type byte this direction sends, a length within the server's own limits, a
// well-formed body, confirmed by the header after it) and says in the event's Detail what
// it could not see. Memory is bounded: only the prefix of a message the decoder needs is
// buffered (statement text up to MaxStatementBytes; rows and copy data are counted, not
// kept), and prepared statements are capped per session.
//
// Choices an auditor should know:
//   - A statement of a multi-statement simple Query is timed from the Query's first byte to
//     its own CommandComplete (the last one to ReadyForQuery); statements after an error did
//     not run and yield no event.
//   - A failing Parse/Bind/Describe in the extended protocol yields one event with the
//     error: for the first Execute the server then skipped, or for the failing statement
//     itself when no Execute followed.
//   - A fastpath FunctionCall has no SQL: its event's Statement reads
//     "fastpath function call: oid N" (never a made-up SQL call), with its arguments as Params.
//   - A CancelRequest yields an event with no Statement, Detail "cancel request", and the
//     target backend in BackendPID; the secret key is never recorded.
//   - NULL parameters are recorded as "NULL". A binary parameter is printed as PostgreSQL
//     would print it (timestamps as RFC 3339, timestamptz in UTC) when its type is known,
//     from the Parse or from the server's answer to a Describe of the statement, and is one
//     of the common scalar types; any other binary one is recorded as "\x" and hex, and so
//     is a text one that is not valid UTF-8.
//   - Passwords, SASL exchanges and the cancel key are skipped unread; they never reach an
//     event, a log line or an error.
//
// Where things are: session.go (the API), framer.go (message boundaries and resync),
// frontend.go (what each client message asks), queue.go (the requests in flight),
// backend.go (matching server messages to them), events.go (building events), cache.go
// (the bounded statement and portal cache), messages.go (body decoding).
package postgres

import (
	"time"

	"github.com/vigil-db/vigil/pkg/capture/decode"
	"github.com/vigil-db/vigil/pkg/event"
)

// Config tunes a Session.
type Config struct {
	// MaxStatementBytes caps recorded statement text; longer text is cut (on a UTF-8
	// boundary) and the event says statement_truncated. Default 1 MiB.
	MaxStatementBytes int
	// RecordParams records Bind parameters (and fastpath arguments) in events.
	RecordParams bool
	// MaxBufferedMessage caps how much of any other message is kept (Bind parameters,
	// errors), and how far ahead resync looks for a boundary. Default 64 KiB.
	MaxBufferedMessage int
	// MaxPrepared caps named prepared statements and portals remembered per session;
	// beyond it the oldest is forgotten (counted), and an Execute of it says so. Default 1024.
	MaxPrepared int
	// MaxPreparedBytes caps the statement text, parameter types (4 bytes each) and
	// parameters held for named statements and portals per session, forgetting the oldest
	// beyond it. Default 8 MiB.
	MaxPreparedBytes int
	// TLS marks events of a session fed from TLS plaintext (uprobes), not from the wire.
	TLS bool
}

func (c Config) withDefaults() Config {
	if c.MaxStatementBytes <= 0 {
		c.MaxStatementBytes = 1 << 20
	}
	if c.MaxBufferedMessage <= 0 {
		c.MaxBufferedMessage = 64 << 10
	}
	if c.MaxPrepared <= 0 {
		c.MaxPrepared = 1024
	}
	if c.MaxPreparedBytes <= 0 {
		c.MaxPreparedBytes = 8 << 20
	}
	return c
}

// Session decodes one connection. It is not safe for concurrent use.
type Session struct {
	cfg    Config
	sink   func(*event.Event)
	client framer
	server framer
	stats  decode.Stats

	user, database, app string
	pid                 int32
	encrypted           bool
	startupDone         bool      // the first ReadyForQuery was seen
	startupAt           time.Time // when the StartupMessage was sent

	stmts       map[string]*prepared
	portals     map[string]*portal
	unnamedStmt *prepared
	unnamedPort *portal
	generation  uint64 // orders named entries for eviction
	namedBytes  int    // bytes held by stmts and portals

	ops    []op // requests awaiting their responses, oldest first from head
	head   int
	pushed uint64    // requests ever queued
	group  time.Time // first byte of the current Parse/Bind/.../Execute group

	serverFeeds uint64 // Feed calls for the server direction
	replaying   bool   // decoding held bytes captured at replayMark (see replay)
	replayMark  mark
	late        bool // ... and the other direction has moved on since

	// skipToSync: the server reported an error in the extended protocol and discards
	// every message until Sync; so do we.
	skipToSync bool
	// pairingGuessed: capture lost requests or responses, or a response did not fit its
	// request; the pairing then rests on a guess (see opLost, stale) until the server is
	// next idle, and responses are not trusted to describe the request they are paired with.
	pairingGuessed bool
}

// NewSession returns a Session that hands each finished event to sink (which takes
// ownership of it).
func NewSession(cfg Config, sink func(*event.Event)) *Session {
	// Until the StartupMessage is seen, the session may have joined mid-conversation, with
	// requests sent before capture still to be answered.
	s := &Session{cfg: cfg.withDefaults(), sink: sink, pairingGuessed: true}
	s.client = framer{fromClient: true, phase: phaseStartup}
	s.server = framer{phase: phaseResync}
	return s
}

// Feed decodes the next bytes of one direction; data is not retained after Feed returns.
// ts is when the bytes were captured.
func (s *Session) Feed(fromClient bool, data []byte, ts time.Time) {
	if fromClient {
		s.feed(&s.client, data, ts)
	} else {
		s.serverFeeds++
		s.feed(&s.server, data, ts)
	}
}

// Gap says that n bytes of one direction were lost at this point of the stream.
func (s *Session) Gap(fromClient bool, n int, ts time.Time) {
	if n <= 0 {
		return
	}
	if fromClient {
		s.gap(&s.client, n, ts)
	} else {
		s.gap(&s.server, n, ts)
	}
}

// Close ends the connection: requests still waiting for their response are emitted, with
// a Detail that says so.
func (s *Session) Close(_ time.Time) {
	for _, f := range []*framer{&s.client, &s.server} {
		// A request the client never finished sending was never executed; bytes held for
		// a boundary check were never decoded.
		if f.inBody {
			s.stats.SkippedBytes += uint64(f.got)
		}
		s.stats.SkippedBytes += uint64(f.hdrN + len(f.rbuf))
		f.inBody, f.hdrN = false, 0
		f.resetHeld()
	}
	s.flush("response not seen: connection closed")
	s.client.phase, s.server.phase = phaseIgnore, phaseIgnore
}

// Encrypted reports whether the connection switched to TLS or GSSAPI encryption; the rest
// of this byte stream is ignored, and the plaintext comes from another Session.
func (s *Session) Encrypted() bool { return s.encrypted }

// Stats returns the session's counters.
func (s *Session) Stats() decode.Stats { return s.stats }

// BackendPID is the server process of the connection, once BackendKeyData was seen.
func (s *Session) BackendPID() int32 { return s.pid }

func (s *Session) encrypt() {
	s.encrypted = true
	s.client.phase, s.server.phase = phaseIgnore, phaseIgnore
}

func (s *Session) newEvent(start time.Time) *event.Event {
	e := event.New()
	e.Time = start
	e.Type = event.TypeStatement
	e.Source = event.SourceEBPF
	e.Protocol = event.ProtocolPostgres
	e.DBUser, e.Database, e.Application = s.user, s.database, s.app
	e.BackendPID = s.pid
	e.TLS = s.cfg.TLS
	return e
}

func (s *Session) emit(e *event.Event) {
	s.stats.Statements++
	s.sink(e)
}

func durationUS(start, end time.Time) int64 {
	if end.Before(start) {
		return 0
	}
	return end.Sub(start).Microseconds()
}
