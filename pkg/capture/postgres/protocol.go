package postgres

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/vigil-db/vigil/pkg/event"
	"github.com/vigil-db/vigil/pkg/pgwire"
	"github.com/vigil-db/vigil/pkg/sqlparse"
)

// opKind is a request that the server answers.
type opKind uint8

const (
	opQuery opKind = iota + 1
	opParse
	opBind
	opDescribe
	opExecute
	opClose
	opSync
	opFunctionCall
	// opLost stands for requests or responses capture lost: it absorbs responses up to
	// the next ReadyForQuery, or gives way when the client sends a new request while it is
	// the oldest thing waiting (a client that waits for answers has had them by then).
	opLost
)

// op is a request waiting for its response.
type op struct {
	kind      opKind
	seq       uint64 // order of the request over the session
	start     time.Time
	text      string // the statement: Query text, Parse text, or what an Execute runs
	truncated bool
	detail    string // what the decoder could not see about the request
	params    []string
	rows      int64 // DataRows seen so far

	// Query: the statements split out of text (nil: text is the single statement); idx is
	// the next one a response completes; last is the final one, held for ReadyForQuery.
	parts  []string
	idx    int
	failed bool
	last   *event.Event

	emitted bool // FunctionCall: answered, waiting for ReadyForQuery

	stmt *prepared // Describe of a statement: where its ParameterDescription goes
}

func (o *op) numParts() int {
	if o.parts == nil {
		return 1
	}
	return len(o.parts)
}

func (o *op) part(i int) string {
	if o.parts == nil {
		return o.text
	}
	return o.parts[i]
}

// prepared is a statement created by Parse; portal is one created by Bind. Both resolve
// what an Execute runs.
type prepared struct {
	name      string
	text      string
	truncated bool
	detail    string
	gen       uint64
	// oids are the parameter types, from the Parse or the server's ParameterDescription
	// (kept only when parameters are recorded): they let Bind render binary values.
	oids []uint32
}

type portal struct {
	text      string
	truncated bool
	detail    string
	params    []string
	gen       uint64
}

func (s *Session) push(o op) {
	if s.late && o.kind != opLost {
		// A request decoded late: its response has already gone by, unpaired.
		s.notAnswered(&o, "response not seen: capture gap", time.Time{})
		return
	}
	s.pushed++
	o.seq = s.pushed
	s.ops = append(s.ops, o)
}

func (s *Session) headOp() *op {
	if s.head == len(s.ops) {
		return nil
	}
	return &s.ops[s.head]
}

func (s *Session) pop() {
	s.ops[s.head] = op{}
	s.head++
	if s.head == len(s.ops) {
		s.head = 0
		s.ops = s.ops[:0]
	}
}

// startGroup notes the first byte of a request group: an Execute is timed from the first
// Parse/Bind/Describe that the client sent for it.
func (s *Session) startGroup(ts time.Time) {
	if s.group.IsZero() {
		s.group = ts
	}
}

// ---- frontend ----

func (s *Session) startupMessage(m message) {
	if m.lost || m.truncated || len(m.body) < 4 {
		s.stats.DecodeErrors++
		s.loseSync(&s.client, 0)
		return
	}
	switch code := binary.BigEndian.Uint32(m.body); code {
	case codeSSL, codeGSSEnc:
		s.server.phase = phaseSSLAnswer
	case codeCancel:
		// Read the target pid by hand: pgproto3 would copy the cancel key, which is a
		// credential and has no business in this process's memory.
		if len(m.body) < 8 {
			s.stats.DecodeErrors++
			return
		}
		e := s.newEvent(m.start)
		e.BackendPID = int32(binary.BigEndian.Uint32(m.body[4:8]))
		e.Detail = "cancel request"
		s.emit(e)
		s.client.phase, s.server.phase = phaseIgnore, phaseIgnore
	default:
		var sm pgproto3.StartupMessage
		if err := sm.Decode(m.body); err != nil {
			s.stats.DecodeErrors++
			s.loseSync(&s.client, 0)
			return
		}
		s.startupAt = m.start
		s.user, s.database, s.app = sm.Parameters["user"], sm.Parameters["database"], sm.Parameters["application_name"]
		if s.database == "" {
			s.database = s.user // the server's default
		}
		s.client.phase = phaseMessages
		s.pairingGuessed = false // the conversation starts here: nothing earlier to answer
		switch {
		case s.server.phase == phaseSSLAnswer:
			// A stream read at the server's socket layer (secure_read) sees the SSLRequest
			// but not the answer, sent around it: the server speaks messages now.
			s.server.phase = phaseMessages
		case s.server.phase == phaseResync && len(s.server.rbuf) == 0 && !s.server.lostSync:
			s.server.phase = phaseMessages
		}
	}
}

