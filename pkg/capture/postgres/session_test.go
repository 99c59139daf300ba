package postgres

import (
	"encoding/binary"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/vigil-db/vigil/pkg/event"
)

type encoder interface {
	Encode(dst []byte) ([]byte, error)
}

func enc(t testing.TB, msgs ...encoder) []byte {
	t.Helper()
	var b []byte
	for _, m := range msgs {
		var err error
		if b, err = m.Encode(b); err != nil {
			t.Fatalf("encoding %T: %v", m, err)
		}
	}
	return b
}

var t0 = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

// step is one capture event: bytes of a direction, a gap, or the connection closing.
type step struct {
	client []encoder
	server []encoder
	raw    []byte // raw bytes, direction fromClient
	gap    int
	close  bool
	// fromClient applies to raw and gap.
	fromClient bool
}

func c(msgs ...encoder) step { return step{client: msgs} }
func sv(msgs ...encoder) step {
	return step{server: msgs}
}

// run feeds steps, one millisecond apart, and returns the events.
func run(t testing.TB, cfg Config, steps []step) ([]*event.Event, *Session) {
	t.Helper()
	var evs []*event.Event
	s := NewSession(cfg, func(e *event.Event) { evs = append(evs, e) })
	ts := t0
	for _, st := range steps {
		switch {
		case st.client != nil:
			s.Feed(true, enc(t, st.client...), ts)
		case st.server != nil:
			s.Feed(false, enc(t, st.server...), ts)
		case st.raw != nil:
			s.Feed(st.fromClient, st.raw, ts)
		case st.gap != 0:
			s.Gap(st.fromClient, st.gap, ts)
		case st.close:
			s.Close(ts)
		}
		ts = ts.Add(time.Millisecond)
	}
	return evs, s
}

// want is the part of an event these tests pin down.
type want struct {
	Statement string
	Truncated bool
	Params    []string
	Rows      int64
	Error     string
	Detail    string
}

func got(evs []*event.Event) []want {
	out := []want{}
	for _, e := range evs {
		out = append(out, want{e.Statement, e.StatementTruncated, e.Params, e.Rows, e.Error, e.Detail})
	}
	return out
}

func startup(params map[string]string) []step {
	return []step{
		c(&pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersion30, Parameters: params}),
		sv(&pgproto3.AuthenticationOk{}, &pgproto3.ParameterStatus{Name: "application_name", Value: params["application_name"]},
			&pgproto3.BackendKeyData{ProcessID: 4242, SecretKey: []byte{1, 2, 3, 4}}, &pgproto3.ReadyForQuery{TxStatus: 'I'}),
	}
}

var std = startup(map[string]string{"user": "alice", "database": "shop", "application_name": "psql"})

func steps(groups ...[]step) []step {
	var out []step
	for _, g := range groups {
		out = append(out, g...)
	}
	return out
}

func rowDesc() *pgproto3.RowDescription {
	return &pgproto3.RowDescription{Fields: []pgproto3.FieldDescription{{Name: []byte("x"), DataTypeOID: 23, DataTypeSize: 4, Format: 0}}}
}

func row(v string) *pgproto3.DataRow { return &pgproto3.DataRow{Values: [][]byte{[]byte(v)}} }
func cc(tag string) *pgproto3.CommandComplete {
	return &pgproto3.CommandComplete{CommandTag: []byte(tag)}
}
func rfq() *pgproto3.ReadyForQuery { return &pgproto3.ReadyForQuery{TxStatus: 'I'} }
func errResp(code, msg string) *pgproto3.ErrorResponse {
	return &pgproto3.ErrorResponse{Severity: "ERROR", SeverityUnlocalized: "ERROR", Code: code, Message: msg}
}
func q(sql string) *pgproto3.Query { return &pgproto3.Query{String: sql} }
func parse(name, sql string) *pgproto3.Parse {
	return &pgproto3.Parse{Name: name, Query: sql}
}
func bind(portal, stmt string, formats []int16, params ...[]byte) *pgproto3.Bind {
	return &pgproto3.Bind{DestinationPortal: portal, PreparedStatement: stmt, ParameterFormatCodes: formats, Parameters: params}
}
func execute(portal string, max uint32) *pgproto3.Execute {
	return &pgproto3.Execute{Portal: portal, MaxRows: max}
}
func describe(kind byte, name string) *pgproto3.Describe {
	return &pgproto3.Describe{ObjectType: kind, Name: name}
}

