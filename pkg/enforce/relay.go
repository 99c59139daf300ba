package enforce

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/vigil-db/vigil/pkg/lineage"
	"github.com/vigil-db/vigil/pkg/pgwire"
	"github.com/vigil-db/vigil/pkg/policy"
)

// session is one proxied client connection. After startup two goroutines run it: fromClient
// judges and forwards requests, fromServer masks and forwards responses and writes the audit
// events. They share only the queue of outstanding requests (and immutable stmts), so each
// direction reads and writes its own buffers without locks.
type session struct {
	srv *Server
	// ctx ends with the session (the proxy's shutdown); work done for the session, such
	// as catalog lookups, takes it.
	ctx    context.Context
	id     string
	client net.Conn
	server net.Conn
	tls    bool

	user, database, application string
	claimedUser                 string // the startup message's user (user differs when authentication is terminated)
	clientAddr, serverAddr      string
	upstream                    string
	principal                   Principal
	upCreds                     *Credentials // the proxy logs in upstream with these (nil: pass-through)
	expires                     time.Time    // the session ends then (its token's expiry); zero: never
	req                         policy.Request
	backendPID                  uint32
	key                         proxyKey

	cr, sr *msgReader
	cw, sw *bufio.Writer
	q      *queue
	// cwMu is held by fromServer except while it waits for the server, so that
	// fromClient can write a notice to the client (a statement held for approval).
	cwMu sync.Mutex

	// app is application as the client side reads it for decisions (the server side
	// learns of changes).
	app            atomic.Pointer[string]
	unsafeEncoding atomic.Bool
	masking        atomic.Bool // some statement's results are masked: redact errors too
	// paramTypes mirrors serverSide.stmtOIDs for fromClient, which shows an approver a
	// Bind's parameters as the trail will record them.
	paramTypes sync.Map
	// fatal, set by fromClient, is the error the client gets once fromServer has stopped
	// writing to it.
	fatalMu sync.Mutex
	fatal   *pgproto3.ErrorResponse
	// deadlineMu orders the client read deadline fromServer sets when it ends (serverDone)
	// with the one a held statement's hangup watch sets and clears.
	deadlineMu sync.Mutex
	serverDone bool

	clientSide
	serverSide
}

// clientSide is the state only fromClient, the client-to-server goroutine, touches.
type clientSide struct {
	stmts     map[string]*stmt
	portals   map[string]*stmt
	described map[string]bool
	scratch   []byte
	// ownedMsg says the message being handled is in a buffer of its own (a large one that
	// msgReader detached), which nothing overwrites.
	ownedMsg bool
}

// serverSide is the state only fromServer, the server-to-client goroutine, touches.
type serverSide struct {
	plans     map[string]*rowPlan // portal -> plan from its Describe
	planCache map[planDecision]map[string]*rowPlan
	// plansCached counts the plans in planCache, which is cleared when it reaches
	// maxCachedPlans.
	plansCached int
	curPlan     *rowPlan
	planSet     bool
	piiGen      uint64 // the catalog's PII generation planCache was built under
	skipping    bool   // after an error in an extended-protocol batch, until ReadyForQuery
	// With RecordParams: each statement's parameter types (declared by Parse or reported
	// by ParameterDescription) and each portal's parameters, as events record them.
	stmtOIDs     map[string][]uint32
	portalParams map[string]boundParams
	copyOut      *copyPlan
	rowBuf       []byte
	// analyses caches taint analyses by statement text; defs holds those of the cursors
	// and prepared statements the session defined (taint.go).
	analyses map[string]*lineage.Result
	defs     map[string]*lineage.Result
}

func newClientSide() clientSide {
	return clientSide{stmts: make(map[string]*stmt), portals: make(map[string]*stmt), described: make(map[string]bool)}
}

func newServerSide() serverSide {
	return serverSide{plans: make(map[string]*rowPlan), planCache: make(map[planDecision]map[string]*rowPlan),
		stmtOIDs: make(map[string][]uint32), portalParams: make(map[string]boundParams)}
}

