package postgres

import (
	"encoding/binary"
	"time"
)

// phase is where a direction's byte stream stands.
type phase uint8

const (
	phaseStartup   phase = iota // client: an untyped startup-family message is expected
	phaseSSLAnswer              // server: one byte answering SSLRequest/GSSENCRequest
	phaseMessages               // typed messages, in sync with their boundaries
	phaseResync                 // boundary lost: scanning for the next one
	phaseIgnore                 // encrypted, or cancelled: bytes are counted, not decoded
)

// message is one framed message handed to the session. body is only valid during the call.
type message struct {
	typ        byte   // 0 for startup-family messages
	body       []byte // the kept prefix of the body: all of it unless truncated or lost
	size       int    // full body length on the wire
	truncated  bool   // body longer than what was kept
	lost       bool   // bytes of the body were lost to a capture gap
	start, end time.Time
}

// framer splits one direction into messages. It buffers only the kept prefix of a message
// that spans feeds, and during resync at most Config.MaxBufferedMessage bytes.
type framer struct {
	fromClient bool
	phase      phase

	hdr    [5]byte // a typed message's header, when it spans feeds
	shdr   [8]byte // a startup packet's length and code
	hdrN   int
	inBody bool
	msg    message
	got    int // body bytes passed (kept, skipped or lost)
	keep   int // body bytes to keep
	buf    []byte

	rbuf      []byte    // resync: bytes not yet known to be outside a message
	rsegs     []heldSeg // when each part of rbuf was captured
	scanned   int       // rbuf offsets below this have been judged
	undecided []int     // offsets judged "need more bytes", in order
	lostSync  bool      // resync was entered by losing bytes (a gap or a bad header)
	pairingOK bool      // the request/response pairing already accounts for this loss
	hdrHold   mark      // when the header being read began to arrive
}

// keepLimit is how much of a body the decoder needs: statement text up to the configured
// limit, small control messages whole, and nothing of result rows, copy data or
// authentication exchanges (which are never stored).
func (s *Session) keepLimit(fromClient bool, typ byte, size int) int {
	var k int
	if fromClient {
		switch typ {
		case 'Q':
			k = s.cfg.MaxStatementBytes + 1
		case 'P':
			k = s.cfg.MaxStatementBytes + 1024 // statement name, NUL, parameter type count
		case 'd', 'p':
			k = 0
		default:
			k = s.cfg.MaxBufferedMessage
		}
	} else {
		switch typ {
		case 'C', 'E', 'S', 'K', 'Z':
			k = s.cfg.MaxBufferedMessage
		case 't':
			if s.cfg.RecordParams {
				k = s.cfg.MaxBufferedMessage // parameter types, to render binary parameters
			}
		case 0:
			k = size
		default:
			k = 0 // rows, descriptions, notices, copy data, authentication
		}
	}
	if fromClient && typ == 0 {
		k = size // startup packets are at most maxStartupLength
	}
	return min(k, size)
}

// feed runs a direction's bytes through the framer.
func (s *Session) feed(f *framer, data []byte, ts time.Time) {
	for len(data) > 0 {
		switch f.phase {
		case phaseIgnore:
			s.stats.IgnoredBytes += uint64(len(data))
			return
		case phaseSSLAnswer:
			if s.sslAnswer(data[0]) {
				data = data[1:]
			}
		case phaseStartup:
			data = s.startupBytes(f, data, ts)
		case phaseMessages:
			data = s.messageBytes(f, data, ts)
		case phaseResync:
			s.resyncBytes(f, data, ts)
			return
		}
	}
}

func (s *Session) startupBytes(f *framer, data []byte, ts time.Time) []byte {
	if f.inBody {
		return s.bodyBytes(f, data, ts)
	}
	if f.hdrN == 0 {
		switch {
		case len(data) >= 3 && data[0] == tlsHandshake && data[1] == 3 && data[2] <= 4:
			// A TLS handshake record (PostgreSQL 17 sslnegotiation=direct): no SSLRequest
			// at all. The version bytes keep a mid-stream 0x16 from passing for one.
			s.encrypt()
			return data
		case data[0] != 0:
			// A startup packet's length starts with a zero byte; anything else means we
			// joined the connection after its startup. Find the next message boundary.
			f.phase = phaseResync
			return data
		}
		f.msg.start = ts
		f.hdrHold = s.mark(f)
	}
	n := copy(f.shdr[f.hdrN:], data)
	f.hdrN += n
	data = data[n:]
	if f.hdrN < len(f.shdr) {
		return data
	}
	f.hdrN = 0
	length, code := binary.BigEndian.Uint32(f.shdr[:4]), binary.BigEndian.Uint32(f.shdr[4:])
	if !plausibleStartup(length, code) {
		s.stats.DecodeErrors++
		// Not a startup packet after all: rescan what followed its first byte.
		rest := append([]byte(nil), f.shdr[1:]...)
		s.loseSync(f, 1)
		s.hold(f, rest, f.hdrHold)
		s.scan(f, ts)
		return data
	}
	s.begin(f, 0, int(length)-4, f.msg.start)
	f.buf = append(f.buf, f.shdr[4:]...)
	f.got = 4
	if f.got == f.msg.size {
		s.finish(f, ts)
		return data
	}
	return s.bodyBytes(f, data, ts)
}