var (
	syncMsg   = &pgproto3.Sync{}
	parseOK   = &pgproto3.ParseComplete{}
	bindOK    = &pgproto3.BindComplete{}
	noData    = &pgproto3.NoData{}
	paramDesc = &pgproto3.ParameterDescription{ParameterOIDs: []uint32{23}}
)

var (
	uuidBytes = []byte{0xa0, 0xee, 0xbc, 0x99, 0x9c, 0x0b, 0x4e, 0xf8, 0xbb, 0x6d, 0x6b, 0xb9, 0xbd, 0x38, 0x0a, 0x11}
	// 2026-11-25 12:00:00.123456+01 as microseconds since 2000-01-01 UTC.
	tstzBytes = binary.BigEndian.AppendUint64(nil, uint64(time.Date(2026, 11, 25, 11, 0, 0, 123456000, time.UTC).Sub(time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)).Microseconds()))
)

func TestSession(t *testing.T) {
	rec := Config{RecordParams: true}
	tests := []struct {
		name  string
		cfg   Config
		steps []step
		want  []want
	}{
		{
			name:  "simple query",
			steps: steps(std, []step{c(q("SELECT 1")), sv(rowDesc(), row("1"), cc("SELECT 1"), rfq())}),
			want:  []want{{Statement: "SELECT 1", Rows: 1}},
		},
		{
			name: "multi-statement query pairs responses in order",
			steps: steps(std, []step{c(q("SELECT 1; SELECT 2;")),
				sv(rowDesc(), row("1"), cc("SELECT 1"), rowDesc(), row("2"), row("2"), cc("SELECT 2"), rfq())}),
			want: []want{{Statement: "SELECT 1", Rows: 1}, {Statement: "SELECT 2", Rows: 2}},
		},
		{
			name: "statements after an error did not run",
			steps: steps(std, []step{c(q("INSERT INTO t VALUES (1); SELECT 1/0; DELETE FROM t")),
				sv(cc("INSERT 0 1"), errResp("22012", "division by zero"), rfq())}),
			want: []want{{Statement: "INSERT INTO t VALUES (1)", Rows: 1}, {Statement: "SELECT 1/0", Error: "22012"}},
		},
		{
			name: "syntax error in a later statement: nothing ran, the error is that statement's",
			steps: steps(std, []step{c(q("SELECT 1; SELEC 2; SELECT 3")),
				sv(&pgproto3.ErrorResponse{Severity: "ERROR", Code: "42601", Message: `syntax error at or near "SELEC"`, Position: 11}, rfq())}),
			want: []want{{Statement: "SELEC 2", Error: "42601"}},
		},
		{
			name:  "empty query",
			steps: steps(std, []step{c(q(";")), sv(&pgproto3.EmptyQueryResponse{}, rfq())}),
			want:  []want{{Statement: ";"}},
		},
		{
			name: "rows from command tags, DataRows otherwise",
			steps: steps(std, []step{
				c(q("UPDATE t SET a = 1")), sv(cc("UPDATE 7"), rfq()),
				c(q("INSERT INTO t SELECT * FROM u")), sv(cc("INSERT 0 12"), rfq()),
				c(q("SHOW work_mem")), sv(rowDesc(), row("4MB"), cc("SHOW"), rfq()),
				c(q("CREATE TABLE x (a int)")), sv(cc("CREATE TABLE"), rfq()),
				c(q("MERGE INTO t USING u ON true WHEN MATCHED THEN DO NOTHING")), sv(cc("MERGE 3"), rfq()),
				c(q("FETCH 5 FROM c")), sv(rowDesc(), row("a"), cc("FETCH 1"), rfq()),
			}),
			want: []want{{Statement: "UPDATE t SET a = 1", Rows: 7}, {Statement: "INSERT INTO t SELECT * FROM u", Rows: 12},
				{Statement: "SHOW work_mem", Rows: 1}, {Statement: "CREATE TABLE x (a int)"},
				{Statement: "MERGE INTO t USING u ON true WHEN MATCHED THEN DO NOTHING", Rows: 3}, {Statement: "FETCH 5 FROM c", Rows: 1}},
		},
		{
			name: "extended protocol, unnamed, text params",
			cfg:  rec,
			steps: steps(std, []step{
				c(parse("", "SELECT $1::int"), bind("", "", nil, []byte("42")), describe('P', ""), execute("", 0), syncMsg),
				sv(parseOK, bindOK, rowDesc(), row("42"), cc("SELECT 1"), rfq()),
			}),
			want: []want{{Statement: "SELECT $1::int", Params: []string{"42"}, Rows: 1}},
		},
		{
			name: "params omitted unless recorded",
			steps: steps(std, []step{
				c(parse("", "SELECT $1::int"), bind("", "", nil, []byte("42")), execute("", 0), syncMsg),
				sv(parseOK, bindOK, row("42"), cc("SELECT 1"), rfq()),
			}),
			want: []want{{Statement: "SELECT $1::int", Rows: 1}},
		},
		{
			name: "binary params of unknown type stay hex; NULL and text params",
			cfg:  rec,
			steps: steps(std, []step{
				c(parse("", "SELECT $1, $2, $3"), bind("", "", []int16{1, 0, 0}, []byte{0, 0, 0, 42}, nil, []byte("héllo")), execute("", 0), syncMsg),
				sv(parseOK, bindOK, row("x"), cc("SELECT 1"), rfq()),
			}),
			want: []want{{Statement: "SELECT $1, $2, $3", Params: []string{`\x0000002a`, "NULL", "héllo"}, Rows: 1}},
		},
		{
			name: "binary params decoded by the types the Parse declared",
			cfg:  rec,
			steps: steps(std, []step{
				c(&pgproto3.Parse{Query: "SELECT $1, $2, $3, $4", ParameterOIDs: []uint32{23, 0, 2950, 17}},
					bind("", "", []int16{1}, []byte{0, 0, 0, 1}, []byte{0, 0, 0, 2}, uuidBytes, []byte{0xde, 0xad}), execute("", 0), syncMsg),
				sv(parseOK, bindOK, row("x"), cc("SELECT 1"), rfq()),
			}),
			// $2's type was left to the server, and no Describe asked it: hex.
			want: []want{{Statement: "SELECT $1, $2, $3, $4", Params: []string{"1", `\x00000002`, "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", `\xdead`}, Rows: 1}},
		},
		{
			name: "binary params decoded by the server's ParameterDescription (pgx)",
			cfg:  rec,
			steps: steps(std, []step{
				c(parse("stmtcache_1", "SELECT $1, $2, $3, $4"), describe('S', "stmtcache_1"), syncMsg),
				sv(parseOK, &pgproto3.ParameterDescription{ParameterOIDs: []uint32{23, 1184, 25, 20}}, rowDesc(), rfq()),
				c(bind("", "stmtcache_1", []int16{1}, []byte{0, 0, 0, 1}, tstzBytes, nil, []byte{0, 0, 0}), execute("", 0), syncMsg),
				sv(bindOK, row("x"), cc("SELECT 1"), rfq()),
			}),
			// An int8 of three bytes is not an int8: hex, not a guess.
			want: []want{{Statement: "SELECT $1, $2, $3, $4", Params: []string{"1", "2026-11-25T11:00:00.123456Z", "NULL", `\x000000`}, Rows: 1}},
		},
		{
			// Joined mid-conversation: the first answers may be to requests sent before
			// capture (here an INSERT's types, text and int4), so types are trusted only
			// once the server has been idle.
			name: "parameter types not trusted before the pairing is certain",
			cfg:  rec,
			steps: []step{
				c(parse("u", "UPDATE t SET a = $1 WHERE id = $2"), describe('S', "u"), syncMsg),
				sv(parseOK, &pgproto3.ParameterDescription{ParameterOIDs: []uint32{23, 25}}, noData,
					parseOK, &pgproto3.ParameterDescription{ParameterOIDs: []uint32{25, 23}}, noData, rfq()),
				c(bind("", "u", []int16{0, 1}, []byte("x"), []byte{0, 0, 0, 100}), execute("", 0), syncMsg),
				sv(bindOK, cc("UPDATE 1"), rfq()),
				c(describe('S', "u"), syncMsg), sv(&pgproto3.ParameterDescription{ParameterOIDs: []uint32{25, 23}}, noData, rfq()),
				c(bind("", "u", []int16{0, 1}, []byte("x"), []byte{0, 0, 0, 100}), execute("", 0), syncMsg),
				sv(bindOK, cc("UPDATE 1"), rfq()),
			},
			want: []want{
				{Statement: "UPDATE t SET a = $1 WHERE id = $2", Params: []string{"x", `\x00000064`}, Rows: 1},
				{Statement: "UPDATE t SET a = $1 WHERE id = $2", Params: []string{"x", "100"}, Rows: 1},
			},
		},
		{
			name: "types of another parameter count are not used",
			cfg:  rec,
			steps: steps(std, []step{
				c(parse("s", "SELECT $1"), describe('S', "s"), syncMsg),
				sv(parseOK, &pgproto3.ParameterDescription{ParameterOIDs: []uint32{23, 23}}, rowDesc(), rfq()),
				c(bind("", "s", []int16{1}, []byte{0, 0, 0, 1}), execute("", 0), syncMsg), sv(bindOK, row("1"), cc("SELECT 1"), rfq()),
			}),
			want: []want{{Statement: "SELECT $1", Params: []string{`\x00000001`}, Rows: 1}},
		},
		{
			name: "parameter types are not kept without RecordParams",
			steps: steps(std, []step{
				c(&pgproto3.Parse{Name: "s", Query: "SELECT $1", ParameterOIDs: []uint32{23}}, describe('S', "s"), syncMsg),
				sv(parseOK, paramDesc, rowDesc(), rfq()),
				c(bind("", "s", []int16{1}, []byte{0, 0, 0, 1}), execute("", 0), syncMsg), sv(bindOK, row("x"), cc("SELECT 1"), rfq()),
			}),
			want: []want{{Statement: "SELECT $1", Rows: 1}},
		},
		{
			name: "named statement executed many times",
			cfg:  rec,
			steps: steps(std, []step{
				c(parse("s1", "SELECT * FROM t WHERE id = $1"), describe('S', "s1"), syncMsg),
				sv(parseOK, paramDesc, rowDesc(), rfq()),
				c(bind("", "s1", nil, []byte("1")), execute("", 0), syncMsg), sv(bindOK, row("a"), cc("SELECT 1"), rfq()),
				c(bind("", "s1", nil, []byte("2")), execute("", 0), syncMsg), sv(bindOK, cc("SELECT 0"), rfq()),
				c(bind("p", "s1", nil, []byte("3")), execute("p", 0), syncMsg), sv(bindOK, row("a"), row("b"), cc("SELECT 2"), rfq()),
			}),
			want: []want{
				{Statement: "SELECT * FROM t WHERE id = $1", Params: []string{"1"}, Rows: 1},
				{Statement: "SELECT * FROM t WHERE id = $1", Params: []string{"2"}},
				{Statement: "SELECT * FROM t WHERE id = $1", Params: []string{"3"}, Rows: 2},
			},
		},
		{
			name: "pipeline of three before one Sync",
			steps: steps(std, []step{
				c(parse("", "INSERT INTO t VALUES (1)"), bind("", "", nil), execute("", 0),
					parse("", "UPDATE t SET a = 2"), bind("", "", nil), execute("", 0),
					parse("", "DELETE FROM t"), bind("", "", nil), execute("", 0), syncMsg),
				sv(parseOK, bindOK, cc("INSERT 0 1"), parseOK, bindOK, cc("UPDATE 4"), parseOK, bindOK, cc("DELETE 5"), rfq()),
			}),
			want: []want{{Statement: "INSERT INTO t VALUES (1)", Rows: 1}, {Statement: "UPDATE t SET a = 2", Rows: 4}, {Statement: "DELETE FROM t", Rows: 5}},
		},
		{
			name: "error in a pipeline: the server skips to Sync",
			steps: steps(std, []step{
				c(parse("", "INSERT INTO t VALUES (1)"), bind("", "", nil), execute("", 0),
					parse("", "INSERT INTO t VALUES (1)"), bind("", "", nil), execute("", 0),
					parse("", "DELETE FROM t"), bind("", "", nil), execute("", 0), syncMsg),
				sv(parseOK, bindOK, cc("INSERT 0 1"), parseOK, bindOK, errResp("23505", "duplicate key"), rfq()),
				c(q("SELECT 1")), sv(row("1"), cc("SELECT 1"), rfq()),
			}),
			want: []want{{Statement: "INSERT INTO t VALUES (1)", Rows: 1}, {Statement: "INSERT INTO t VALUES (1)", Error: "23505"}, {Statement: "SELECT 1", Rows: 1}},
		},
		{
			name: "error arrives before the client's Sync: later messages are skipped too",
			steps: steps(std, []step{
				c(parse("", "SELEC 1"), bind("", "", nil), execute("", 0)),
				sv(errResp("42601", "syntax error")),
				c(parse("", "SELECT 2"), bind("", "", nil), execute("", 0), syncMsg),
				sv(rfq()),
			}),
			want: []want{{Statement: "SELEC 1", Error: "42601"}},
		},
		{
			name: "failed prepare without Execute",
			steps: steps(std, []step{
				c(parse("bad", "SELECT * FROM missing"), describe('S', "bad"), syncMsg),
				sv(errResp("42P01", `relation "missing" does not exist`), rfq()),
			}),
			want: []want{{Statement: "SELECT * FROM missing", Error: "42P01"}},
		},
		{
			name: "Execute of a statement prepared before capture",
			steps: steps(std, []step{
				c(bind("", "stmtcache_9", nil), execute("", 0), syncMsg),
				sv(bindOK, row("1"), cc("SELECT 1"), rfq()),
			}),
			want: []want{{Rows: 1, Detail: `text of prepared statement "stmtcache_9" not seen: created before capture started or lost in a capture gap`}},
		},
		{
			name: "closed statement is forgotten",
			steps: steps(std, []step{
				c(parse("s", "SELECT 1"), &pgproto3.Close{ObjectType: 'S', Name: "s"}, syncMsg), sv(parseOK, &pgproto3.CloseComplete{}, rfq()),
				c(bind("", "s", nil), execute("", 0), syncMsg), sv(errResp("26000", "prepared statement \"s\" does not exist"), rfq()),
			}),
			want: []want{{Error: "26000", Detail: `text of prepared statement "s" not seen: created before capture started or lost in a capture gap`}},
		},
		{
			name: "prepared statements beyond the cap are forgotten, and the event says so",
			cfg:  Config{MaxPrepared: 2},
			steps: steps(std, []step{
				c(parse("a", "SELECT 'a'"), parse("b", "SELECT 'b'"), parse("c", "SELECT 'c'"), syncMsg), sv(parseOK, parseOK, parseOK, rfq()),
				c(bind("", "a", nil), execute("", 0), bind("", "c", nil), execute("", 0), syncMsg),
				sv(bindOK, row("a"), cc("SELECT 1"), bindOK, row("c"), cc("SELECT 1"), rfq()),
			}),
			want: []want{{Rows: 1, Detail: `text of prepared statement "a" not seen: created before capture started or lost in a capture gap, or forgotten beyond the per-session limit`},
				{Statement: "SELECT 'c'", Rows: 1}},
		},
		{
			name: "portal suspended by a row limit",
			steps: steps(std, []step{
				c(parse("", "SELECT generate_series(1,3)"), bind("c", "", nil), execute("c", 2), syncMsg),
				sv(parseOK, bindOK, row("1"), row("2"), &pgproto3.PortalSuspended{}, rfq()),
				c(execute("c", 2), syncMsg), sv(row("3"), cc("SELECT 1"), rfq()),
			}),
			want: []want{{Statement: "SELECT generate_series(1,3)", Rows: 2, Detail: "row limit reached: portal suspended"},
				{Statement: "SELECT generate_series(1,3)", Rows: 1}},
		},
		{
			name: "COPY FROM STDIN",
			steps: steps(std, []step{
				c(q("COPY t FROM STDIN")), sv(&pgproto3.CopyInResponse{OverallFormat: 0, ColumnFormatCodes: []uint16{0}}),
				c(&pgproto3.CopyData{Data: []byte("1\n2\n")}, &pgproto3.CopyData{Data: []byte("3\n")}, &pgproto3.CopyDone{}),
				sv(cc("COPY 3"), rfq()),
			}),
			want: []want{{Statement: "COPY t FROM STDIN", Rows: 3}},
		},
		{
			name: "COPY FROM STDIN failed by the client",
			steps: steps(std, []step{
				c(q("COPY t FROM STDIN")), sv(&pgproto3.CopyInResponse{ColumnFormatCodes: []uint16{0}}),
				c(&pgproto3.CopyData{Data: []byte("1\n")}, &pgproto3.CopyFail{Message: "aborted"}),
				sv(errResp("57014", "COPY from stdin failed: aborted"), rfq()),
			}),
			want: []want{{Statement: "COPY t FROM STDIN", Error: "57014"}},
		},
		{
			name: "COPY TO STDOUT",
			steps: steps(std, []step{
				c(q("COPY t TO STDOUT")),
				sv(&pgproto3.CopyOutResponse{ColumnFormatCodes: []uint16{0}}, &pgproto3.CopyData{Data: []byte("1\n")}, &pgproto3.CopyData{Data: []byte("2\n")},
					&pgproto3.CopyDone{}, cc("COPY 2"), rfq()),
			}),
			want: []want{{Statement: "COPY t TO STDOUT", Rows: 2}},
		},
		{
			name: "fastpath function call",
			cfg:  rec,
			steps: steps(std, []step{
				c(&pgproto3.FunctionCall{Function: 954, ArgFormatCodes: []uint16{1}, Arguments: [][]byte{{0, 0, 0, 1}, {0, 0, 0, 2}}}),
				sv(&pgproto3.FunctionCallResponse{Result: []byte("x")}, rfq()),
			}),
			want: []want{{Statement: "fastpath function call: oid 954", Params: []string{`\x00000001`, `\x00000002`}}},
		},
		{
			name:  "statement truncated at the limit, on a character boundary",
			cfg:   Config{MaxStatementBytes: 10},
			steps: steps(std, []step{c(q("SELECT 'ééééé'")), sv(row("x"), cc("SELECT 1"), rfq())}),
			want:  []want{{Statement: "SELECT 'é", Truncated: true, Rows: 1}},
		},
		{
			name:  "connection closed before the response",
			steps: steps(std, []step{c(q("SELECT pg_sleep(100)")), {close: true}}),
			want:  []want{{Statement: "SELECT pg_sleep(100)", Detail: "response not seen: connection closed"}},
		},
		{
			name: "response lost to a capture gap",
			steps: steps(std, []step{c(q("SELECT big()")), sv(rowDesc()), {gap: 5000},
				c(q("SELECT 2")), sv(row("2"), cc("SELECT 1"), rfq())}),
			want: []want{{Statement: "SELECT big()", Detail: "response not seen: capture gap"}, {Statement: "SELECT 2", Rows: 1}},
		},
		{
			name: "gap inside a DataRow keeps the decoder in sync",
			// RowDescription is 27 bytes, the first DataRow 12, the second 21: the gap
			// takes 9 of its value's 10 bytes.
			steps: steps(std, []step{c(q("SELECT 1")),
				{raw: enc(t, rowDesc(), row("1"), row("1234567890"), cc("SELECT 2"), rfq())[:50]}, {gap: 9},
				{raw: enc(t, rowDesc(), row("1"), row("1234567890"), cc("SELECT 2"), rfq())[59:]}}),
			want: []want{{Statement: "SELECT 1", Rows: 2}},
		},
		{
			name: "request lost to a capture gap: its response is not paired with the next one",
			steps: steps(std, []step{{gap: 20, fromClient: true}, sv(row("lost"), cc("SELECT 1"), rfq()),
				c(q("SELECT 2")), sv(row("2"), cc("SELECT 1"), rfq())}),
			want: []want{{Statement: "SELECT 2", Rows: 1}},
		},
		{
			name: "gap inside the query text",
			steps: steps(std, []step{{raw: enc(t, q("SELECT 'abcdefghijklmnop'"))[:12], fromClient: true}, {gap: 10, fromClient: true},
				{raw: []byte("jklmnop'\x00"), fromClient: true}, sv(row("x"), cc("SELECT 1"), rfq())}),
			want: []want{{Statement: "SELECT", Truncated: true, Rows: 1, Detail: "statement text incomplete: capture gap"}},
		},
		{
			name:  "joined mid-connection",
			steps: []step{c(q("SELECT 1")), sv(row("1"), cc("SELECT 1"), rfq())},
			want:  []want{{Statement: "SELECT 1", Rows: 1}},
		},
		{
			name:  "joined mid-connection inside a response",
			steps: []step{{raw: enc(t, row("xyz"), cc("SELECT 1"), rfq())[3:]}, c(q("SELECT 1")), sv(row("1"), cc("SELECT 1"), rfq())},
			want:  []want{{Statement: "SELECT 1", Rows: 1}},
		},
		{
			name:  "cancel request",
			steps: []step{c(&pgproto3.CancelRequest{ProcessID: 777, SecretKey: []byte{9, 9, 9, 9}})},
			want:  []want{{Detail: "cancel request"}},
		},
		{
			name: "login refused",
			steps: []step{c(&pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersion30, Parameters: map[string]string{"user": "mallory"}}),
				sv(&pgproto3.AuthenticationCleartextPassword{}), c(&pgproto3.PasswordMessage{Password: "hunter2"}),
				sv(&pgproto3.ErrorResponse{Severity: "FATAL", Code: "28P01", Message: `password authentication failed for user "mallory"`})},
			want: []want{{Error: "28P01", Detail: "connection refused during startup"}},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			evs, s := run(t, tc.cfg, tc.steps)
			if g := got(evs); !reflect.DeepEqual(g, tc.want) {
				t.Errorf("events:\n got  %+v\n want %+v\nstats %+v", g, tc.want, s.Stats())
			}
		})
	}
}

