package enforce

import (
	"bytes"
	"context"
	"encoding/binary"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"go.yaml.in/yaml/v3"

	"github.com/vigil-db/vigil/pkg/event"
)

// channelSchema adds to schemaSQL the types the binary channel cases need: a card number
// held as numeric, int8 and money, in an array, a composite value and a domain (no policy
// names these columns: only the value detectors can find the card number in them), and a
// functions whose bodies send an email address to LISTEN ch and raise an error quoting a
// name.
const channelSchema = `
CREATE TYPE contact AS (label text, pan numeric, phone int8);
CREATE DOMAIN pan_t AS numeric;
CREATE TABLE cards (id int PRIMARY KEY, pan numeric, pan8 int8, pan_money money, pans numeric[], c contact);
INSERT INTO cards VALUES (1, 4111111111111111, 4111111111111111, 4111111111111111, ARRAY[4111111111111111, 5], ROW('work', 4111111111111111, 4155550100));
GRANT SELECT ON cards TO analyst;
CREATE FUNCTION notify_email(int) RETURNS void LANGUAGE sql SECURITY DEFINER
  AS $$ SELECT pg_notify('ch', (SELECT email FROM customers WHERE id = $1)) $$;
GRANT EXECUTE ON FUNCTION notify_email(int) TO analyst;
CREATE TYPE mood AS ENUM ('happy');
CREATE FUNCTION raise_name(int) RETURNS void LANGUAGE plpgsql SECURITY DEFINER
  AS $$ BEGIN RAISE EXCEPTION 'no such customer "%"', (SELECT full_name FROM customers WHERE id = $1) USING ERRCODE = '42704'; END $$;
GRANT EXECUTE ON FUNCTION raise_name(int) TO analyst;
`

type channelCase struct {
	Name     string   `yaml:"name"`
	Channel  string   `yaml:"channel"`
	SQL      string   `yaml:"sql"`
	Function string   `yaml:"function"`
	Args     []string `yaml:"args"`
	Expect   string   `yaml:"expect"`
	Want     []string `yaml:"want"`
	Raw      []string `yaml:"raw"`
	// Rule, for a refusal, is the rule its event must name.
	Rule string `yaml:"rule"`
}

// channelRaw are raw values beyond rawPII: the card number as digits, as the numeric types
// print it (float8 in exponent notation, money with group separators).
var channelRaw = []string{"4111111111111111", "4,111,111,111,111,111", "4.111111111111111e+15", "alice@example.com", "Alice Liddell"}