// plausibleStartup checks a startup-family header: length and request code.
func plausibleStartup(length, code uint32) bool {
	switch {
	case code == codeSSL || code == codeGSSEnc:
		return length == 8
	case code == codeCancel:
		return length >= 16 && length <= 16+256
	case code>>16 == 3: // protocol 3.x
		return length > 8 && length <= maxStartupLength
	}
	return false
}

func (s *Session) messageBytes(f *framer, data []byte, ts time.Time) []byte {
	if f.inBody {
		return s.bodyBytes(f, data, ts)
	}
	if f.hdrN == 0 && len(data) >= 5 {
		// Fast path: the header is whole in data, and usually the body too.
		typ, length := data[0], binary.BigEndian.Uint32(data[1:5])
		if !plausibleHeader(f.fromClient, typ, length) {
			s.stats.DecodeErrors++
			s.loseSync(f, 1)
			return data[1:]
		}
		size := int(length) - 4
		if len(data)-5 >= size {
			keep := s.keepLimit(f.fromClient, typ, size)
			s.dispatch(f, message{typ: typ, body: data[5 : 5+keep], size: size, truncated: keep < size, start: ts, end: ts})
			return data[5+size:]
		}
		s.begin(f, typ, size, ts)
		return s.bodyBytes(f, data[5:], ts)
	}
	if f.hdrN == 0 {
		f.msg.start = ts
		f.hdrHold = s.mark(f)
	}
	n := copy(f.hdr[f.hdrN:], data)
	f.hdrN += n
	data = data[n:]
	if f.hdrN < 5 {
		return data
	}
	f.hdrN = 0
	typ, length := f.hdr[0], binary.BigEndian.Uint32(f.hdr[1:5])
	if !plausibleHeader(f.fromClient, typ, length) {
		s.stats.DecodeErrors++
		// The four bytes after the bad type byte may hold the real boundary: rescan them.
		rest := append([]byte(nil), f.hdr[1:5]...)
		s.loseSync(f, 1)
		s.hold(f, rest, f.hdrHold)
		s.scan(f, ts)
		return data
	}
	s.begin(f, typ, int(length)-4, f.msg.start)
	return s.bodyBytes(f, data, ts)
}

func (s *Session) begin(f *framer, typ byte, size int, start time.Time) {
	f.inBody = true
	f.msg = message{typ: typ, size: size, start: start}
	f.got = 0
	f.keep = s.keepLimit(f.fromClient, typ, size)
	f.buf = f.buf[:0]
}

func (s *Session) bodyBytes(f *framer, data []byte, ts time.Time) []byte {
	take := min(len(data), f.msg.size-f.got)
	if f.got < f.keep {
		f.buf = append(f.buf, data[:min(take, f.keep-f.got)]...)
	}
	f.got += take
	data = data[take:]
	if f.got == f.msg.size {
		s.finish(f, ts)
	}
	return data
}

// finish hands the message being assembled to the session.
func (s *Session) finish(f *framer, ts time.Time) {
	f.inBody = false
	m := f.msg
	m.body = f.buf
	m.truncated = len(f.buf) < m.size
	m.end = ts
	s.dispatch(f, m)
	if cap(f.buf) > 4*s.cfg.MaxBufferedMessage {
		f.buf = nil // one huge statement should not pin its buffer for the session's life
	}
}

func (s *Session) dispatch(f *framer, m message) {
	s.stats.Messages++
	if f.fromClient {
		if m.typ == 0 {
			s.startupMessage(m)
		} else {
			s.clientMessage(m)
		}
	} else {
		s.serverMessage(m)
	}
}

