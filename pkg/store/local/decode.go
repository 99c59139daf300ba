package local

import (
	"encoding/json"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/vigil-db/vigil/pkg/event"
)

// Decoding is the cost of every read, and a spool consumer reads every event once more:
// json.Unmarshal's reflection costs several µs an event. decodeFast reads the one shape
// the writer produces — compact JSON, known keys in any order, no nulls, no floats —
// directly, and gives up on anything else (ok false), for json.Unmarshal to decode or to
// reject as before. Where it succeeds its result equals json.Unmarshal's (tests compare
// both on random and fuzzed lines).

// decodeLine decodes one stored line (without its newline) into an event.
func decodeLine(line []byte) (*event.Event, error) {
	e := new(event.Event)
	if decodeFast(line, e) {
		return e, nil
	}
	*e = event.Event{}
	if err := json.Unmarshal(line, e); err != nil {
		return nil, err
	}
	return e, nil
}

// dec is a cursor over one line.
type dec struct {
	b   []byte
	i   int
	bad bool // not the writer's shape: fall back
}

func (d *dec) peek() byte {
	if d.i < len(d.b) {
		return d.b[d.i]
	}
	d.bad = true
	return 0
}

func (d *dec) expect(c byte) {
	if d.peek() != c {
		d.bad = true
		return
	}
	d.i++
}

// object reads {"key":value,...}, calling field for each key (without quotes); field
// consumes the value, or returns false for a key it does not know, which gives up. Keys
// with escapes give up too. A repeated key's last value wins, as in json.Unmarshal; a
// repeated nested object, which json.Unmarshal would merge, gives up.
func (d *dec) object(field func(key []byte) bool) {
	d.expect('{')
	if d.bad {
		return
	}
	if d.peek() == '}' {
		d.i++
		return
	}
	for !d.bad {
		d.expect('"')
		start := d.i
		for d.i < len(d.b) && d.b[d.i] != '"' && d.b[d.i] != '\\' {
			d.i++
		}
		key := d.b[start:d.i]
		d.expect('"')
		d.expect(':')
		if d.bad || !field(key) {
			d.bad = true
			return
		}
		switch d.peek() {
		case ',':
			d.i++
		case '}':
			d.i++
			return
		default:
			d.bad = true
		}
	}
}

// str reads a string value. Raw control characters, invalid UTF-8 and surrogate escapes
// give up (json.Unmarshal rejects or replaces them).
func (d *dec) str() string {
	d.expect('"')
	if d.bad {
		return ""
	}
	start := d.i
	for d.i < len(d.b) {
		c := d.b[d.i]
		switch {
		case c == '"':
			s := d.b[start:d.i]
			d.i++
			if !utf8.Valid(s) {
				d.bad = true
				return ""
			}
			return string(s)
		case c == '\\':
			return d.strEscaped(start)
		case c < 0x20:
			d.bad = true
			return ""
		}
		d.i++
	}
	d.bad = true
	return ""
}

func (d *dec) strEscaped(start int) string {
	buf := append([]byte(nil), d.b[start:d.i]...)
	for d.i < len(d.b) {
		c := d.b[d.i]
		switch {
		case c == '"':
			d.i++
			if !utf8.Valid(buf) {
				d.bad = true
				return ""
			}
			return string(buf)
		case c < 0x20:
			d.bad = true
			return ""
		case c != '\\':
			buf = append(buf, c)
			d.i++
			continue
		}
		if d.i+1 >= len(d.b) {
			break
		}
		esc := d.b[d.i+1]
		d.i += 2
		switch esc {
		case '"', '\\', '/':
			buf = append(buf, esc)
		case 'b':
			buf = append(buf, '\b')
		case 'f':
			buf = append(buf, '\f')
		case 'n':
			buf = append(buf, '\n')
		case 'r':
			buf = append(buf, '\r')
		case 't':
			buf = append(buf, '\t')
		case 'u':
			if d.i+4 > len(d.b) {
				d.bad = true
				return ""
			}
			r, err := strconv.ParseUint(string(d.b[d.i:d.i+4]), 16, 16)
			if err != nil || r >= 0xD800 && r < 0xE000 {
				d.bad = true
				return ""
			}
			buf = utf8.AppendRune(buf, rune(r))
			d.i += 4
		default:
			d.bad = true
			return ""
		}
	}
	d.bad = true
	return ""
}

// strs reads an array of strings.
func (d *dec) strs() []string {
	d.expect('[')
	out := []string{}
	if d.peek() == ']' {
		d.i++
		return out
	}
	for !d.bad {
		out = append(out, d.str())
		switch d.peek() {
		case ',':
			d.i++
		case ']':
			d.i++
			return out
		default:
			d.bad = true
		}
	}
	return nil
}

// digits reads an unsigned integer in JSON's form (no leading zeros, no fraction).
func (d *dec) digits() string {
	start := d.i
	for d.i < len(d.b) && d.b[d.i] >= '0' && d.b[d.i] <= '9' {
		d.i++
	}
	n := d.b[start:d.i]
	if len(n) == 0 || len(n) > 1 && n[0] == '0' {
		d.bad = true
		return ""
	}
	if d.i < len(d.b) && (d.b[d.i] == '.' || d.b[d.i] == 'e' || d.b[d.i] == 'E') {
		d.bad = true
	}
	return string(n)
}

