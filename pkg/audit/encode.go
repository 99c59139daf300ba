package audit

import (
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/vigil-db/vigil/pkg/event"
)

// The writer encodes every event once, and encoding/json's reflection is most of the
// cost of a sealed event (BenchmarkEncode: ~3µs against ~0.6µs). appendCanonical writes the
// same bytes as e.Canonical() — field order, omitempty, string escaping, RFC 3339 times
// in UTC — directly. The hash chain depends on the two agreeing byte for byte, so the
// encoder is used only while the event types are exactly the ones it was written for
// (fastEncoderFits, checked once by reflection); otherwise the trail falls back to
// e.Canonical(), slower but always right. Tests compare both on random and fuzzed events.

// appendCanonical appends e.Canonical() to b.
func appendCanonical(b []byte, e *event.Event) ([]byte, error) {
	b = append(b, `{"time":`...)
	var err error
	if b, err = appendTime(b, e.Time); err != nil {
		return nil, err
	}
	b = append(b, `,"type":`...)
	b = appendString(b, string(e.Type))
	b = optString(b, `,"source":`, e.Source)
	b = optString(b, `,"protocol":`, e.Protocol)
	b = optString(b, `,"host":`, e.Host)
	b = optString(b, `,"agent_id":`, e.AgentID)
	b = optString(b, `,"chain_id":`, e.ChainID)
	b = append(b, `,"seq":`...)
	b = strconv.AppendUint(b, e.Seq, 10)
	b = optString(b, `,"db_user":`, e.DBUser)
	b = optString(b, `,"database":`, e.Database)
	b = optString(b, `,"application":`, e.Application)
	b = optString(b, `,"client_addr":`, e.ClientAddr)
	b = optString(b, `,"server_addr":`, e.ServerAddr)
	b = optString(b, `,"session_id":`, e.SessionID)
	b = optInt(b, `,"backend_pid":`, int64(e.BackendPID))
	if e.TLS {
		b = append(b, `,"tls":true`...)
	}
	if e.Steered {
		b = append(b, `,"steered":true`...)
	}
	b = optString(b, `,"steered_by":`, e.SteeredBy)
	if p := e.Process; p != nil {
		b = append(b, `,"process":{`...)
		n := len(b)
		b = optInt(b, `,"pid":`, int64(p.PID))
		if p.UID != nil {
			b = append(b, `,"uid":`...)
			b = strconv.AppendInt(b, int64(*p.UID), 10)
		}
		b = optString(b, `,"comm":`, p.Comm)
		b = optString(b, `,"exe":`, p.Exe)
		b = optString(b, `,"container_id":`, p.ContainerID)
		b = optString(b, `,"pod":`, p.Pod)
		b = optString(b, `,"namespace":`, p.Namespace)
		b = optString(b, `,"service_account":`, p.ServiceAccount)
		b = optString(b, `,"image":`, p.Image)
		b = optString(b, `,"cgroup":`, p.Cgroup)
		b = closeObject(b, n)
	}
	if id := e.Identity; id != nil {
		b = append(b, `,"identity":{`...)
		n := len(b)
		b = optString(b, `,"issuer":`, id.Issuer)
		b = optString(b, `,"subject":`, id.Subject)
		b = optString(b, `,"email":`, id.Email)
		b = optStrings(b, `,"groups":`, id.Groups)
		b = closeObject(b, n)
	}
	b = optString(b, `,"statement":`, e.Statement)
	if e.StatementTruncated {
		b = append(b, `,"statement_truncated":true`...)
	}
	b = optStrings(b, `,"params":`, e.Params)
	b = optString(b, `,"fingerprint":`, e.Fingerprint)
	b = optString(b, `,"kind":`, e.Kind)
	b = optStrings(b, `,"tables":`, e.Tables)
	b = append(b, `,"rows":`...)
	b = strconv.AppendInt(b, e.Rows, 10)
	b = append(b, `,"duration_us":`...)
	b = strconv.AppendInt(b, e.DurationUS, 10)
	b = optString(b, `,"error":`, e.Error)
	b = optString(b, `,"error_message":`, e.ErrorMessage)
	b = optString(b, `,"decision":`, e.Decision)
	b = optString(b, `,"rule":`, e.Rule)
	b = optStrings(b, `,"pii_columns":`, e.PIIColumns)
	b = optStrings(b, `,"masked_columns":`, e.MaskedColumns)
	b = optString(b, `,"approval_id":`, e.ApprovalID)
	if e.Lost != 0 {
		b = append(b, `,"lost":`...)
		b = strconv.AppendUint(b, e.Lost, 10)
	}
	b = optString(b, `,"detail":`, e.Detail)
	b = optString(b, `,"signature":`, e.Signature)
	b = optString(b, `,"key_id":`, e.KeyID)
	b = optString(b, `,"prev_hash":`, e.PrevHash)
	return append(b, '}'), nil
}

// closeObject ends a nested object whose fields were written from b[n:], each with a
// leading comma: the first comma goes.
func closeObject(b []byte, n int) []byte {
	if len(b) > n {
		copy(b[n:], b[n+1:])
		b = b[:len(b)-1]
	}
	return append(b, '}')
}

func optString(b []byte, key, s string) []byte {
	if s == "" {
		return b
	}
	return appendString(append(b, key...), s)
}

func optInt(b []byte, key string, n int64) []byte {
	if n == 0 {
		return b
	}
	return strconv.AppendInt(append(b, key...), n, 10)
}