func (s *Session) sslAnswer(b byte) bool {
	switch b {
	case 'S', 'G':
		s.encrypt()
	case 'N':
		s.server.phase = phaseMessages
	default:
		// Not an answer byte (a server too old for SSLRequest sends an ErrorResponse).
		s.server.phase = phaseMessages
		return false
	}
	return true
}

func (s *Session) clientMessage(m message) {
	switch m.typ {
	case 'p', 'd', 'c', 'f', 'H', 'X':
		// Authentication (never read), copy data and its end, Flush, Terminate: nothing
		// the server answers on its own.
		return
	}
	if s.skipToSync && m.typ != 'S' {
		return // the server discards everything up to Sync after an error
	}
	if h := s.headOp(); h != nil && h.kind == opLost {
		// The lost requests' responses are taken to have all come: a guess.
		s.pop()
		s.pairingGuessed = true
	}
	switch m.typ {
	case 'Q':
		s.query(m)
	case 'P':
		s.parse(m)
	case 'B':
		s.bind(m)
	case 'D':
		s.describe(m)
	case 'E':
		s.execute(m)
	case 'C':
		s.closeMessage(m)
	case 'S':
		s.skipToSync = false
		s.group = time.Time{}
		s.push(op{kind: opSync, start: m.start})
	case 'F':
		s.functionCall(m)
	}
}

// statementText extracts NUL-terminated statement text from a kept body prefix.
func (s *Session) statementText(m message, body []byte) (text string, truncated bool, detail string) {
	end := bytes.IndexByte(body, 0)
	complete := end >= 0
	if !complete {
		end = len(body)
		if !m.truncated && !m.lost {
			s.stats.DecodeErrors++
		}
	}
	t, cutShort := cut(body[:end], s.cfg.MaxStatementBytes)
	truncated = cutShort || !complete
	if m.lost {
		detail = "statement text incomplete: capture gap"
		truncated = true
	}
	if truncated {
		s.stats.TruncatedMessages++
	}
	return string(t), truncated, detail
}

func (s *Session) query(m message) {
	o := op{kind: opQuery, start: m.start}
	if !m.truncated && !m.lost {
		var q pgproto3.Query
		if err := q.Decode(m.body); err == nil {
			o.text = q.String
			if len(o.text) > s.cfg.MaxStatementBytes {
				o.text, o.truncated, o.detail = s.statementText(m, m.body)
			}
		} else {
			s.stats.DecodeErrors++
			o.text, o.truncated, o.detail = s.statementText(m, m.body)
		}
	} else {
		o.text, o.truncated, o.detail = s.statementText(m, m.body)
	}
	if parts := sqlparse.SplitPostgres(o.text); len(parts) == 1 {
		o.text = parts[0]
	} else {
		o.parts = parts
	}
	s.group = time.Time{}
	s.push(o)
}