// relay runs both directions until the session ends.
func (ss *session) relay(ctx context.Context) error {
	ss.q = newQueue()
	ss.clientSide, ss.serverSide = newClientSide(), newServerSide()
	stop := context.AfterFunc(ctx, func() {
		ss.client.Close()
		ss.server.Close()
	})
	defer stop()
	defer ss.server.Close()

	serr := make(chan error, 1)
	go func() {
		err := ss.guarded("server", ss.fromServer)
		// Unblock fromClient without closing the client connection: a FATAL may still have
		// to be written to it.
		ss.deadlineMu.Lock()
		ss.serverDone = true
		_ = ss.client.SetReadDeadline(time.Unix(1, 0))
		ss.deadlineMu.Unlock()
		serr <- err
	}()
	cerr := ss.guarded("client", ss.fromClient)
	if cerr != nil {
		ss.server.Close()
	} else if tc, ok := ss.server.(interface{ CloseWrite() error }); ok {
		_ = tc.CloseWrite()
	}
	err := <-serr
	ss.abandon()

	ss.fatalMu.Lock()
	fatal := ss.fatal
	ss.fatalMu.Unlock()
	if fatal != nil {
		if msg, encErr := encode(nil, fatal); encErr == nil {
			_ = ss.client.SetWriteDeadline(time.Now().Add(5 * time.Second))
			_, _ = ss.cw.Write(msg)
			_ = ss.cw.Flush()
			lingerClose(ss.client)
		}
	}
	switch {
	case cerr != nil && !errors.Is(cerr, os.ErrDeadlineExceeded) && !isHangup(cerr):
		return cerr
	case err != nil && !isHangup(err):
		return err
	}
	return nil
}

// A session that ends on a FATAL reads what its client still sends for at most lingerTime,
// and stops once nothing came for lingerIdle.
const (
	lingerTime = 2 * time.Second
	lingerIdle = 100 * time.Millisecond
)

// lingerClose half-closes c after the FATAL was written and discards what the client is
// still sending (the rest of a message over the size limit) until it closes its side, goes
// quiet, or lingerTime passes. Closing with unread data would answer it with a reset, and a
// client's kernel drops what it had received on a reset: the client would never read the
// FATAL.
func lingerClose(c net.Conn) {
	hc, ok := c.(interface{ CloseWrite() error })
	if !ok || hc.CloseWrite() != nil {
		return
	}
	end := time.Now().Add(lingerTime)
	buf := make([]byte, 64<<10)
	for time.Now().Before(end) {
		d := time.Now().Add(lingerIdle)
		if d.After(end) {
			d = end
		}
		_ = c.SetReadDeadline(d)
		if _, err := c.Read(buf); err != nil {
			return
		}
	}
}

// guarded runs one direction of the relay, a panic in it closing just this session.
func (ss *session) guarded(side string, f func() error) (err error) {
	defer ss.guard(side, &err)
	return f()
}

// context is the session's context (Background before run sets it, in unit tests).
func (ss *session) context() context.Context {
	if ss.ctx == nil {
		return context.Background()
	}
	return ss.ctx
}

// isHangup reports errors that just mean the other side went away.
func isHangup(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, os.ErrDeadlineExceeded)
}

// setFatal records the error the client is told about when the session ends because of it.
func (ss *session) setFatal(code, msg string) {
	ss.fatalMu.Lock()
	if ss.fatal == nil {
		ss.fatal = errorMsg("FATAL", code, msg, "")
	}
	ss.fatalMu.Unlock()
}