func TestChannelCorpus(t *testing.T) {
	data, err := os.ReadFile("testdata/channels.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var corpus struct {
		Cases []channelCase `yaml:"cases"`
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&corpus); err != nil {
		t.Fatalf("testdata/channels.yaml: %v", err)
	}
	h := start(t)
	if _, err := h.pg.Psql("postgres", channelSchema); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	direct, err := pgconn.Connect(ctx, h.pg.DSN("postgres", "postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer direct.Close(ctx)
	for _, tc := range corpus.Cases {
		t.Run(tc.Name, func(t *testing.T) {
			out, code, errText := runChannelCase(t, h, direct, &tc)
			if tc.Expect != "ok" {
				var leaked []string
				for _, v := range append(append(append([]string(nil), rawPII...), channelRaw...), tc.Raw...) {
					if strings.Contains(out, v) || strings.Contains(errText, v) {
						leaked = append(leaked, v)
					}
				}
				if len(leaked) > 0 {
					t.Errorf("raw %q left through the %s channel:\n%s%s", leaked, tc.Channel, out, errText)
				}
			}
			switch tc.Expect {
			case "masked", "ok":
				if errText != "" {
					t.Fatalf("unexpected error: %s", errText)
				}
				if out == "" {
					t.Fatalf("nothing arrived")
				}
			case "refused":
				if code != "42501" {
					t.Fatalf("not refused: code %q, %s; got %s", code, errText, out)
				}
			case "error":
				if errText == "" {
					t.Fatalf("no error; got %s", out)
				}
			default:
				t.Fatalf("unknown expect %q", tc.Expect)
			}
			if tc.Rule != "" {
				needle := tc.SQL
				if tc.Channel == "function" {
					needle = tc.Function[:strings.IndexByte(tc.Function, '(')+1]
				}
				if e := h.log.Find(t, needle); e.Rule != tc.Rule || e.Decision != event.DecisionBlock {
					t.Errorf("event: rule %q decision %q, want rule %q and a block", e.Rule, e.Decision, tc.Rule)
				}
			}
			for _, w := range tc.Want {
				if !strings.Contains(out, w) && !strings.Contains(errText, w) {
					t.Errorf("%q did not arrive:\n%q%s", w, out, errText)
				}
			}
		})
	}
}

// runChannelCase runs one case as analyst on a fresh connection and returns what arrived by
// the case's channel, the error's SQLSTATE and the error's text fields.
func runChannelCase(t *testing.T, h *harness, direct *pgconn.PgConn, tc *channelCase) (out, code, errText string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cfg, err := pgconn.ParseConfig(h.dsn("analyst", "postgres"))
	if err != nil {
		t.Fatal(err)
	}
	var notes []string
	cfg.OnNotification = func(_ *pgconn.PgConn, n *pgconn.Notification) { notes = append(notes, n.Channel+":"+n.Payload) }
	var notices []string
	cfg.OnNotice = func(_ *pgconn.PgConn, n *pgconn.Notice) { notices = append(notices, errFields((*pgconn.PgError)(n))) }
	pc, err := pgconn.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close(context.Background())
	var b strings.Builder
	fail := func(err error) {
		if e := asPgError(err); e != nil {
			code, errText = e.Code, errFields(e)
		} else if err != nil {
			t.Fatalf("%s: %v", tc.Name, err)
		}
	}
	switch tc.Channel {
	case "text":
		res, err := pc.Exec(ctx, tc.SQL).ReadAll()
		fail(err)
		for _, r := range res {
			for _, row := range r.Rows {
				for _, v := range row {
					b.Write(v)
					b.WriteByte('|')
				}
			}
		}
	case "binary":
		rr := pc.ExecParams(ctx, tc.SQL, nil, nil, nil, []int16{1}).Read()
		fail(rr.Err)
		for _, row := range rr.Rows {
			for i, v := range row {
				if v == nil {
					b.WriteString("NULL|")
					continue
				}
				// PostgreSQL decodes the value with its type's receive function: a value the
				// proxy rewrote must still be valid for its type.
				b.WriteString(serverText(t, direct, rr.FieldDescriptions[i].DataTypeOID, v))
				b.WriteByte('|')
			}
		}
	case "copy":
		var buf bytes.Buffer
		_, err := pc.CopyTo(ctx, &buf, tc.SQL)
		fail(err)
		b.Write(buf.Bytes())
	case "notify":
		if _, err := pc.Exec(ctx, "LISTEN ch").ReadAll(); err != nil {
			t.Fatal(err)
		}
		_, err := pc.Exec(ctx, tc.SQL).ReadAll()
		fail(err)
		// Notifications of the session's own transaction arrive with its ReadyForQuery.
		if _, err := pc.Exec(ctx, "SELECT 1").ReadAll(); err != nil {
			t.Fatal(err)
		}
		b.WriteString(strings.Join(notes, "\n"))
	case "parameter":
		_, err := pc.Exec(ctx, tc.SQL).ReadAll()
		fail(err)
		b.WriteString(pc.ParameterStatus("application_name"))
	case "error":
		_, err := pc.Exec(ctx, tc.SQL).ReadAll()
		fail(err)
		rr := pc.ExecParams(ctx, tc.SQL, nil, nil, nil, nil).Read()
		if e := asPgError(rr.Err); e != nil {
			errText += "\n" + errFields(e)
		}
	case "function":
		var oid uint32
		dr := direct.ExecParams(ctx, "SELECT $1::regprocedure::oid::text", [][]byte{[]byte(tc.Function)}, nil, nil, nil).Read()
		if dr.Err != nil {
			t.Fatal(dr.Err)
		}
		for _, c := range dr.Rows[0][0] {
			oid = oid*10 + uint32(c-'0')
		}
		args := make([][]byte, len(tc.Args))
		for i, a := range tc.Args {
			args[i] = []byte(a)
		}
		var res []byte
		pc, res, code, errText = functionCall(t, pc, oid, args)
		b.Write(res)
	default:
		t.Fatalf("unknown channel %q", tc.Channel)
	}
	for _, n := range notices {
		b.WriteString("\nnotice: " + n)
	}
	// The session is still usable.
	if rr := pc.ExecParams(ctx, "SELECT 1", nil, nil, nil, nil).Read(); rr.Err != nil {
		t.Fatalf("session after the case: %v", rr.Err)
	}
	return b.String(), code, errText
}

// serverText has PostgreSQL decode a binary value of type oid and print it as text. An
// anonymous record has no receive function: its fields are decoded one by one.
func serverText(t *testing.T, direct *pgconn.PgConn, oid uint32, v []byte) string {
	t.Helper()
	if v == nil {
		return "NULL"
	}
	if oid == 2249 {
		if len(v) < 4 {
			t.Fatalf("record value of %d bytes", len(v))
		}
		n, p := int(binary.BigEndian.Uint32(v)), 4
		var fields []string
		for i := 0; i < n; i++ {
			if p+8 > len(v) {
				t.Fatalf("malformed record value %x", v)
			}
			foid, l := binary.BigEndian.Uint32(v[p:]), int32(binary.BigEndian.Uint32(v[p+4:]))
			p += 8
			var fv []byte
			if l >= 0 {
				if p+int(l) > len(v) {
					t.Fatalf("malformed record value %x", v)
				}
				fv, p = v[p:p+int(l)], p+int(l)
			}
			fields = append(fields, serverText(t, direct, foid, fv))
		}
		return "(" + strings.Join(fields, ",") + ")"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	dr := direct.ExecParams(ctx, "SELECT $1::text", [][]byte{v}, []uint32{oid}, []int16{1}, nil).Read()
	if dr.Err != nil {
		t.Fatalf("the value %x is not valid for type %d: %v", v, oid, dr.Err)
	}
	return string(dr.Rows[0][0])
}

func errFields(e *pgconn.PgError) string {
	return e.Code + " " + e.Message + " | " + e.Detail + " | " + e.Hint + " | " + e.Where
}

// functionCall sends a FunctionCall with text arguments and reads its answer up to
// ReadyForQuery; it returns the connection to use afterwards.
func functionCall(t *testing.T, pc *pgconn.PgConn, oid uint32, args [][]byte) (_ *pgconn.PgConn, res []byte, code, errText string) {
	t.Helper()
	hc, err := pc.Hijack()
	if err != nil {
		t.Fatal(err)
	}
	fe := hc.Frontend
	fe.Send(&pgproto3.FunctionCall{Function: oid, ArgFormatCodes: []uint16{0}, Arguments: args, ResultFormatCode: 0})
	if err := fe.Flush(); err != nil {
		t.Fatal(err)
	}
	for {
		m, err := fe.Receive()
		if err != nil {
			t.Fatal(err)
		}
		switch m := m.(type) {
		case *pgproto3.FunctionCallResponse:
			res = append([]byte(nil), m.Result...)
		case *pgproto3.ErrorResponse:
			code, errText = m.Code, m.Code+" "+m.Message+" | "+m.Detail+" | "+m.Hint+" | "+m.Where
		case *pgproto3.ReadyForQuery:
			pc, err = pgconn.Construct(hc)
			if err != nil {
				t.Fatal(err)
			}
			return pc, res, code, errText
		}
	}
}
