package local

import (
	"encoding/json"
	"math/rand/v2"
	"reflect"
	"testing"
	"time"

	"github.com/vigil-db/vigil/pkg/event"
)

// checkDecode compares decodeFast with json.Unmarshal on one line: where the fast path
// accepts a line, json.Unmarshal must accept it and give the same event.
func checkDecode(t *testing.T, line []byte, mustBeFast bool) {
	t.Helper()
	var fast, std event.Event
	ok := decodeFast(line, &fast)
	err := json.Unmarshal(line, &std)
	if mustBeFast && !ok {
		t.Fatalf("the writer's own line took the slow path: %s", line)
	}
	if !ok {
		return
	}
	if err != nil {
		t.Fatalf("fast path accepted what json.Unmarshal rejects (%v): %q", err, line)
	}
	if !reflect.DeepEqual(fast, std) {
		t.Fatalf("decodings differ for %q\nfast: %+v\njson: %+v", line, fast, std)
	}
}

var nastyStrings = []string{
	"", "plain", `quote " backslash \ slash /`, "<script>&amp;</script>", "\x00\x01\x1f\x7f",
	"\b\f\n\r\t", "ünïcödé 日本語 🙂", "\u2028\u2029", "\xff\xfe bad utf8 \xc3",
}

func randomEvent(r *rand.Rand) *event.Event {
	str := func() string {
		switch r.IntN(4) {
		case 0:
			return ""
		case 1:
			return nastyStrings[r.IntN(len(nastyStrings))]
		}
		b := make([]byte, r.IntN(12))
		for i := range b {
			b[i] = byte(r.IntN(256))
		}
		return string(b)
	}
	strs := func() []string {
		if r.IntN(2) == 0 {
			return nil
		}
		out := make([]string, r.IntN(4)+1)
		for i := range out {
			out[i] = str()
		}
		return out
	}
	e := &event.Event{
		Time: time.Unix(r.Int64N(1<<34)-1<<33, r.Int64N(1e9)).In(time.FixedZone("z", r.IntN(50000)-25000)),
		Type: event.Type(str()), Source: str(), Host: str(), AgentID: str(), ChainID: str(), Seq: r.Uint64(),
		DBUser: str(), SessionID: str(), BackendPID: int32(r.Uint32()), TLS: r.IntN(2) == 0,
		Statement: str(), StatementTruncated: r.IntN(2) == 0, Params: strs(), Kind: str(),
		Tables: strs(), Rows: r.Int64() - 1<<62, DurationUS: r.Int64(), Error: str(),
		PIIColumns: strs(), Lost: r.Uint64() >> r.IntN(64), Detail: str(), PrevHash: str(), Hash: str(),
	}
	if r.IntN(2) == 0 {
		uid := int32(r.Uint32())
		e.Process = &event.Process{PID: int32(r.IntN(3)), Comm: str(), Pod: str()}
		if r.IntN(2) == 0 {
			e.Process.UID = &uid
		}
	}
	if r.IntN(2) == 0 {
		e.Identity = &event.Identity{Subject: str(), Groups: strs()}
	}
	return e
}

func TestDecodeFastMatchesJSON(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for range 5000 {
		line, err := randomEvent(r).MarshalJSON()
		if err != nil {
			continue // a time outside years 0-9999
		}
		checkDecode(t, line, true)
	}
}

func TestDecodeFastOddLines(t *testing.T) {
	// Lines the writer never produces: each must either decode as json.Unmarshal does or
	// take the slow path.
	lines := []string{
		`{}`, `{"seq":1}`, `{"seq":1} `, ` {"seq":1}`, `{"seq": 1}`, `{"SEQ":1}`, `{"seq":01}`,
		`{"seq":-1}`, `{"seq":1.0}`, `{"seq":1e3}`, `{"rows":-0}`, `{"seq":18446744073709551616}`,
		`{"backend_pid":3000000000}`, `{"seq":null}`, `{"unknown":1}`, `{"seq":1,"seq":2}`,
		`{"process":{"pid":1},"process":{"comm":"x"}}`, `{"process":{}}`, `{"params":[]}`,
		`{"params":["a",]}`, `{"tables":["\u00e9\ud83d\ude00"]}`, `{"statement":"\u0000\/"}`,
		`{"statement":"raw` + "\x01" + `"}`, `{"statement":"` + "\xff" + `"}`, `{"statement":"\x"}`,
		`{"time":"2026-11-25T10:00:00Z"}`, `{"time":"2026-11-25T10:00:00+01:00"}`,
		`{"time":"2026-11-25 10:00:00Z"}`, `{"time":"\u0032026-11-25T10:00:00Z"}`, `{"tls":true,"tls":false}`,
		`{"tls":tru}`, `{"type":"gap"`, `{"type":"gap"}}`, `{"process":{"uid":0}}`, `{"ke\"y":1}`, ``, `[]`,
	}
	for _, l := range lines {
		checkDecode(t, []byte(l), false)
	}
}

func FuzzDecodeFast(f *testing.F) {
	for _, e := range mkEvents(1, 3) {
		line, _ := e.MarshalJSON()
		f.Add(line)
	}
	f.Add([]byte(`{"process":{"uid":0},"params":["\u00e9"]}`))
	f.Fuzz(func(t *testing.T, line []byte) { checkDecode(t, line, false) })
}