// fromClient reads the client's messages, judges statements and forwards them (or their
// refusal) to the server. Writes are flushed when the client's batch is consumed.
func (ss *session) fromClient() error {
	inCopy := false
	for {
		if !ss.cr.nextComplete() {
			if err := ss.sw.Flush(); err != nil {
				return fmt.Errorf("writing to upstream: %w", err)
			}
		}
		typ, total, msg, err := ss.cr.next()
		if err != nil {
			return ss.clientFailed(err)
		}
		if typ == 'd' || typ == 'c' || typ == 'f' {
			// COPY FROM STDIN data: forwarded as is; the markers let the response side
			// know which Syncs the server ignored meanwhile.
			if typ == 'd' && !inCopy {
				ss.pushKind(markCopyData)
			}
			if typ != 'd' {
				ss.pushKind(markCopyEnd)
			}
			inCopy = typ == 'd'
			if msg == nil {
				err = ss.cr.streamTo(ss.sw, total)
			} else {
				_, err = ss.sw.Write(msg)
			}
			if err != nil {
				return ss.clientFailed(err)
			}
			continue
		}
		inCopy = false
		ss.ownedMsg = false
		if msg == nil {
			if msg, err = ss.cr.readWhole(total); err != nil {
				return ss.clientFailed(err)
			}
			if typ == 'Q' || typ == 'P' {
				// The statement's text is kept (judged, queued, recorded) as a view of
				// this buffer rather than a copy of it.
				ss.cr.detach()
				ss.ownedMsg = true
			}
		}
		done, err := ss.clientMessage(typ, msg)
		if err != nil {
			return ss.clientFailed(err)
		}
		if done {
			return ss.sw.Flush()
		}
	}
}

// clientFailed turns an error on the client side into the session's end: a protocol violation
// gets a FATAL the client can read (54000 for a message over the size limit, else 08P01)
// and is counted and logged as reason client_protocol.
func (ss *session) clientFailed(err error) error {
	if !errors.Is(err, errProtocol) {
		return err
	}
	code := "08P01"
	if errors.Is(err, errTooLarge) {
		code = "54000"
	}
	ss.setFatal(code, "Vigil proxy: "+err.Error())
	return &sessionError{reason: reasonClientProtocol, err: err}
}

func (ss *session) pushKind(kind byte) {
	it := ss.q.get()
	it.kind = kind
	ss.q.push(it)
}