func (s *Session) parse(m message) {
	s.startGroup(m.start)
	body := m.body
	i := bytes.IndexByte(body, 0)
	if i < 0 {
		s.stats.DecodeErrors++
		s.push(op{kind: opParse, start: m.start})
		return
	}
	name := string(body[:i])
	p := &prepared{name: name}
	if !m.truncated && !m.lost {
		var pm pgproto3.Parse
		if err := pm.Decode(body); err != nil {
			s.stats.DecodeErrors++
		}
		p.text = pm.Query
		if s.cfg.RecordParams {
			p.oids = pgwire.ParamTypeOIDs(pm.ParameterOIDs)
		}
		if len(p.text) > s.cfg.MaxStatementBytes {
			p.text, p.truncated, p.detail = s.statementText(m, body[i+1:])
		}
	} else {
		p.text, p.truncated, p.detail = s.statementText(m, body[i+1:])
	}
	if name == "" {
		s.unnamedStmt = p
	} else {
		if s.stmts == nil {
			s.stmts = make(map[string]*prepared)
		}
		s.generation++
		p.gen = s.generation
		s.forgetStatement(name)
		s.stmts[name] = p
		s.namedBytes += p.size()
		s.evictStatements()
	}
	s.push(op{kind: opParse, start: m.start, text: p.text, truncated: p.truncated, detail: p.detail})
}

func (s *Session) notSeen(what, name string) string {
	n := "unnamed " + what
	if name != "" {
		n = what + " " + strconv.Quote(name)
	}
	d := "text of " + n + " not seen: created before capture started or lost in a capture gap"
	if s.stats.PreparedEvicted > 0 {
		d += ", or forgotten beyond the per-session limit"
	}
	return d
}

func (s *Session) lookupStatement(name string) *prepared {
	if name == "" {
		return s.unnamedStmt
	}
	return s.stmts[name]
}

func (s *Session) bind(m message) {
	s.startGroup(m.start)
	body := m.body
	i := bytes.IndexByte(body, 0)
	j := -1
	if i >= 0 {
		j = bytes.IndexByte(body[i+1:], 0)
	}
	if j < 0 {
		s.stats.DecodeErrors++
		s.push(op{kind: opBind, start: m.start})
		return
	}
	portalName, stmtName := body[:i], body[i+1:i+1+j]
	pt := &portal{}
	st := s.lookupStatement(string(stmtName))
	if st != nil {
		pt.text, pt.truncated, pt.detail = st.text, st.truncated, st.detail
	} else {
		pt.detail = s.notSeen("prepared statement", string(stmtName))
	}
	if s.cfg.RecordParams {
		if m.truncated || m.lost {
			s.stats.TruncatedMessages++
			pt.detail = joinDetail(pt.detail, "parameters not recorded: Bind message larger than the buffer or cut by a capture gap")
		} else {
			var b pgproto3.Bind
			if err := b.Decode(body); err != nil {
				s.stats.DecodeErrors++
				pt.detail = joinDetail(pt.detail, "parameters not recorded: malformed Bind")
			} else {
				var oids []uint32
				if st != nil && len(st.oids) == len(b.Parameters) {
					// The server refuses a Bind whose count differs; types of another
					// count were not this statement's.
					oids = st.oids
				}
				pt.params = pgwire.FormatParams(b.Parameters, b.ParameterFormatCodes, oids)
			}
		}
	}
	if len(portalName) == 0 {
		s.unnamedPort = pt
	} else {
		if s.portals == nil {
			s.portals = make(map[string]*portal)
		}
		s.generation++
		pt.gen = s.generation
		s.forgetPortal(string(portalName))
		s.portals[string(portalName)] = pt
		s.namedBytes += pt.size()
		s.evictPortals()
	}
	s.push(op{kind: opBind, start: m.start, text: pt.text, truncated: pt.truncated, detail: pt.detail})
}

func joinDetail(a, b string) string {
	if a == "" {
		return b
	}
	return a + "; " + b
}

func (s *Session) execute(m message) {
	start := m.start
	if !s.group.IsZero() {
		start = s.group
	}
	s.group = time.Time{}
	o := op{kind: opExecute, start: start}
	i := bytes.IndexByte(m.body, 0)
	if i < 0 || m.lost {
		s.stats.DecodeErrors++
		o.detail = "Execute message unreadable: portal unknown"
		s.push(o)
		return
	}
	name := m.body[:i]
	var pt *portal
	if len(name) == 0 {
		pt = s.unnamedPort
	} else {
		pt = s.portals[string(name)]
	}
	if pt == nil {
		o.detail = s.notSeen("portal", string(name))
	} else {
		o.text, o.truncated, o.detail, o.params = pt.text, pt.truncated, pt.detail, pt.params
	}
	s.push(o)
}