func (d *dec) uint(bits int) uint64 {
	n, err := strconv.ParseUint(d.digits(), 10, bits)
	if err != nil {
		d.bad = true
	}
	return n
}

func (d *dec) int(bits int) int64 {
	neg := d.peek() == '-'
	if neg {
		d.i++
	}
	s := d.digits()
	if neg {
		s = "-" + s
	}
	n, err := strconv.ParseInt(s, 10, bits)
	if err != nil {
		d.bad = true
	}
	return n
}

func (d *dec) bool() bool {
	switch {
	case d.i+4 <= len(d.b) && string(d.b[d.i:d.i+4]) == "true":
		d.i += 4
		return true
	case d.i+5 <= len(d.b) && string(d.b[d.i:d.i+5]) == "false":
		d.i += 5
		return false
	}
	d.bad = true
	return false
}

// time reads a time with time.Time's own UnmarshalJSON, as json.Unmarshal does.
func (d *dec) time() time.Time {
	start := d.i
	d.str()
	var t time.Time
	if !d.bad && t.UnmarshalJSON(d.b[start:d.i]) != nil {
		d.bad = true
	}
	return t
}

// decodeFast decodes line into e, reporting false when line is not in the writer's shape.
func decodeFast(line []byte, e *event.Event) bool {
	d := &dec{b: line}
	d.object(func(key []byte) bool {
		switch string(key) {
		case "time":
			e.Time = d.time()
		case "type":
			e.Type = event.Type(d.str())
		case "source":
			e.Source = d.str()
		case "protocol":
			e.Protocol = d.str()
		case "host":
			e.Host = d.str()
		case "agent_id":
			e.AgentID = d.str()
		case "chain_id":
			e.ChainID = d.str()
		case "seq":
			e.Seq = d.uint(64)
		case "db_user":
			e.DBUser = d.str()
		case "database":
			e.Database = d.str()
		case "application":
			e.Application = d.str()
		case "client_addr":
			e.ClientAddr = d.str()
		case "server_addr":
			e.ServerAddr = d.str()
		case "session_id":
			e.SessionID = d.str()
		case "backend_pid":
			e.BackendPID = int32(d.int(32))
		case "tls":
			e.TLS = d.bool()
		case "steered":
			e.Steered = d.bool()
		case "steered_by":
			e.SteeredBy = d.str()
		case "process":
			if e.Process != nil {
				return false
			}
			e.Process = d.process()
		case "identity":
			if e.Identity != nil {
				return false
			}
			e.Identity = d.identity()
		case "statement":
			e.Statement = d.str()
		case "statement_truncated":
			e.StatementTruncated = d.bool()
		case "params":
			e.Params = d.strs()
		case "fingerprint":
			e.Fingerprint = d.str()
		case "kind":
			e.Kind = d.str()
		case "tables":
			e.Tables = d.strs()
		case "rows":
			e.Rows = d.int(64)
		case "duration_us":
			e.DurationUS = d.int(64)
		case "error":
			e.Error = d.str()
		case "error_message":
			e.ErrorMessage = d.str()
		case "decision":
			e.Decision = d.str()
		case "rule":
			e.Rule = d.str()
		case "pii_columns":
			e.PIIColumns = d.strs()
		case "masked_columns":
			e.MaskedColumns = d.strs()
		case "approval_id":
			e.ApprovalID = d.str()
		case "lost":
			e.Lost = d.uint(64)
		case "detail":
			e.Detail = d.str()
		case "signature":
			e.Signature = d.str()
		case "key_id":
			e.KeyID = d.str()
		case "prev_hash":
			e.PrevHash = d.str()
		case "hash":
			e.Hash = d.str()
		default:
			return false
		}
		return !d.bad
	})
	return !d.bad && d.i == len(line)
}

func (d *dec) process() *event.Process {
	p := &event.Process{}
	d.object(func(key []byte) bool {
		switch string(key) {
		case "pid":
			p.PID = int32(d.int(32))
		case "uid":
			uid := int32(d.int(32))
			p.UID = &uid
		case "comm":
			p.Comm = d.str()
		case "exe":
			p.Exe = d.str()
		case "container_id":
			p.ContainerID = d.str()
		case "pod":
			p.Pod = d.str()
		case "namespace":
			p.Namespace = d.str()
		case "service_account":
			p.ServiceAccount = d.str()
		case "image":
			p.Image = d.str()
		case "cgroup":
			p.Cgroup = d.str()
		default:
			return false
		}
		return !d.bad
	})
	return p
}

func (d *dec) identity() *event.Identity {
	id := &event.Identity{}
	d.object(func(key []byte) bool {
		switch string(key) {
		case "issuer":
			id.Issuer = d.str()
		case "subject":
			id.Subject = d.str()
		case "email":
			id.Email = d.str()
		case "groups":
			id.Groups = d.strs()
		default:
			return false
		}
		return !d.bad
	})
	return id
}