// clientMessage handles one complete client message. done means the client terminated.
func (ss *session) clientMessage(typ byte, msg []byte) (done bool, err error) {
	body := msg[5:]
	switch typ {
	case 'Q':
		text, rest, ok := cstring(body)
		if !ok || len(rest) != 0 {
			return false, protoErr("malformed Query message")
		}
		st := ss.decide(ss.msgText(text))
		start := time.Now()
		if st.dec.Action == policy.ActionRequireApproval {
			if st, err = ss.approve(st, nil, ""); err != nil {
				return false, err
			}
		}
		it := ss.q.get()
		it.kind, it.st, it.start = 'Q', st, start
		ss.splitQuery(it)
		ss.q.push(it)
		if st.blocked {
			ss.scratch, _ = beginMsg(ss.scratch[:0], 'Q')
			ss.scratch = append(append(ss.scratch, refusedSQL...), 0)
			ss.scratch = finishMsg(ss.scratch, 0)
			_, err = ss.sw.Write(ss.scratch)
			return false, err
		}
	case 'P':
		name, rest, ok := cstring(body)
		query, params, ok2 := cstring(rest)
		if !ok || !ok2 || len(params) < 2 || len(params) != 2+4*int(binary.BigEndian.Uint16(params)) {
			return false, protoErr("malformed Parse message")
		}
		st := ss.perBind(ss.atBind(ss.judge(ss.msgText(query), nil, nil)))
		if st.dec.NeedsEstimate && !st.blocked {
			// The planner is asked at each Bind, with its parameters.
			c := *st
			c.estimateAtBind = true
			st = &c
		}
		if st.atBind || st.estimateAtBind {
			c := *st
			c.paramOIDs = declaredTypes(params)
			st = &c
		}
		it := ss.q.get()
		it.kind, it.st, it.start, it.name = 'P', st, time.Now(), string(name)
		if ss.srv.cfg.RecordParams {
			it.oids = declaredTypes(params)
		}
		ss.q.push(it)
		// A refused statement is kept too: what is bound to and executed from it is
		// recorded as refused.
		ss.stmts[string(name)] = st
		if st.blocked {
			ss.scratch, _ = beginMsg(ss.scratch[:0], 'P')
			ss.scratch = append(append(ss.scratch, name...), 0)
			ss.scratch = append(append(ss.scratch, refusedSQL...), 0)
			ss.scratch = append(ss.scratch, params...)
			ss.scratch = finishMsg(ss.scratch, 0)
			_, err = ss.sw.Write(ss.scratch)
			return false, err
		}
	case 'B':
		portal, rest, ok := cstring(body)
		name, _, ok2 := cstring(rest)
		if !ok || !ok2 {
			return false, protoErr("malformed Bind message")
		}
		st := ss.stmts[string(name)]
		if st == nil {
			// A statement prepared with SQL PREPARE: judge its execution as the SQL
			// equivalent (the PREPARE itself was judged when it passed).
			st = ss.decide("EXECUTE " + quoteIdent(string(name)))
		}
		if st.perBind || st.atBind || st.estimateAtBind {
			var b pgproto3.Bind
			if err := b.Decode(body); err != nil {
				return false, protoErr("malformed Bind message: %v", err)
			}
			if st.atBind || st.estimateAtBind {
				st = ss.perBind(ss.decideBound(st, &b))
			}
			if st.perBind {
				var err error
				if st, err = ss.approve(st, &b, string(name)); err != nil {
					return false, err
				}
			}
		}
		ss.portals[string(portal)] = st
		ss.described[string(portal)] = false
		it := ss.q.get()
		it.kind, it.name, it.st, it.stmtName = 'B', string(portal), st, string(name)
		if ss.srv.cfg.RecordParams {
			it.bind = append([]byte(nil), body...)
		}
		ss.q.push(it)
		if st.blocked {
			return false, ss.refuseBind()
		}
	case 'D':
		if len(body) < 2 || (body[0] != 'S' && body[0] != 'P') {
			return false, protoErr("malformed Describe message")
		}
		name, rest, ok := cstring(body[1:])
		if !ok || len(rest) != 0 {
			return false, protoErr("malformed Describe message")
		}
		it := ss.q.get()
		it.kind, it.objType, it.name = 'D', body[0], string(name)
		if body[0] == 'P' {
			it.st = ss.portals[it.name]
			ss.described[it.name] = true
		} else {
			it.st = ss.stmts[it.name]
		}
		ss.q.push(it)
	case 'E':
		portal, rest, ok := cstring(body)
		if !ok || len(rest) != 4 {
			return false, protoErr("malformed Execute message")
		}
		st := ss.portals[string(portal)]
		if st == nil {
			// A cursor opened with SQL DECLARE: judged as the FETCH it amounts to.
			st = ss.decide("FETCH ALL FROM " + quoteIdent(string(portal)))
			ss.portals[string(portal)] = st
		}
		if !ss.described[string(portal)] {
			// Masking needs the portal's columns and formats, and the events of a raw
			// statement name the PII columns that left: ask, and keep the answer.
			it := ss.q.get()
			it.kind, it.objType, it.name, it.st, it.injected = 'D', 'P', string(portal), st, true
			ss.q.push(it)
			ss.scratch, _ = beginMsg(ss.scratch[:0], 'D')
			ss.scratch = append(append(append(ss.scratch, 'P'), portal...), 0)
			ss.scratch = finishMsg(ss.scratch, 0)
			if _, err := ss.sw.Write(ss.scratch); err != nil {
				return false, err
			}
			ss.described[string(portal)] = true
		}
		it := ss.q.get()
		it.kind, it.name, it.st, it.start = 'E', string(portal), st, time.Now()
		ss.q.push(it)
	case 'C':
		if len(body) < 2 || (body[0] != 'S' && body[0] != 'P') {
			return false, protoErr("malformed Close message")
		}
		name, _, ok := cstring(body[1:])
		if !ok {
			return false, protoErr("malformed Close message")
		}
		if body[0] == 'S' {
			delete(ss.stmts, string(name))
		} else {
			delete(ss.portals, string(name))
			delete(ss.described, string(name))
		}
		it := ss.q.get()
		it.kind, it.objType, it.name = 'C', body[0], string(name)
		ss.q.push(it)
	case 'S':
		ss.pushKind('S')
	case 'H':
		if _, err := ss.sw.Write(msg); err != nil {
			return false, err
		}
		return false, ss.sw.Flush()
	case 'F':
		return false, ss.functionCall(msg)
	case 'X':
		_, err := ss.sw.Write(msg)
		return true, err
	default:
		return false, protoErr("unexpected message type %q from client", typ)
	}
	_, err = ss.sw.Write(msg)
	return false, err
}