// gap accounts for n bytes of a direction that capture lost.
func (s *Session) gap(f *framer, n int, ts time.Time) {
	s.stats.SkippedBytes += uint64(n)
	switch f.phase {
	case phaseIgnore:
		return
	case phaseResync:
		// What was waiting for confirmation is no longer contiguous with what follows.
		s.stats.SkippedBytes += uint64(len(f.rbuf))
		f.resetHeld()
		return
	}
	if f.inBody {
		// The gap starts inside a message whose length we know: skip within it and stay in
		// sync if it ends there too. Only the body's prefix before the hole is kept.
		f.keep = min(f.keep, f.got)
		f.msg.lost = true
		rem := f.msg.size - f.got
		if n < rem {
			f.got += n
			return
		}
		f.got = f.msg.size
		s.finish(f, ts)
		if n == rem {
			return
		}
	}
	f.hdrN = 0
	s.loseSync(f, 0)
}

// loseSync puts a direction into resync after skipping n bytes already counted as read,
// and tells the pairing logic that messages may have been lost.
func (s *Session) loseSync(f *framer, skipped int) {
	s.stats.SkippedBytes += uint64(skipped)
	f.phase = phaseResync
	f.inBody = false
	f.hdrN = 0
	f.resetHeld()
	f.lostSync = true
	f.pairingOK = true
	s.messagesLost(f.fromClient, s.pushed)
}

type verdict uint8

const (
	verdictNo verdict = iota
	verdictYes
	verdictMore
)

// candidate judges whether b starts a message: a type byte this direction sends, a length
// within the server's own limits, a well-formed body, and a plausible header right after
// it (or, with nothing after it yet, a body whose form is distinctive on its own).
func (s *Session) candidate(fromClient bool, b []byte) verdict {
	if _, _, ok := lengthBounds(fromClient, b[0]); !ok {
		return verdictNo
	}
	if len(b) < 5 {
		return verdictMore
	}
	length := binary.BigEndian.Uint32(b[1:5])
	if !plausibleHeader(fromClient, b[0], length) || int64(length) >= int64(s.cfg.MaxBufferedMessage) {
		return verdictNo
	}
	end := 1 + int(length)
	if len(b) < end {
		return verdictMore
	}
	valid, strong := strongBody(fromClient, b[0], b[5:end])
	if !valid {
		return verdictNo
	}
	next := b[end:]
	if len(next) == 0 {
		if strong {
			return verdictYes
		}
		return verdictMore
	}
	if _, _, ok := lengthBounds(fromClient, next[0]); !ok {
		return verdictNo
	}
	if len(next) < 5 {
		if strong {
			return verdictYes
		}
		return verdictMore
	}
	if plausibleHeader(fromClient, next[0], binary.BigEndian.Uint32(next[1:5])) {
		return verdictYes
	}
	return verdictNo
}

// mark records how far the other direction had got when a direction began holding bytes.
type mark struct {
	pushed      uint64 // requests queued
	serverFeeds uint64 // server feeds
}

func (s *Session) mark(f *framer) mark { return mark{s.pushed, s.serverFeeds} }

// movedSince reports whether the other direction made progress after m: then messages
// decoded from bytes held since m were overtaken (a request already answered, a response
// to an earlier request).
func (s *Session) movedSince(f *framer, m mark) bool {
	if f.fromClient {
		return s.serverFeeds != m.serverFeeds
	}
	return s.pushed != m.pushed
}

// heldSeg says from which offset of rbuf the bytes were captured at mark m.
type heldSeg struct {
	off int
	m   mark
}

// hold keeps bytes for resync, remembering when they were captured.
func (s *Session) hold(f *framer, data []byte, m mark) {
	if len(data) == 0 {
		return
	}
	if n := len(f.rsegs); n == 0 || f.rsegs[n-1].m != m {
		f.rsegs = append(f.rsegs, heldSeg{len(f.rbuf), m})
	}
	f.rbuf = append(f.rbuf, data...)
}

// resetHeld forgets all held bytes.
func (f *framer) resetHeld() {
	f.rbuf, f.rsegs = f.rbuf[:0], f.rsegs[:0]
	f.scanned, f.undecided = 0, f.undecided[:0]
}