func TestSessionFields(t *testing.T) {
	evs, s := run(t, Config{}, steps(std, []step{c(q("SELECT 1")), sv(row("1"), cc("SELECT 1")), sv(rfq())}))
	if len(evs) != 1 {
		t.Fatalf("%d events", len(evs))
	}
	e := evs[0]
	want := event.Event{Time: t0.Add(2 * time.Millisecond), Type: event.TypeStatement, Source: event.SourceEBPF, Protocol: event.ProtocolPostgres,
		DBUser: "alice", Database: "shop", Application: "psql", BackendPID: 4242, Statement: "SELECT 1", Rows: 1, DurationUS: 2000}
	if !reflect.DeepEqual(*e, want) {
		t.Errorf("event\n got  %+v\n want %+v", *e, want)
	}
	if s.BackendPID() != 4242 {
		t.Errorf("BackendPID() = %d", s.BackendPID())
	}
	// application_name changes with SET.
	evs, _ = run(t, Config{TLS: true}, steps(std, []step{c(q("SET application_name = 'etl'")),
		sv(&pgproto3.ParameterStatus{Name: "application_name", Value: "etl"}, cc("SET"), rfq()), c(q("SELECT 1")), sv(cc("SELECT 0"), rfq())}))
	if evs[1].Application != "etl" || !evs[1].TLS {
		t.Errorf("after SET: application %q, tls %v", evs[1].Application, evs[1].TLS)
	}
}