// msgText returns the text of b, a part of the message being handled: a copy when the
// message sits in the read buffer (which the next read overwrites), else a view of its own
// buffer.
func (ss *session) msgText(b []byte) string {
	if ss.ownedMsg && len(b) > 0 {
		return unsafe.String(&b[0], len(b))
	}
	return string(b)
}

// functionCall judges a FunctionCall message as the SELECT of that function it amounts to;
// a function the catalog cannot name is refused.
func (ss *session) functionCall(msg []byte) error {
	var fc pgproto3.FunctionCall
	if err := fc.Decode(msg[5:]); err != nil {
		return protoErr("malformed FunctionCall message: %v", err)
	}
	var st *stmt
	name, err := ss.srv.cat.functionName(ss, fc.Function)
	if err != nil {
		ss.srv.log.Warn("naming a FunctionCall's function", "session_id", ss.id, "oid", fc.Function, "err", err)
		st = &stmt{text: fmt.Sprintf("-- FunctionCall of function oid %d", fc.Function), blocked: true,
			dec:     policy.Decision{Action: policy.ActionBlock, Rule: "proxy:function_call"},
			refusal: errorFields{"42501", "Vigil: a FunctionCall of a function the proxy cannot identify is refused", ""}}
	} else {
		sql := "SELECT " + name + "("
		for i := range fc.Arguments {
			if i > 0 {
				sql += ", "
			}
			sql += fmt.Sprintf("$%d", i+1)
		}
		st = functionCallRefusal(ss.decide(sql+")"), name)
	}
	it := ss.q.get()
	it.kind, it.st, it.start = 'F', st, time.Now()
	if ss.srv.cfg.RecordParams {
		formats := make([]int16, len(fc.ArgFormatCodes))
		for i, c := range fc.ArgFormatCodes {
			formats[i] = int16(c)
		}
		it.params = pgwire.FormatParams(fc.Arguments, formats, nil) // a function's argument types are not on the wire
	}
	ss.q.push(it)
	if st.blocked {
		ss.scratch, _ = beginMsg(ss.scratch[:0], 'Q')
		ss.scratch = append(append(ss.scratch, refusedSQL...), 0)
		ss.scratch = finishMsg(ss.scratch, 0)
		_, err = ss.sw.Write(ss.scratch)
		return err
	}
	_, err = ss.sw.Write(msg)
	return err
}

// head returns the oldest outstanding request, dropping COPY markers that reached the front.
func (ss *session) head() *item {
	for {
		it := ss.q.peek(0)
		if it == nil || (it.kind != markCopyData && it.kind != markCopyEnd) {
			return it
		}
		ss.q.pop()
	}
}

// popHead completes the oldest request.
func (ss *session) popHead() {
	ss.q.pop()
	ss.curPlan, ss.planSet = nil, false
}

// fromServer reads the server's responses, matches them to the outstanding requests, masks
// what must be masked, replaces the errors of refused statements and emits the events.
func (ss *session) fromServer() error {
	ss.cwMu.Lock()
	defer ss.cwMu.Unlock()
	for {
		waiting := !ss.sr.nextComplete()
		if waiting {
			if err := ss.cw.Flush(); err != nil {
				return fmt.Errorf("writing to client: %w", err)
			}
			ss.cwMu.Unlock()
		}
		typ, total, msg, err := ss.sr.next()
		if waiting {
			ss.cwMu.Lock()
		}
		if err != nil {
			return serverErr("reading from upstream", err)
		}
		if err := ss.serverMessage(typ, total, msg); err != nil {
			var se *sessionError
			if errors.As(err, &se) && se.reason == reasonServerProtocol {
				if out, encErr := encode(nil, errorMsg("FATAL", "08P01", "Vigil proxy: "+se.err.Error(), "")); encErr == nil {
					_, _ = ss.cw.Write(out)
					_ = ss.cw.Flush()
				}
			}
			return err
		}
	}
}

func desync(format string, a ...any) error {
	return &sessionError{reason: reasonServerProtocol, err: fmt.Errorf("upstream response out of step: "+format, a...)}
}