func (s *Session) describe(m message) {
	s.startGroup(m.start)
	o := op{kind: opDescribe, start: m.start}
	// Only a statement's Describe is answered with its parameter types, and only recorded
	// parameters need them.
	if s.cfg.RecordParams && len(m.body) > 0 && m.body[0] == 'S' {
		var d pgproto3.Describe
		if m.truncated || m.lost || d.Decode(m.body) != nil {
			s.stats.DecodeErrors++
		} else {
			o.stmt = s.lookupStatement(d.Name)
		}
	}
	s.push(o)
}

// paramDescription gives statement p the parameter types the server reported for it.
func (s *Session) paramDescription(p *prepared, m message) {
	var pd pgproto3.ParameterDescription
	if m.truncated || m.lost || pd.Decode(m.body) != nil {
		// Larger than MaxBufferedMessage, or cut by a gap: the parameters stay hex.
		return
	}
	named := p.name != "" && s.stmts[p.name] == p
	if named {
		s.namedBytes -= p.size()
	}
	p.oids = pd.ParameterOIDs
	if named {
		s.namedBytes += p.size()
		s.evictStatements()
	}
}

func (s *Session) closeMessage(m message) {
	s.startGroup(m.start)
	var c pgproto3.Close
	if m.truncated || m.lost || c.Decode(m.body) != nil {
		s.stats.DecodeErrors++
	} else if c.ObjectType == 'S' {
		if c.Name == "" {
			s.unnamedStmt = nil
		} else {
			s.forgetStatement(c.Name)
		}
	} else {
		if c.Name == "" {
			s.unnamedPort = nil
		} else {
			s.forgetPortal(c.Name)
		}
	}
	s.push(op{kind: opClose, start: m.start})
}

func (s *Session) functionCall(m message) {
	s.group = time.Time{}
	o := op{kind: opFunctionCall, start: m.start}
	var f pgproto3.FunctionCall
	if m.truncated || m.lost || f.Decode(m.body) != nil {
		if len(m.body) >= 4 {
			o.text = fmt.Sprintf("fastpath function call: oid %d", binary.BigEndian.Uint32(m.body))
		}
		o.detail = "fastpath function call arguments not recorded: message incomplete"
		s.stats.DecodeErrors++
	} else {
		o.text = fmt.Sprintf("fastpath function call: oid %d", f.Function)
		if s.cfg.RecordParams {
			formats := make([]int16, len(f.ArgFormatCodes))
			for i, c := range f.ArgFormatCodes {
				formats[i] = int16(c)
			}
			o.params = pgwire.FormatParams(f.Arguments, formats, nil) // a function's argument types are not on the wire
		}
	}
	s.push(o)
}

// ---- backend ----

func (s *Session) serverMessage(m message) {
	switch m.typ {
	case 'R', 'N', 'A', 'v':
		return // authentication (never read), notices, notifications, protocol negotiation
	case 'K':
		// By hand rather than pgproto3, which copies the cancel key (a credential).
		if len(m.body) >= 4 {
			s.pid = int32(binary.BigEndian.Uint32(m.body))
		}
		return
	case 'S':
		var ps pgproto3.ParameterStatus
		if m.truncated || m.lost || ps.Decode(m.body) != nil {
			s.stats.DecodeErrors++
			return
		}
		switch ps.Name {
		case "application_name":
			s.app = ps.Value
		case "session_authorization":
			// Reported at startup and on SET SESSION AUTHORIZATION: the user the server
			// checks privileges as (SET ROLE is not reported).
			s.user = ps.Value
		}
		return
	}
	for {
		h := s.headOp()
		if h == nil {
			s.noRequest(m)
			return
		}
		if s.late && h.seq > s.replayMark.pushed {
			s.stats.UnmatchedResponses++ // captured before this request was sent
			return
		}
		if !s.respond(h, m) {
			return
		}
	}
}

