package enforce

import (
	"bytes"
	"strings"

	"github.com/vigil-db/vigil/pkg/mask"
)

// Errors and notices can echo values ("invalid input syntax for type integer: "x"",
// "Key (email)=(...) already exists", "Failing row contains (...)", "relation "bob@corp" does
// not exist" for email::regclass). For a session whose results are masked, their text
// fields (message, detail, hint, context, internal query) are redacted before they leave:
// everything the detectors recognize; every quoted text the statement itself does not
// contain (what the user wrote is no secret to them; anything else may come from a row);
// for the error classes that quote data (22 data exception, 23 integrity constraint
// violation, P0 raised by functions) all quoted and parenthesized values; and the DETAIL and
// CONTEXT of 22 and 23 errors, which exist to show the offending value, are replaced whole.

func (ss *session) redacting() bool { return ss.masking.Load() }

// redactedField replaces the DETAIL and CONTEXT of errors that echo data.
const redactedField = "(redacted by the Vigil proxy: it may quote row values)"

// writeRedacted writes an ErrorResponse or NoticeResponse with its text fields redacted;
// sql is the statement it answers ("" if none).
func (ss *session) writeRedacted(msg []byte, sql string) error {
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
			r := redactText(ss.srv.policy.Masker(), code, f, string(v), sql)
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

// redactText redacts one text field (M, D, H, W, q) of an error of SQLSTATE code answering
// the statement sql.
func redactText(m *mask.Masker, code string, field byte, s, sql string) string {
	if s == "" {
		return s
	}
	class := ""
	if len(code) >= 2 {
		class = code[:2]
	}
	if (field == 'D' || field == 'W') && (class == "22" || class == "23") {
		return redactedField
	}
	b := []byte(s)
	if out, ok := maskEmbedded(m, mask.Strategy{Kind: mask.Full}, b); ok && out != nil {
		b = out
	}
	if field == 'D' || class == "22" || class == "23" || class == "P0" {
		// A detail quotes data whenever it quotes anything.
		return string(redactQuoted(b))
	}
	return string(redactForeignQuotes(b, strings.ToLower(sql)))
}

// redactForeignQuotes replaces the contents of "..." that sql (lower case) does not
// contain: an identifier the user wrote is echoed back; a value read from a row is not.
func redactForeignQuotes(b []byte, sql string) []byte {
	var out bytes.Buffer
	for i := 0; i < len(b); i++ {
		if b[i] != '"' {
			out.WriteByte(b[i])
			continue
		}
		j := bytes.IndexByte(b[i+1:], '"')
		if j < 0 {
			out.WriteByte('"')
			out.WriteString(mask.Placeholder)
			break
		}
		q := b[i+1 : i+1+j]
		out.WriteByte('"')
		if len(q) > 0 && string(q) != mask.Placeholder && !strings.Contains(sql, strings.ToLower(string(q))) {
			out.WriteString(mask.Placeholder)
		} else {
			out.Write(q)
		}
		out.WriteByte('"')
		i += j + 1
	}
	return out.Bytes()
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

// stmtText is the text of the statement h answers, "" when there is none.
func stmtText(h *item) string {
	if h == nil || h.st == nil {
		return ""
	}
	return h.st.text
}