func (ss *session) serverMessage(typ byte, total int, msg []byte) error {
	// Data rows and COPY data are the volume: keep their path short.
	switch typ {
	case 'D':
		h := ss.head()
		if h == nil || (h.kind != 'Q' && h.kind != 'E') {
			return desync("DataRow without a query")
		}
		h.rows++ // a count in CommandComplete's tag replaces it; PortalSuspended has none
		if h.kind == 'E' && !ss.planSet {
			ss.curPlan, ss.planSet = ss.plans[h.name], true
			if ss.curPlan == nil && h.st != nil && h.st.mask {
				ss.curPlan = nullPlan
			}
			if ss.curPlan != nil {
				h.cols.addPlan(ss.curPlan) // the Describe's plan names this Execute's columns
			}
		}
		if ss.curPlan == nil || ss.curPlan.ledger {
			return ss.forward(total, msg, ss.sr)
		}
		if msg == nil {
			var err error
			if msg, err = ss.sr.readWhole(total); err != nil {
				return serverErr("reading a row to mask", err)
			}
		}
		out, err := ss.maskRow(ss.curPlan, msg, h)
		if err != nil {
			return &sessionError{reason: reasonServerProtocol, err: err}
		}
		_, err = ss.cw.Write(out)
		return err
	case 'd':
		if ss.copyOut != nil {
			if msg == nil {
				var err error
				if msg, err = ss.sr.readWhole(total); err != nil {
					return serverErr("reading COPY data to mask", err)
				}
			}
			_, err := ss.cw.Write(ss.copyOut.mask(ss, msg))
			return err
		}
		return ss.forward(total, msg, ss.sr)
	}
	if msg == nil {
		var err error
		if msg, err = ss.sr.readWhole(total); err != nil {
			return serverErr("reading from upstream", err)
		}
	}
	body := msg[5:]
	h := ss.head()
	switch typ {
	case 'N':
		if ss.redacting() {
			return ss.writeRedacted(msg, stmtText(h))
		}
	case 'S':
		ss.noteParameter(body)
		if ss.redacting() {
			var err error
			if msg, err = ss.maskParameter(msg); err != nil {
				return err
			}
		}
	case 'A':
		if ss.redacting() {
			var err error
			if msg, err = ss.maskNotification(msg); err != nil {
				return err
			}
		}
	case 'T':
		if h == nil {
			return desync("RowDescription without a request")
		}
		switch h.kind {
		case 'Q':
			// A raw statement gets a plan too: its events name the PII columns that left raw.
			ss.curPlan = ss.cachedPlan(body, h)
		case 'D':
			if h.objType == 'P' {
				delete(ss.plans, h.name)
				if h.st != nil {
					ss.plans[h.name] = ss.cachedPlan(body, h)
				}
			}
			if h.injected {
				ss.popHead()
				return nil
			}
			ss.popHead()
		default:
			return desync("RowDescription answering %q", h.kind)
		}
	case 'n':
		if h == nil || h.kind != 'D' {
			return desync("NoData without a Describe")
		}
		injected := h.injected
		if h.objType == 'P' {
			delete(ss.plans, h.name)
		}
		ss.popHead()
		if injected {
			return nil
		}
	case 't':
		if h == nil || h.kind != 'D' {
			return desync("ParameterDescription without a Describe")
		}
		if ss.srv.cfg.RecordParams && h.objType == 'S' {
			var pd pgproto3.ParameterDescription
			if err := pd.Decode(body); err != nil {
				return &sessionError{reason: reasonServerProtocol, err: fmt.Errorf("malformed ParameterDescription: %w", err)}
			}
			ss.stmtOIDs[h.name] = pd.ParameterOIDs
			ss.paramTypes.Store(h.name, pd.ParameterOIDs)
		}
	case '1', '2', '3':
		want := map[byte]byte{'1': 'P', '2': 'B', '3': 'C'}[typ]
		if h == nil || h.kind != want {
			return desync("%q answering %v", typ, h)
		}
		switch typ {
		case '1':
			ss.parsed(h)
		case '2':
			delete(ss.plans, h.name)
			ss.bound(h)
		case '3':
			if h.objType == 'S' {
				delete(ss.stmtOIDs, h.name)
				ss.paramTypes.Delete(h.name)
			} else {
				delete(ss.portalParams, h.name)
			}
		}
		ss.popHead()
	case 'C', 'I', 's':
		if h == nil || (h.kind != 'Q' && h.kind != 'E') {
			return desync("%q without a query", typ)
		}
		ss.copyOut = nil
		if typ == 'C' {
			if n, ok := pgwire.TagRows(body); ok {
				h.rows = n
			}
			ss.noteDefinition(h, body)
		}
		if h.kind == 'Q' {
			if typ != 's' {
				ss.queryStatementDone(h)
			}
			ss.curPlan = nil
			break
		}
		if h.copyIn {
			ss.dropIgnoredSyncs(false)
		}
		detail := ""
		if typ == 's' {
			detail = "row limit reached: portal suspended"
		}
		ss.emitAs(h, h.st, h.st.text, detail, time.Now())
		ss.popHead()
	case 'E':
		return ss.serverError(h, msg)
	case 'Z':
		if len(body) != 1 {
			return desync("malformed ReadyForQuery")
		}
		for h != nil && ss.skipping && h.kind != 'S' {
			ss.popHead()
			h = ss.head()
		}
		ss.skipping = false
		if h == nil || (h.kind != 'S' && h.kind != 'Q' && h.kind != 'F') {
			return desync("ReadyForQuery answering %v", h)
		}
		switch h.kind {
		case 'Q':
			ss.queryDone(h, "", "", "response not seen for this statement")
		case 'F':
			ss.emit(h, time.Now())
		}
		ss.popHead()
		if body[0] == 'I' {
			// Outside a transaction no portal survives.
			clear(ss.plans)
			clear(ss.portalParams)
		}
	case 'V':
		if h == nil || h.kind != 'F' {
			return desync("FunctionCallResponse without a FunctionCall")
		}
	case 'G':
		if h == nil || (h.kind != 'Q' && h.kind != 'E') {
			return desync("CopyInResponse without a query")
		}
		h.copyIn = true
	case 'H':
		if h == nil || (h.kind != 'Q' && h.kind != 'E') {
			return desync("CopyOutResponse without a query")
		}
		if h.st.mask {
			ss.copyOut = ss.copyPlanFor(h, body)
		}
	case 'c':
	case 'W':
		return &sessionError{reason: reasonServerProtocol, err: errors.New("CopyBothResponse (replication) is not allowed through the proxy")}
	default:
		return &sessionError{reason: reasonServerProtocol, err: fmt.Errorf("unexpected message type %q from upstream", typ)}
	}
	_, err := ss.cw.Write(msg)
	return err
}