// noRequest handles a response when no request is waiting.
func (s *Session) noRequest(m message) {
	switch {
	case m.typ == 'Z' && !s.startupDone:
		s.startupDone = true
	case m.typ == 'E' && !s.startupDone && s.user != "":
		// The server refused the connection (bad password, unknown database, ...): an
		// audit trail wants failed logins. The message names the user, never the password.
		e := s.newEvent(s.startupAt)
		s.setError(e, m)
		e.Detail = "connection refused during startup"
		e.DurationUS = durationUS(s.startupAt, m.end)
		s.emit(e)
	default:
		s.stats.UnmatchedResponses++
		s.pairingGuessed = true // responses of requests capture lost still trail in
	}
}

// idle notes a ReadyForQuery that leaves no request waiting: responses to requests lost
// before it have all come (or are trailing, and noRequest will say so).
func (s *Session) idle() {
	if s.headOp() == nil {
		s.pairingGuessed = false
	}
}

// respond applies response m to the oldest waiting request h. It returns true when h turned
// out to be stale (its own response was lost) and was dropped, so m must be tried against
// the next one.
func (s *Session) respond(h *op, m message) (retry bool) {
	switch h.kind {
	case opLost:
		if m.typ == 'Z' {
			s.pop()
			s.idle()
		}
		s.stats.UnmatchedResponses++
		return false
	case opParse, opBind, opClose:
		switch m.typ {
		case completion(h.kind):
			s.pop()
		case 'E':
			s.extendedError(h, m)
		default:
			return s.stale(h)
		}
	case opDescribe:
		switch m.typ {
		case 't':
			// Types paired by a guess would render parameters as values of another
			// statement's types: only trusted pairings count, else parameters stay hex.
			if h.stmt != nil && !s.pairingGuessed {
				s.paramDescription(h.stmt, m)
			}
		case 'T', 'n':
			s.pop()
		case 'E':
			s.extendedError(h, m)
		default:
			return s.stale(h)
		}
	case opSync:
		if m.typ == 'Z' {
			s.pop()
			s.startupDone = true
			s.idle()
			return false
		}
		s.stats.UnmatchedResponses++
	case opExecute:
		switch m.typ {
		case 'D':
			h.rows++
		case 'C', 'I', 's':
			e := s.statementEvent(h, h.text, h.truncated, m)
			if m.typ == 's' {
				e.Detail = joinDetail(e.Detail, "row limit reached: portal suspended")
			}
			s.emit(e)
			s.pop()
		case 'E':
			s.extendedError(h, m)
		case 'G', 'H', 'W', 'd', 'c', 'T':
			// Copy in progress, or a row description: the Execute goes on.
		case 'Z':
			return s.stale(h)
		default:
			s.stats.UnmatchedResponses++
		}
	case opQuery:
		switch m.typ {
		case 'D':
			h.rows++
		case 'C', 'I', 'E':
			s.queryStatementDone(h, m)
		case 'Z':
			s.queryDone(h, m.end, "")
			s.pop()
			s.startupDone = true
			s.idle()
		case 'T', 'G', 'H', 'W', 'd', 'c':
		default:
			s.stats.UnmatchedResponses++
		}
	case opFunctionCall:
		switch m.typ {
		case 'V', 'E':
			if !h.emitted {
				e := s.statementEvent(h, h.text, false, m)
				s.emit(e)
				h.emitted = true
			}
		case 'Z':
			if !h.emitted {
				s.notAnswered(h, "response not seen", m.end)
			}
			s.pop()
		default:
			s.stats.UnmatchedResponses++
		}
	}
	return false
}

// completion is the response that acknowledges a Parse, Bind or Close.
func completion(k opKind) byte {
	switch k {
	case opParse:
		return '1'
	case opBind:
		return '2'
	}
	return '3'
}

// stale drops a request whose response must have been lost and asks for a retry.
func (s *Session) stale(h *op) bool {
	s.pairingGuessed = true
	s.notAnswered(h, "response not seen", time.Time{})
	s.pop()
	return true
}

