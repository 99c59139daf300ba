package postgres

import (
	"encoding/binary"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
)

// The server side: each backend message is matched to the request at the head of the
// queue, which it answers, completes or fails.

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