// forward writes a message through unchanged, streaming it when it is larger than the buffer.
func (ss *session) forward(total int, msg []byte, r *msgReader) error {
	if msg == nil {
		return r.streamTo(ss.cw, total)
	}
	_, err := ss.cw.Write(msg)
	return err
}

// serverError handles an ErrorResponse: it belongs to the oldest request; a refused
// statement's error is replaced by the proxy's; in an extended-protocol batch the server now
// skips everything until Sync, and so does the bookkeeping.
func (ss *session) serverError(h *item, msg []byte) error {
	var er pgproto3.ErrorResponse
	if err := er.Decode(msg[5:]); err != nil {
		return &sessionError{reason: reasonServerProtocol, err: fmt.Errorf("malformed ErrorResponse: %w", err)}
	}
	if h == nil {
		// Not an answer to a request (the server is shutting down): pass it on.
		_, err := ss.cw.Write(msg)
		return err
	}
	ss.copyOut = nil
	if h.st != nil && h.st.blocked && (h.kind == 'Q' || h.kind == 'P' || h.kind == 'F' || h.kind == 'B') {
		// The server failed refusedSQL (or is in a failed transaction and said so): tell
		// the client why the proxy refused it, with the server's position in the stream.
		er = *errorMsg("ERROR", h.st.refusal.code, h.st.refusal.message, h.st.refusal.hint)
		h.errCode, h.errMsg = er.Code, er.Message
		out, err := encode(ss.rowBuf[:0], &er)
		if err != nil {
			return err
		}
		ss.rowBuf = out
		if _, err := ss.cw.Write(out); err != nil {
			return err
		}
		return ss.afterError(h)
	}
	h.errCode, h.errMsg, h.errPos = er.Code, er.Message, er.Position
	// A failed statement is recorded with no rows, whatever reached the client before the
	// error, as capture records it.
	h.rows = 0
	if ss.redacting() {
		h.errMsg = redactText(ss.srv.policy.Masker(), er.Code, 'M', er.Message, stmtText(h))
		if err := ss.writeRedacted(msg, stmtText(h)); err != nil {
			return err
		}
	} else if _, err := ss.cw.Write(msg); err != nil {
		return err
	}
	return ss.afterError(h)
}