func TestSessionSSL(t *testing.T) {
	var evs []*event.Event
	s := NewSession(Config{}, func(e *event.Event) { evs = append(evs, e) })
	s.Feed(true, enc(t, &pgproto3.SSLRequest{}), t0)
	s.Feed(false, []byte{'N'}, t0)
	if s.Encrypted() {
		t.Fatal("encrypted after 'N'")
	}
	for _, st := range std {
		if st.client != nil {
			s.Feed(true, enc(t, st.client...), t0)
		} else {
			s.Feed(false, enc(t, st.server...), t0)
		}
	}
	s.Feed(true, enc(t, q("SELECT 1")), t0)
	s.Feed(false, enc(t, cc("SELECT 0"), rfq()), t0)
	if len(evs) != 1 || evs[0].DBUser != "alice" {
		t.Fatalf("after SSL refused: %d events", len(evs))
	}

	s = NewSession(Config{}, func(e *event.Event) { evs = append(evs, e) })
	s.Feed(true, enc(t, &pgproto3.GSSEncRequest{}), t0)
	s.Feed(false, []byte{'N'}, t0)
	s.Feed(true, enc(t, &pgproto3.SSLRequest{}), t0)
	s.Feed(false, []byte{'S'}, t0)
	s.Feed(true, []byte{0x16, 3, 1, 0, 200, 1, 2, 3}, t0)
	if !s.Encrypted() || s.Stats().DecodeErrors != 0 || s.Stats().IgnoredBytes != 8 {
		t.Fatalf("encrypted %v, stats %+v", s.Encrypted(), s.Stats())
	}

	// Plaintext read inside the server (uprobes): the SSLRequest shows, its answer does not.
	evs = nil
	s = NewSession(Config{TLS: true}, func(e *event.Event) { evs = append(evs, e) })
	s.Feed(true, enc(t, &pgproto3.SSLRequest{}), t0)
	for _, st := range std {
		if st.client != nil {
			s.Feed(true, enc(t, st.client...), t0)
		} else {
			s.Feed(false, enc(t, st.server...), t0)
		}
	}
	s.Feed(true, enc(t, q("SELECT 1")), t0)
	s.Feed(false, enc(t, cc("SELECT 0"), rfq()), t0)
	if len(evs) != 1 || !evs[0].TLS || evs[0].BackendPID != 4242 || s.Encrypted() || s.Stats().DecodeErrors != 0 {
		t.Fatalf("uprobe stream: %d events, stats %+v", len(evs), s.Stats())
	}

	s = NewSession(Config{}, func(e *event.Event) { evs = append(evs, e) })
	s.Feed(true, []byte{0x16, 3, 1, 0, 200}, t0) // direct TLS, no SSLRequest
	if !s.Encrypted() {
		t.Fatal("direct TLS not recognized")
	}
}