// statementEvent builds the event for a statement that response m completed.
func (s *Session) statementEvent(h *op, text string, truncated bool, m message) *event.Event {
	e := s.newEvent(h.start)
	e.Statement, e.StatementTruncated = text, truncated
	e.Params = h.params
	e.Detail = h.detail
	e.DurationUS = durationUS(h.start, m.end)
	switch m.typ {
	case 'C':
		if n, ok := pgwire.TagRows(m.body); ok {
			e.Rows = n
		} else {
			e.Rows = h.rows
		}
	case 'E':
		s.setError(e, m)
	default:
		e.Rows = h.rows
	}
	if m.lost {
		e.Detail = joinDetail(e.Detail, "response partly lost: capture gap")
	}
	return e
}

func (s *Session) setError(e *event.Event, m message) {
	var er pgproto3.ErrorResponse
	if m.truncated || m.lost || er.Decode(m.body) != nil {
		s.stats.DecodeErrors++
		e.Error = "XX000" // internal_error: an error it was, its code unreadable
		e.Detail = joinDetail(e.Detail, "error response unreadable")
		return
	}
	e.Error, e.ErrorMessage = er.Code, er.Message
}

// queryStatementDone pairs the next statement of a simple Query with its CommandComplete,
// EmptyQueryResponse or ErrorResponse.
func (s *Session) queryStatementDone(h *op, m message) {
	if h.failed {
		s.stats.UnmatchedResponses++
		return
	}
	if h.last != nil {
		s.emit(h.last) // defensive: a response after the last statement's
		h.last = nil
	}
	n := h.numParts()
	if m.typ == 'E' && h.parts != nil {
		// The server parses the whole string before running any of it: a syntax error in
		// a later statement fails the Query before the first one runs. Its position says
		// which statement it is in.
		if j := s.errorStatement(h, m); j > h.idx {
			h.idx = j
		}
	}
	var e *event.Event
	if h.idx < n {
		e = s.statementEvent(h, h.part(h.idx), h.truncated && h.idx == n-1, m)
	} else if h.truncated {
		// A statement past the capture limit: its text was never kept.
		e = s.statementEvent(h, "", true, m)
		e.Detail = joinDetail(e.Detail, "statement text beyond the capture limit")
	} else {
		s.stats.UnmatchedResponses++
		return
	}
	h.idx++
	h.rows = 0
	if m.typ == 'E' {
		h.failed = true
	}
	if m.typ != 'E' && h.idx >= n && !h.truncated {
		// The last statement ends at ReadyForQuery.
		h.last = e
		return
	}
	s.emit(e)
}

// errorStatement returns the index of the statement an ErrorResponse's position points
// into, or -1 when it has none.
func (s *Session) errorStatement(h *op, m message) int {
	var er pgproto3.ErrorResponse
	if m.truncated || m.lost || er.Decode(m.body) != nil || er.Position <= 0 {
		return -1
	}
	return pgwire.StatementAt(h.text, h.parts, er.Position)
}

// queryDone ends a simple Query at ReadyForQuery (end) or when it is given up (detail).
func (s *Session) queryDone(h *op, end time.Time, detail string) {
	if h.last != nil {
		if !end.IsZero() {
			h.last.DurationUS = durationUS(h.last.Time, end)
		}
		s.emit(h.last)
		h.last = nil
	}
	if h.failed {
		return
	}
	if detail == "" {
		detail = "response not seen for this statement"
	}
	for ; h.idx < h.numParts(); h.idx++ {
		e := s.newEvent(h.start)
		e.Statement = h.part(h.idx)
		e.StatementTruncated = h.truncated && h.idx == h.numParts()-1
		e.Detail = joinDetail(h.detail, detail)
		s.stats.ResponsesNotSeen++
		s.emit(e)
	}
}

// notAnswered emits a request whose response was not seen.
func (s *Session) notAnswered(h *op, detail string, end time.Time) {
	switch h.kind {
	case opQuery:
		s.queryDone(h, end, detail)
	case opExecute, opFunctionCall:
		if h.emitted {
			return
		}
		e := s.newEvent(h.start)
		e.Statement, e.StatementTruncated, e.Params = h.text, h.truncated, h.params
		e.Detail = joinDetail(h.detail, detail)
		s.stats.ResponsesNotSeen++
		s.emit(e)
	}
}