func (ss *session) afterError(h *item) error {
	switch h.kind {
	case 'Q':
		ss.curPlan = nil
		ss.queryFailed(h)
		return nil // ReadyForQuery follows
	case 'F':
		ss.curPlan = nil
		return nil // ReadyForQuery follows
	case 'S':
		return nil // an error while syncing (commit failed); ReadyForQuery follows
	}
	if h.kind == 'E' && h.copyIn {
		ss.dropIgnoredSyncs(true)
	}
	if h.kind == 'B' {
		ss.bound(h) // the failed Bind's parameters are the attempt's
	}
	if at := ss.attempt(h); at != nil {
		at.errCode, at.errMsg = h.errCode, h.errMsg
		ss.emit(at, time.Now())
	}
	ss.popHead()
	ss.skipping = true
	return nil
}

// attempt returns what an error in an extended-protocol batch (at h, the head) failed: the
// first Execute up to the Sync, which is what the client tried to run, or else the Parse or
// Bind that failed. It is the one event for the batch's failure, as capture records it: the
// requests the server then skips until Sync never ran and leave no event.
func (ss *session) attempt(h *item) *item {
	for i := 0; ; i++ {
		it := ss.q.peek(i)
		if it == nil || it.kind == 'S' {
			break
		}
		if it.kind == 'E' {
			return it
		}
	}
	if h.kind == 'P' || h.kind == 'B' {
		return h
	}
	return nil
}

// dropIgnoredSyncs removes the Syncs the server read while in COPY FROM STDIN mode of an
// extended-protocol Execute (the head): it ignores them, so they get no ReadyForQuery. After
// success those are all Syncs before the client's CopyDone/CopyFail; after an error, those
// the client sent before its first COPY data.
func (ss *session) dropIgnoredSyncs(failed bool) {
	for i := 1; ; {
		it := ss.q.peek(i)
		switch {
		case it == nil:
			return
		case it.kind == 'S':
			ss.q.removeAt(i)
		case it.kind == markCopyEnd && !failed:
			ss.q.removeAt(i)
			return
		case it.kind == markCopyData && !failed:
			ss.q.removeAt(i)
		default:
			return
		}
	}
}

// abandon records the statements still outstanding when the session ended: they may have
// run, and the audit trail must say so.
func (ss *session) abandon() {
	now := time.Now()
	const code, msg = "08006", "connection ended before the statement completed"
	const detail = "outcome unknown: the session ended before the server answered"
	skipping := ss.skipping
	for {
		h := ss.head()
		if h == nil {
			return
		}
		switch {
		case skipping:
			// Skipped by the server after an error: never run, and the batch's failure
			// is recorded already.
			skipping = h.kind != 'S'
		case h.kind == 'P':
			ss.parsed(h)
		case h.kind == 'B':
			// The server answers Bind only when it flushes, which a Sync or Flush asks for:
			// the Execute behind it still gets its parameters.
			ss.bound(h)
		case h.kind == 'Q':
			ss.srv.m.unanswered.Add(float64(ss.queryDone(h, code, msg, detail)))
		case h.kind == 'E' || h.kind == 'F':
			if h.errCode == "" {
				h.errCode, h.errMsg, h.rows = code, msg, 0
			}
			ss.emitAs(h, h.st, h.st.text, detail, now)
			ss.srv.m.unanswered.Inc()
		}
		ss.q.pop()
	}
}
