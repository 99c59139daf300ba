package postgres

import (
	"time"

	"github.com/vigil-db/vigil/pkg/event"
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