// dropHeld forgets the first n held bytes.
func (f *framer) dropHeld(n int) {
	f.scanned = max(0, f.scanned-n)
	u := f.undecided[:0]
	for _, i := range f.undecided {
		if i >= n {
			u = append(u, i-n)
		}
	}
	f.undecided = u
	f.rbuf = append(f.rbuf[:0], f.rbuf[n:]...)
	k := 0
	for k+1 < len(f.rsegs) && f.rsegs[k+1].off <= n {
		k++
	}
	f.rsegs = append(f.rsegs[:0], f.rsegs[k:]...)
	for j := range f.rsegs {
		f.rsegs[j].off = max(0, f.rsegs[j].off-n)
	}
	if len(f.rbuf) == 0 {
		f.rsegs = f.rsegs[:0]
	}
}

// resyncBytes looks for the next message boundary in what arrived since sync was lost.
func (s *Session) resyncBytes(f *framer, data []byte, ts time.Time) {
	m := s.mark(f)
	if s.replaying {
		m = s.replayMark // these bytes were captured then, not now
	}
	s.hold(f, data, m)
	s.scan(f, ts)
}

// maxUndecided bounds the candidates kept waiting for bytes to judge them.
const maxUndecided = 64

// scan looks for a confirmed boundary in the held bytes and, once found, decodes from it.
// A candidate that needs more bytes to be judged does not stop the scan: a confirmed
// boundary after it wins (the undecided one would have had to contain it), else the held
// bytes are kept from the first undecided candidate on. A rejected position stays rejected
// whatever follows, so each byte is judged once, plus the few undecided ones again.
func (s *Session) scan(f *framer, ts time.Time) {
	buf := f.rbuf
	keep := f.undecided[:0]
	for _, i := range f.undecided {
		switch s.candidate(f.fromClient, buf[i:]) {
		case verdictYes:
			s.resynced(f, i, ts)
			return
		case verdictMore:
			if len(buf)-i <= s.cfg.MaxBufferedMessage {
				keep = append(keep, i)
			}
		}
	}
	f.undecided = keep
	for i := f.scanned; i < len(buf); i++ {
		switch s.candidate(f.fromClient, buf[i:]) {
		case verdictYes:
			s.resynced(f, i, ts)
			return
		case verdictMore:
			if len(buf)-i <= s.cfg.MaxBufferedMessage && len(f.undecided) < maxUndecided {
				f.undecided = append(f.undecided, i)
			}
		}
	}
	f.scanned = len(buf)
	first := len(buf)
	if len(f.undecided) > 0 {
		first = f.undecided[0]
	}
	s.skipResync(f, first)
	f.dropHeld(first)
}

// resynced decodes from held offset i, a confirmed message boundary.
func (s *Session) resynced(f *framer, i int, ts time.Time) {
	s.skipResync(f, i)
	f.dropHeld(i)
	held, segs := f.rbuf, f.rsegs
	f.resetHeld()
	f.rbuf, f.rsegs = nil, nil
	f.phase = phaseMessages
	s.stats.Resyncs++
	f.lostSync, f.pairingOK = false, false
	s.replay(f, held, segs, ts)
}

// replay decodes held bytes part by part, each as of when it was captured: a request the
// server has answered since is not paired as if it were new, and a response is only paired
// with requests sent before it was captured.
func (s *Session) replay(f *framer, buf []byte, segs []heldSeg, ts time.Time) {
	for k, seg := range segs {
		end := len(buf)
		if k+1 < len(segs) {
			end = segs[k+1].off
		}
		data := buf[seg.off:end]
		if f.phase == phaseResync {
			s.hold(f, data, seg.m) // lost sync again: keep holding, with the capture marks
			continue
		}
		wasReplaying, wasLate, wasMark := s.replaying, s.late, s.replayMark
		s.replaying, s.replayMark, s.late = true, seg.m, s.movedSince(f, seg.m)
		s.feed(f, data, ts)
		s.replaying, s.late, s.replayMark = wasReplaying, wasLate, wasMark
	}
	if f.phase == phaseResync && len(f.rbuf) > 0 {
		s.scan(f, ts)
	}
}

// skipResync counts n bytes scanned over; the first ones lost tell the pairing logic.
func (s *Session) skipResync(f *framer, n int) {
	if n == 0 {
		return
	}
	s.stats.SkippedBytes += uint64(n)
	f.lostSync = true
	if !f.pairingOK {
		f.pairingOK = true
		m := s.mark(f)
		if len(f.rsegs) > 0 {
			m = f.rsegs[0].m
		}
		s.messagesLost(f.fromClient, m.pushed)
	}
}
