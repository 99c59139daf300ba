package postgres

import (
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/vigil-db/vigil/pkg/event"
	"github.com/vigil-db/vigil/pkg/pgwire"
)

// Building the statement events of answered (or never answered) requests.

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
