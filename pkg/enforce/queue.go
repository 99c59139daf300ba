package enforce

import (
	"strings"
	"sync"
	"time"
)

// Item kinds besides the message types of requests ('Q', 'P', 'B', 'D', 'E', 'C', 'S', 'F').
// They mark where the client's COPY data started and ended, so that the Syncs a server
// ignores during COPY FROM STDIN can be told apart from those it answers.
const (
	markCopyData = 'd'
	markCopyEnd  = 'c'
)

// item is one request forwarded to the server whose response is still to come. The client
// side pushes it before the request is written (so the response can never arrive first); the
// server side pops it when the response is complete. Fields below "response" belong to the
// server side.
type item struct {
	kind     byte
	st       *stmt  // the statement a Query, Parse, Execute, FunctionCall or Describe is about
	name     string // portal or statement name (Bind, Describe, Execute, Close)
	objType  byte   // 'S' or 'P' for Describe and Close
	injected bool   // added by the proxy (a Describe for masking): its response is not forwarded
	start    time.Time

	// Query: text is its one statement as SplitPostgres trims it; a multi-statement Query
	// has parts instead, each judged on its own for its event (st, judged on the whole
	// text, is what is enforced).
	text   string
	parts  []string
	labels []*stmt
	// Parse: the parameter types it declared (nil: none), for rendering Bind's values.
	oids []uint32
	// Bind: the statement it binds and, when parameters are recorded, a copy of its body,
	// rendered once the server has said which types the parameters have.
	stmtName string
	bind     []byte
	// FunctionCall: its arguments as text.
	params []string

	// response
	rows    int64
	errCode string
	errMsg  string
	copyIn  bool
	cols    colSet
	errPos  int32 // the error's position (characters from 1), 0 when it has none
	idx     int   // Query: the statement the next completion belongs to
	failed  bool  // Query: a statement failed, the rest of the string was not run
}

// colSet collects result column names once each, and what the taint analysis could not
// follow (for the event's detail).
type colSet struct {
	pii, masked []string
	note        string
}

// addPlan adds the columns a plan classified by name. The first plan of a statement lends
// its own lists (capped, so a later append copies instead of writing into the plan): a
// statement's event then costs no allocation for them.
func (c *colSet) addPlan(p *rowPlan) {
	c.pii = addAll(c.pii, p.pii)
	c.masked = addAll(c.masked, p.masked)
	if p.note != "" && !strings.Contains(c.note, p.note) {
		c.note = joinDetail(c.note, p.note)
	}
}

func addAll(list, names []string) []string {
	if len(list) == 0 {
		return names[:len(names):len(names)]
	}
	for _, n := range names {
		list = addOnce(list, n)
	}
	return list
}

func addOnce(list []string, name string) []string {
	for _, n := range list {
		if n == name {
			return list
		}
	}
	return append(list, name)
}

// queue is the session's list of outstanding requests, in the order the server answers them.
type queue struct {
	mu    sync.Mutex
	items []*item // ring buffer
	head  int
	n     int
	free  []*item
}

func newQueue() *queue { return &queue{items: make([]*item, 64)} }

// get returns a zeroed item to fill and push.
func (q *queue) get() *item {
	q.mu.Lock()
	defer q.mu.Unlock()
	if k := len(q.free); k > 0 {
		it := q.free[k-1]
		q.free = q.free[:k-1]
		return it
	}
	return new(item)
}

func (q *queue) push(it *item) {
	q.mu.Lock()
	if q.n == len(q.items) {
		grown := make([]*item, 2*len(q.items))
		for i := 0; i < q.n; i++ {
			grown[i] = q.items[(q.head+i)%len(q.items)]
		}
		q.items, q.head = grown, 0
	}
	q.items[(q.head+q.n)%len(q.items)] = it
	q.n++
	q.mu.Unlock()
}

// peek returns the i-th outstanding item, or nil.
func (q *queue) peek(i int) *item {
	q.mu.Lock()
	defer q.mu.Unlock()
	if i >= q.n {
		return nil
	}
	return q.items[(q.head+i)%len(q.items)]
}

// pop removes the oldest item and recycles it; the caller must not use it afterwards.
func (q *queue) pop() {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.n == 0 {
		return
	}
	it := q.items[q.head]
	q.items[q.head] = nil
	q.head = (q.head + 1) % len(q.items)
	q.n--
	*it = item{}
	if len(q.free) < 256 {
		q.free = append(q.free, it)
	}
}

// removeAt drops the i-th outstanding item (i > 0: an item behind the head).
func (q *queue) removeAt(i int) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if i >= q.n {
		return
	}
	for j := i; j < q.n-1; j++ {
		q.items[(q.head+j)%len(q.items)] = q.items[(q.head+j+1)%len(q.items)]
	}
	q.items[(q.head+q.n-1)%len(q.items)] = nil
	q.n--
}
