package audit

import (
	"bytes"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/vigil-db/vigil/pkg/event"
)

func TestEncoderFitsEventTypes(t *testing.T) {
	// Fails when pkg/event changes: update appendCanonical and encoderSchema together.
	if err := fastEncoderFits(); err != nil {
		t.Fatal(err)
	}
}

func checkSame(t *testing.T, e *event.Event) {
	t.Helper()
	want, wantErr := e.Canonical()
	got, gotErr := appendCanonical([]byte("prefix"), e)
	if (wantErr != nil) != (gotErr != nil) {
		t.Fatalf("errors differ: encoding/json %v, fast %v", wantErr, gotErr)
	}
	if wantErr != nil {
		return
	}
	if !bytes.Equal(got[len("prefix"):], want) {
		t.Fatalf("encodings differ\nfast: %s\njson: %s", got[len("prefix"):], want)
	}
}

// nasty strings: everything encoding/json escapes, and invalid UTF-8.
var nasty = []string{
	"", "plain", `quote " backslash \ slash /`, "<script>&amp;</script>", "\x00\x01\x1f\x7f",
	"\b\f\n\r\t", "ünïcödé 日本語 🙂", "\u2028\u2029", "\xff\xfe bad utf8 \xc3", "\xe2\x80",
	"tail\xe2\x80\xa8", "'; DROP TABLE x; --",
}

func TestAppendCanonical(t *testing.T) {
	uid0, uid := int32(0), int32(-5)
	tests := []struct {
		name string
		e    event.Event
	}{
		{"zero", event.Event{}},
		{"statement", *stmt(3)},
		{"time in a zone with nanos", event.Event{Time: time.Date(2026, 3, 4, 5, 6, 7, 120, time.FixedZone("x", -7*3600))}},
		{"time without nanos", event.Event{Time: time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)}},
		{"time before year 0", event.Event{Time: time.Date(-1, 1, 1, 0, 0, 0, 0, time.UTC)}},
		{"time after 9999", event.Event{Time: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)}},
		{"empty process", event.Event{Process: &event.Process{}}},
		{"uid 0", event.Event{Process: &event.Process{UID: &uid0}}},
		{"negative uid", event.Event{Process: &event.Process{UID: &uid, PID: -1}}},
		{"identity", event.Event{Identity: &event.Identity{Subject: "s", Groups: []string{"a", "<b>"}}}},
		{"empty identity", event.Event{Identity: &event.Identity{Groups: []string{}}}},
		{"empty slices", event.Event{Params: []string{}, Tables: []string{}}},
		{"slice of empty strings", event.Event{Params: []string{"", ""}}},
		{"flags and numbers", event.Event{TLS: true, StatementTruncated: true, Rows: -1, DurationUS: 1 << 62, Lost: 1<<64 - 1, Seq: 1<<64 - 1, BackendPID: -7}},
		{"anchor", event.Event{Type: event.TypeAnchor, Signature: "ab", KeyID: "cd", PrevHash: "ef", Hash: "left out"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { checkSame(t, &tt.e) })
	}
	for i, s := range nasty {
		e := stmt(i)
		e.Statement, e.Params, e.Detail = s, []string{s, s}, s
		e.Process.Comm, e.Identity = s, &event.Identity{Email: s}
		checkSame(t, e)
	}
}

func TestAppendCanonicalRandom(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	str := func() string {
		if r.IntN(3) == 0 {
			return ""
		}
		if r.IntN(2) == 0 {
			return nasty[r.IntN(len(nasty))]
		}
		b := make([]byte, r.IntN(12))
		for i := range b {
			b[i] = byte(r.IntN(256))
		}
		return string(b)
	}
	strs := func() []string {
		switch r.IntN(3) {
		case 0:
			return nil
		case 1:
			return []string{}
		}
		out := make([]string, r.IntN(4)+1)
		for i := range out {
			out[i] = str()
		}
		return out
	}
	for range 5000 {
		e := &event.Event{
			Time: time.Unix(r.Int64N(1<<34)-1<<33, r.Int64N(1e9)).In(time.FixedZone("z", r.IntN(50000)-25000)),
			Type: event.Type(str()), Source: str(), Protocol: str(), Host: str(), AgentID: str(), ChainID: str(),
			Seq: r.Uint64(), DBUser: str(), Database: str(), Application: str(), ClientAddr: str(),
			ServerAddr: str(), SessionID: str(), BackendPID: int32(r.Uint32()), TLS: r.IntN(2) == 0,
			Statement: str(), StatementTruncated: r.IntN(2) == 0, Params: strs(), Fingerprint: str(),
			Kind: str(), Tables: strs(), Rows: r.Int64() - 1<<62, DurationUS: r.Int64(),
			Error: str(), ErrorMessage: str(), Decision: str(), Rule: str(), PIIColumns: strs(),
			MaskedColumns: strs(), ApprovalID: str(), Lost: r.Uint64() >> r.IntN(64), Detail: str(),
			Signature: str(), KeyID: str(), PrevHash: str(), Hash: str(),
		}
		if r.IntN(2) == 0 {
			uid := int32(r.Uint32())
			e.Process = &event.Process{PID: int32(r.IntN(3)), Comm: str(), Exe: str(), ContainerID: str(), Pod: str(), Namespace: str(), ServiceAccount: str()}
			if r.IntN(2) == 0 {
				e.Process.UID = &uid
			}
		}
		if r.IntN(2) == 0 {
			e.Identity = &event.Identity{Issuer: str(), Subject: str(), Email: str(), Groups: strs()}
		}
		checkSame(t, e)
	}
}

func FuzzAppendCanonical(f *testing.F) {
	for _, s := range nasty {
		f.Add(s, s, int64(0), uint64(1))
	}
	f.Fuzz(func(t *testing.T, a, b string, nanos int64, seq uint64) {
		e := stmt(1)
		e.Statement, e.DBUser, e.Tables = a, b, []string{a, b}
		e.Time = time.Unix(0, nanos)
		e.Seq = seq
		checkSame(t, e)
	})
}
