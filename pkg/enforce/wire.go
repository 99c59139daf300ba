package enforce

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/jackc/pgx/v5/pgproto3"
)

// bufSize is the size of every bufio buffer on both sides of a session. Messages that fit are
// inspected in place (no copy); a batch of small messages is read with one syscall and written
// with one.
const bufSize = 64 << 10

// errProtocol marks input that is not valid PostgreSQL protocol. The session that received it is
// closed; nothing else is affected.
var errProtocol = errors.New("protocol violation")

// errTooLarge marks a message over the proxy's size limit (a protocol violation answered with
// 54000 program_limit_exceeded rather than 08P01).
var errTooLarge = errors.New("message over the size limit")

// truncated says why a read stopped: a connection that ends inside a message is a protocol
// violation (the peer is told, and the session is counted), one that ends between messages a
// hangup.
func truncated(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("%w: the connection ended in the middle of a message", errProtocol)
	}
	return err
}

func protoErr(format string, a ...any) error {
	return fmt.Errorf("%w: %s", errProtocol, fmt.Sprintf(format, a...))
}

// msgReader frames a stream of typed PostgreSQL messages (type byte, int32 length including
// itself, body). A message that fits in the bufio buffer is returned as a slice of that buffer,
// valid until the next call; a larger one is either read whole into a reusable buffer (when it
// has to be inspected, bounded by max) or streamed through without being held.
type msgReader struct {
	r       *bufio.Reader
	max     int // largest message that is read whole
	big     []byte
	pending int // bytes of the current message still to discard from r
}

func newMsgReader(r io.Reader, max int) *msgReader {
	return &msgReader{r: bufio.NewReaderSize(r, bufSize), max: max}
}

// next returns the next message's type and total length (header included). When the whole
// message is already buffered, or fits in the buffer, msg holds it; otherwise msg is nil and the
// caller must call readWhole or streamTo before the next call to next.
func (m *msgReader) next() (typ byte, total int, msg []byte, err error) {
	if m.pending > 0 {
		if _, err := m.r.Discard(m.pending); err != nil {
			return 0, 0, nil, err
		}
		m.pending = 0
	}
	if cap(m.big) > 1<<20 {
		m.big = nil // do not keep a huge buffer for the rest of a long session
	}
	hdr, err := m.r.Peek(5)
	if err != nil {
		if m.r.Buffered() > 0 {
			err = truncated(err)
		}
		return 0, 0, nil, err
	}
	typ = hdr[0]
	n := int(binary.BigEndian.Uint32(hdr[1:5]))
	if n < 4 || n > 1<<30 {
		return 0, 0, nil, protoErr("message %q with invalid length %d", typ, n)
	}
	total = n + 1
	if total > m.r.Size() {
		return typ, total, nil, nil
	}
	msg, err = m.r.Peek(total)
	if err != nil {
		return 0, 0, nil, truncated(err)
	}
	m.pending = total
	return typ, total, msg, nil
}

// readWhole reads a message that did not fit in the buffer into m.big.
func (m *msgReader) readWhole(total int) ([]byte, error) {
	if total > m.max {
		return nil, fmt.Errorf("%w: %w: a message of %d bytes exceeds the proxy's limit of %d bytes (max_message_size)",
			errProtocol, errTooLarge, total, m.max)
	}
	if cap(m.big) < total {
		m.big = make([]byte, total)
	}
	b := m.big[:total]
	if _, err := io.ReadFull(m.r, b); err != nil {
		return nil, truncated(err)
	}
	return b, nil
}

// detach hands the buffer readWhole returned to the caller, which may keep it (as a
// statement's text): the next large message gets a buffer of its own. A large statement is
// thus held once, not copied.
func (m *msgReader) detach() { m.big = nil }

// streamTo copies a message that did not fit in the buffer to w without holding it.
func (m *msgReader) streamTo(w *bufio.Writer, total int) error {
	if _, err := io.CopyN(w, m.r, int64(total)); err != nil {
		return truncated(err)
	}
	return nil
}

// nextComplete reports whether the next message is already complete in the buffer, so that the
// writer need not be flushed yet: data that follows is on its way through this same loop.
func (m *msgReader) nextComplete() bool {
	b := m.r.Buffered()
	if b-m.pending < 5 {
		return false
	}
	hdr, _ := m.r.Peek(m.pending + 5)
	n := int(binary.BigEndian.Uint32(hdr[m.pending+1:]))
	return b-m.pending >= n+1
}

// cstring splits a NUL-terminated string off b.
func cstring(b []byte) (s []byte, rest []byte, ok bool) {
	i := bytes.IndexByte(b, 0)
	if i < 0 {
		return nil, nil, false
	}
	return b[:i], b[i+1:], true
}

// appendMsg appends a message of type typ whose body is produced by fill.
func beginMsg(dst []byte, typ byte) ([]byte, int) {
	sp := len(dst)
	dst = append(dst, typ, 0, 0, 0, 0)
	return dst, sp
}

func finishMsg(dst []byte, sp int) []byte {
	binary.BigEndian.PutUint32(dst[sp+1:], uint32(len(dst)-sp-1))
	return dst
}

// encode appends a pgproto3 message; the proxy only encodes messages it built itself, so an
// error is a bug in the proxy and is returned as such.
func encode(dst []byte, m interface {
	Encode([]byte) ([]byte, error)
}) ([]byte, error) {
	out, err := m.Encode(dst)
	if err != nil {
		return dst, fmt.Errorf("encoding %T: %w", m, err)
	}
	return out, nil
}

// errorMsg builds an ErrorResponse with the fields clients show.
func errorMsg(severity, code, message, hint string) *pgproto3.ErrorResponse {
	return &pgproto3.ErrorResponse{Severity: severity, SeverityUnlocalized: severity, Code: code, Message: message, Hint: hint}
}
