package postgres

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/vigil-db/vigil/pkg/pgwire"
	"github.com/vigil-db/vigil/pkg/sqlparse"
)

// The client side: what each frontend message asks of the server, queued in order (see
// queue.go) until the server answers it.

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
		forget(s, s.stmts, name)
		s.stmts[name] = p
		s.namedBytes += p.size()
		evict(s, s.stmts)
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
		forget(s, s.portals, string(portalName))
		s.portals[string(portalName)] = pt
		s.namedBytes += pt.size()
		evict(s, s.portals)
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
		evict(s, s.stmts)
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
			forget(s, s.stmts, c.Name)
		}
	} else {
		if c.Name == "" {
			s.unnamedPort = nil
		} else {
			forget(s, s.portals, c.Name)
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