func TestSessionNeverKeepsSecrets(t *testing.T) {
	const secret = "correct horse battery staple"
	var evs []*event.Event
	s := NewSession(Config{RecordParams: true}, func(e *event.Event) { evs = append(evs, e) })
	s.Feed(true, enc(t, &pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersion30, Parameters: map[string]string{"user": "bob"}}), t0)
	s.Feed(false, enc(t, &pgproto3.AuthenticationSASL{AuthMechanisms: []string{"SCRAM-SHA-256"}}), t0)
	// Split so that the secret straddles two feeds and would have to be buffered.
	b := enc(t, &pgproto3.SASLInitialResponse{AuthMechanism: "SCRAM-SHA-256", Data: []byte("n,,n=bob,r=" + secret)})
	s.Feed(true, b[:20], t0)
	s.Feed(true, b[20:], t0)
	s.Feed(false, enc(t, &pgproto3.AuthenticationSASLContinue{Data: []byte("r=" + secret + ",s=salt,i=4096")}), t0)
	s.Feed(true, enc(t, &pgproto3.PasswordMessage{Password: secret}), t0)
	s.Feed(false, enc(t, &pgproto3.ErrorResponse{Severity: "FATAL", Code: "28P01", Message: `password authentication failed for user "bob"`}), t0)
	j, _ := json.Marshal(evs)
	if strings.Contains(string(j), secret) || strings.Contains(string(s.client.buf), secret) || strings.Contains(string(s.server.buf), secret) {
		t.Fatalf("secret kept: %s", j)
	}
	if len(evs) != 1 || evs[0].Error != "28P01" {
		t.Fatalf("events %s", j)
	}
}