func optStrings(b []byte, key string, ss []string) []byte {
	if len(ss) == 0 {
		return b
	}
	b = append(append(b, key...), '[')
	for i, s := range ss {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendString(b, s)
	}
	return append(b, ']')
}

// appendTime is time.Time's MarshalJSON for the UTC time Event.MarshalJSON pins.
func appendTime(b []byte, t time.Time) ([]byte, error) {
	t = t.UTC()
	if y := t.Year(); y < 0 || y > 9999 {
		return nil, errors.New("Time.MarshalJSON: year outside of range [0,9999]")
	}
	b = append(b, '"')
	b = t.AppendFormat(b, time.RFC3339Nano)
	return append(b, '"'), nil
}

const hexDigits = "0123456789abcdef"

// plainASCII marks the ASCII bytes appendString copies as they are; one lookup per byte
// instead of six comparisons (statement text is most of an event's bytes).
var plainASCII = func() (t [utf8.RuneSelf]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		t[c] = c != '"' && c != '\\' && c != '<' && c != '>' && c != '&'
	}
	return t
}()

// appendString is encoding/json's string encoding with HTML escaping, as json.Marshal
// does it: <, >, & and control characters as \u00XX (but \b \f \n \r \t), invalid UTF-8
// as \ufffd, U+2028 and U+2029 escaped.
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		if c := s[i]; c < utf8.RuneSelf {
			if plainASCII[c] {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '\\', '"':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// encoderSchema is what appendCanonical was written for: every field of the event types,
// with its Go type and JSON tag. Any change to pkg/event shows here.
var encoderSchema = map[reflect.Type][]string{
	reflect.TypeFor[event.Event](): {
		"Time time.Time time", "Type event.Type type", "Source string source,omitempty",
		"Protocol string protocol,omitempty", "Host string host,omitempty",
		"AgentID string agent_id,omitempty", "ChainID string chain_id,omitempty", "Seq uint64 seq",
		"DBUser string db_user,omitempty", "Database string database,omitempty",
		"Application string application,omitempty", "ClientAddr string client_addr,omitempty",
		"ServerAddr string server_addr,omitempty", "SessionID string session_id,omitempty",
		"BackendPID int32 backend_pid,omitempty", "TLS bool tls,omitempty",
		"Steered bool steered,omitempty", "SteeredBy string steered_by,omitempty",
		"Process *event.Process process,omitempty", "Identity *event.Identity identity,omitempty",
		"Statement string statement,omitempty", "StatementTruncated bool statement_truncated,omitempty",
		"Params []string params,omitempty", "Fingerprint string fingerprint,omitempty",
		"Kind string kind,omitempty", "Tables []string tables,omitempty",
		"Rows int64 rows", "DurationUS int64 duration_us",
		"Error string error,omitempty", "ErrorMessage string error_message,omitempty",
		"Decision string decision,omitempty", "Rule string rule,omitempty",
		"PIIColumns []string pii_columns,omitempty", "MaskedColumns []string masked_columns,omitempty",
		"ApprovalID string approval_id,omitempty", "Lost uint64 lost,omitempty",
		"Detail string detail,omitempty", "Signature string signature,omitempty",
		"KeyID string key_id,omitempty", "PrevHash string prev_hash,omitempty",
		"Hash string hash,omitempty", "NoCredentials bool -",
	},
	reflect.TypeFor[event.Process](): {
		"PID int32 pid,omitempty", "UID *int32 uid,omitempty", "Comm string comm,omitempty",
		"Exe string exe,omitempty", "ContainerID string container_id,omitempty",
		"Pod string pod,omitempty", "Namespace string namespace,omitempty",
		"ServiceAccount string service_account,omitempty", "Image string image,omitempty",
		"Labels map[string]string -", "Cgroup string cgroup,omitempty",
	},
	reflect.TypeFor[event.Identity](): {
		"Issuer string issuer,omitempty", "Subject string subject,omitempty",
		"Email string email,omitempty", "Groups []string groups,omitempty",
	},
}

// fastEncoderFits reports whether the event types are still exactly encoderSchema, and if
// not, the first difference.
func fastEncoderFits() error {
	for typ, want := range encoderSchema {
		var got []string
		for i := range typ.NumField() {
			f := typ.Field(i)
			got = append(got, fmt.Sprintf("%s %s %s", f.Name, f.Type, f.Tag.Get("json")))
		}
		for i := range max(len(got), len(want)) {
			if i >= len(got) || i >= len(want) || got[i] != want[i] {
				g, w := "(none)", "(none)"
				if i < len(got) {
					g = got[i]
				}
				if i < len(want) {
					w = want[i]
				}
				return fmt.Errorf("%s field %d is %q, the encoder knows %q", typ, i, g, w)
			}
		}
	}
	// Event's own MarshalJSON is what the encoder mirrors; a method on the nested types
	// would change their encoding.
	for _, typ := range []reflect.Type{reflect.TypeFor[event.Process](), reflect.TypeFor[event.Identity](), reflect.TypeFor[event.Type]()} {
		if _, ok := reflect.PointerTo(typ).MethodByName("MarshalJSON"); ok {
			return fmt.Errorf("%s has its own MarshalJSON", typ)
		}
		if _, ok := reflect.PointerTo(typ).MethodByName("MarshalText"); ok {
			return fmt.Errorf("%s has its own MarshalText", typ)
		}
	}
	return nil
}
