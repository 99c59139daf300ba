package enforce

import (
	"bytes"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/vigil-db/vigil/pkg/mask"
)

// Errors and notices can echo values ("invalid input syntax for type integer: "x"",
// "Key (email)=(...) already exists", "Failing row contains (...)"). For a session whose
// results are masked, their text fields are redacted before they leave: everything the
// detectors recognize, and for the error classes that quote data (22 data exception,
// 23 integrity constraint violation, P0 raised by functions) and in every DETAIL, all quoted
// and parenthesized values.

func (ss *session) redacting() bool { return ss.masking.Load() }

// writeRedacted writes an ErrorResponse or NoticeResponse with its text fields redacted.
func (ss *session) writeRedacted(msg []byte, _ *pgproto3.ErrorResponse) error {
	body := msg[5:]
	code := ""
	for p := body; len(p) > 1; {
		f := p[0]
		v, rest, ok := cstring(p[1:])
		if !ok {
			break
		}
		if f == 'C' {
			code = string(v)
		}
		p = rest
	}
	out, sp := beginMsg(ss.rowBuf[:0], msg[0])
	changed := false
	for p := body; len(p) > 0; {
		f := p[0]
		if f == 0 {
			break
		}
		v, rest, ok := cstring(p[1:])
		if !ok {
			return &sessionError{reason: reasonServerProtocol, err: errMalformedNotice}
		}
		p = rest
		switch f {
		case 'M', 'D', 'H', 'W', 'q':
			c := code
			if f == 'D' {
				c = "23" // details always quote data when they quote anything
			}
			r := redactText(ss.srv.policy.Masker(), c, string(v))
			if r != string(v) {
				changed = true
			}
			out = append(out, f)
			out = append(append(out, r...), 0)
		default:
			out = append(out, f)
			out = append(append(out, v...), 0)
		}
	}
	out = append(out, 0)
	ss.rowBuf = finishMsg(out, sp)
	if changed {
		ss.srv.m.redactedErrors.Inc()
	}
	_, err := ss.cw.Write(ss.rowBuf)
	return err
}

var errMalformedNotice = protoErr("malformed error or notice fields")

// redactText redacts one message text for an error of SQLSTATE code.
func redactText(m *mask.Masker, code, s string) string {
	b := []byte(s)
	if out, ok := maskEmbedded(m, mask.Strategy{Kind: mask.Full}, b); ok && out != nil {
		b = out
	}
	if len(code) >= 2 && (code[:2] == "22" || code[:2] == "23" || code[:2] == "P0") {
		b = redactQuoted(b)
	}
	return string(b)
}

// redactQuoted replaces the contents of "..." and (...) with the placeholder.
func redactQuoted(b []byte) []byte {
	var out bytes.Buffer
	for i := 0; i < len(b); i++ {
		c := b[i]
		var end byte
		switch c {
		case '"':
			end = '"'
		case '(':
			end = ')'
		default:
			out.WriteByte(c)
			continue
		}
		j := bytes.LastIndexByte(b[i+1:], end)
		if end == '"' {
			j = bytes.IndexByte(b[i+1:], end)
		}
		if j < 0 {
			out.WriteByte(c)
			out.WriteString(mask.Placeholder)
			break
		}
		out.WriteByte(c)
		out.WriteString(mask.Placeholder)
		out.WriteByte(end)
		i += j + 1
	}
	return out.Bytes()
}