func TestSessionChunking(t *testing.T) {
	// The same conversation fed whole, and one byte at a time, gives the same events.
	conv := steps(std, []step{
		c(q("SELECT 1; SELECT 2")), sv(rowDesc(), row("1"), cc("SELECT 1"), rowDesc(), row("2"), cc("SELECT 1"), rfq()),
		c(parse("s", "SELECT $1"), bind("", "s", nil, []byte("x")), execute("", 0), syncMsg), sv(parseOK, bindOK, row("x"), cc("SELECT 1"), rfq()),
	})
	whole, _ := run(t, Config{RecordParams: true}, conv)
	var bytewise []step
	for _, st := range conv {
		if st.client != nil {
			for _, b := range enc(t, st.client...) {
				bytewise = append(bytewise, step{raw: []byte{b}, fromClient: true})
			}
		} else {
			for _, b := range enc(t, st.server...) {
				bytewise = append(bytewise, step{raw: []byte{b}})
			}
		}
	}
	split, s := run(t, Config{RecordParams: true}, bytewise)
	if !reflect.DeepEqual(got(whole), got(split)) || len(whole) != 3 {
		t.Fatalf("whole %+v\nbytewise %+v", got(whole), got(split))
	}
	if st := s.Stats(); st.DecodeErrors != 0 || st.Resyncs != 0 || st.UnmatchedResponses != 0 {
		t.Fatalf("stats %+v", st)
	}
}

func TestCut(t *testing.T) {
	for _, tc := range []struct {
		in   string
		max  int
		want string
		cut  bool
	}{
		{"abc", 5, "abc", false},
		{"abcdef", 3, "abc", true},
		{"aé", 2, "a", true},
		{"aé", 3, "aé", false},
		{"a€b", 3, "a", true},
		{"a€b", 4, "a€", true},
		{"a\xffb", 2, "a\xff", true}, // invalid bytes are kept as they are
	} {
		got, c := cut([]byte(tc.in), tc.max)
		if string(got) != tc.want || c != tc.cut {
			t.Errorf("cut(%q, %d) = %q, %v; want %q, %v", tc.in, tc.max, got, c, tc.want, tc.cut)
		}
	}
}