// extendedError handles an ErrorResponse to a Parse/Bind/Describe/Close/Execute: one event
// for what the client tried to run, then every request up to Sync is skipped, as the server
// does.
func (s *Session) extendedError(h *op, m message) {
	var attempt *op
	for i := s.head; i < len(s.ops) && s.ops[i].kind != opSync; i++ {
		if s.ops[i].kind == opExecute {
			attempt = &s.ops[i]
			break
		}
	}
	if attempt == nil && (h.kind == opParse || h.kind == opBind) {
		attempt = h
	}
	if attempt != nil {
		s.emit(s.statementEvent(attempt, attempt.text, attempt.truncated, m))
	}
	for h := s.headOp(); h != nil && h.kind != opSync; h = s.headOp() {
		s.pop()
	}
	if s.headOp() == nil {
		s.skipToSync = true
	}
}

// messagesLost adjusts the pairing after a direction lost messages. mark is how many
// requests had been sent when the lost bytes were captured. Lost requests may still be
// answered, so a marker absorbs their responses. Lost responses leave the requests that
// were waiting then without one; requests sent later were sent after those responses (a
// client that pipelines across a capture gap may still be misread: its events then say
// so only if their own responses are lost too).
func (s *Session) messagesLost(fromClient bool, mark uint64) {
	if fromClient {
		s.group = time.Time{}
		s.skipToSync = false
		if n := len(s.ops); n > s.head && s.ops[n-1].kind == opLost {
			return
		}
		s.push(op{kind: opLost})
		return
	}
	flushed := false
	for h := s.headOp(); h != nil && h.seq <= mark; h = s.headOp() {
		flushed = flushed || h.kind != opLost
		s.notWaiting(h, "response not seen: capture gap")
	}
	if flushed {
		// Not all of a flushed request's responses need have been lost.
		s.pairingGuessed = true
		if s.headOp() == nil {
			s.push(op{kind: opLost})
		}
	}
}

// flush emits every waiting request as not answered and forgets them.
func (s *Session) flush(detail string) {
	for h := s.headOp(); h != nil; h = s.headOp() {
		s.notWaiting(h, detail)
	}
}

// notWaiting emits the head request as not answered and forgets it.
func (s *Session) notWaiting(h *op, detail string) {
	if h.kind == opQuery && h.last != nil {
		s.emit(h.last) // answered; only its ReadyForQuery is missing
		h.last = nil
	}
	s.notAnswered(h, detail, time.Time{})
	s.pop()
}

func (p *prepared) size() int { return len(p.text) + 4*len(p.oids) }

func (p *portal) size() int {
	n := 0
	for _, v := range p.params {
		n += len(v)
	}
	return n // the text is the statement's, shared
}

func (s *Session) forgetStatement(name string) {
	if p := s.stmts[name]; p != nil {
		s.namedBytes -= p.size()
		delete(s.stmts, name)
	}
}

func (s *Session) forgetPortal(name string) {
	if p := s.portals[name]; p != nil {
		s.namedBytes -= p.size()
		delete(s.portals, name)
	}
}

// overBudget: too many named statements or portals, or too many bytes held for them.
func (s *Session) overBudget(n int) bool {
	return n > s.cfg.MaxPrepared || s.namedBytes > s.cfg.MaxPreparedBytes
}

// evictStatements forgets the oldest named statements beyond the budget. Scanning for
// the oldest is linear, but only happens once a session holds more than the cap.
func (s *Session) evictStatements() {
	for len(s.stmts) > 1 && s.overBudget(len(s.stmts)) {
		var oldest string
		var gen uint64
		for name, p := range s.stmts {
			if gen == 0 || p.gen < gen {
				oldest, gen = name, p.gen
			}
		}
		s.forgetStatement(oldest)
		s.stats.PreparedEvicted++
	}
}

func (s *Session) evictPortals() {
	for len(s.portals) > 1 && s.overBudget(len(s.portals)) {
		var oldest string
		var gen uint64
		for name, p := range s.portals {
			if gen == 0 || p.gen < gen {
				oldest, gen = name, p.gen
			}
		}
		s.forgetPortal(oldest)
		s.stats.PreparedEvicted++
	}
}
