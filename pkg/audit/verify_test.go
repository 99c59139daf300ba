package audit

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vigil-db/vigil/pkg/event"
	"github.com/vigil-db/vigil/pkg/store/local"
)

// rewriteLines edits the store's only segment line by line, as an attacker with the
// files would.
func rewriteLines(t *testing.T, dir string, edit func([]string) []string) {
	t.Helper()
	paths, _ := filepath.Glob(filepath.Join(dir, "*.jsonl"))
	if len(paths) != 1 {
		t.Fatalf("want one segment, have %v", paths)
	}
	data, err := os.ReadFile(paths[0])
	if err != nil {
		t.Fatal(err)
	}
	lines := edit(strings.Split(strings.TrimSuffix(string(data), "\n"), "\n"))
	if err := os.WriteFile(paths[0], []byte(strings.Join(lines, "\n")+"\n"), 0o640); err != nil {
		t.Fatal(err)
	}
}

func decode(t *testing.T, line string) *event.Event {
	t.Helper()
	e := new(event.Event)
	if err := json.Unmarshal([]byte(line), e); err != nil {
		t.Fatal(err)
	}
	return e
}

func encode(t *testing.T, e *event.Event) string {
	t.Helper()
	b, err := e.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// rehash makes an edited event consistent with itself, as a careful attacker would.
func rehash(t *testing.T, e *event.Event) {
	c, err := e.Canonical()
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(c)
	e.Hash = hex.EncodeToString(sum[:])
}

// firstStatement is the index of the first statement in lines from index from on.
func firstStatement(t *testing.T, lines []string, from int) int {
	for i := from; i < len(lines); i++ {
		if decode(t, lines[i]).Type == event.TypeStatement {
			return i
		}
	}
	t.Fatal("no statement")
	return 0
}

func TestVerifyDetectsTampering(t *testing.T) {
	// The trail: seqs 1..N with anchors after each batch; lines[i] is seq i+1.
	const n = 40
	tests := []struct {
		name     string
		edit     func(t *testing.T, lines []string) []string
		wantKind Kind
		wantSeq  func(lines []string) uint64 // nil: seq 10
	}{
		{"delete one", func(t *testing.T, l []string) []string { return append(l[:9:9], l[10:]...) }, KindMissing, nil},
		{"delete a range", func(t *testing.T, l []string) []string { return append(l[:9:9], l[14:]...) }, KindMissing, nil},
		{"alter", func(t *testing.T, l []string) []string {
			e := decode(t, l[9])
			e.DBUser = "mallory"
			l[9] = encode(t, e)
			return l
		}, KindAltered, nil},
		{"alter and rehash", func(t *testing.T, l []string) []string {
			e := decode(t, l[9])
			e.Statement = "SELECT 1"
			rehash(t, e)
			l[9] = encode(t, e)
			return l
		}, KindBrokenLink, func([]string) uint64 { return 11 }},
		{"replace with a forged chain to the end", func(t *testing.T, l []string) []string {
			// Rewrites the first statement from seq 10 on and re-links everything after it:
			// only signatures can tell.
			k := firstStatement(t, l, 9)
			prev := decode(t, l[k-1]).Hash
			for i := k; i < len(l); i++ {
				e := decode(t, l[i])
				if i == k {
					e.Statement = "SELECT 1"
				}
				e.PrevHash = prev
				rehash(t, e)
				prev = e.Hash
				l[i] = encode(t, e)
			}
			return l
		}, KindBadSignature, func(l []string) uint64 {
			for i := firstStatement(t, l, 9); i < len(l); i++ {
				if e := decode(t, l[i]); e.Type == event.TypeAnchor {
					return e.Seq
				}
			}
			return 0
		}},
		{"reorder", func(t *testing.T, l []string) []string {
			l[9], l[10] = l[10], l[9]
			return l
		}, KindReordered, nil},
		{"duplicate", func(t *testing.T, l []string) []string {
			return append(l[:10:10], l[9:]...)
		}, KindDuplicate, nil},
		{"duplicate later", func(t *testing.T, l []string) []string {
			return append(l[:20:20], append([]string{l[9]}, l[20:]...)...)
		}, KindDuplicate, nil},
		{"truncate tail", func(t *testing.T, l []string) []string { return l[:len(l)-5] }, KindTruncated,
			func(l []string) uint64 { return uint64(len(l) - 4) }},
		{"replace the last event", func(t *testing.T, l []string) []string {
			last := len(l) - 1
			e := decode(t, l[last])
			e.Detail = "x"
			rehash(t, e)
			l[last] = encode(t, e)
			return l
		}, KindHeadMismatch, func(l []string) uint64 { return uint64(len(l)) }},
		{"bad anchor signature", func(t *testing.T, l []string) []string {
			for i := range l {
				if e := decode(t, l[i]); e.Type == event.TypeAnchor {
					e.Signature = strings.Repeat("ab", 64)
					rehash(t, e) // and the links after it are left broken
					l[i] = encode(t, e)
					return l
				}
			}
			t.Fatal("no anchor")
			return l
		}, KindBadSignature, func(l []string) uint64 {
			for i := range l {
				if e := decode(t, l[i]); e.Type == event.TypeAnchor {
					return e.Seq
				}
			}
			return 0
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, Config{BatchSize: 8, BatchWait: -1, AnchorInterval: -1}, local.Options{})
			for i := range n {
				e.tr.Emit(stmt(i))
			}
			e.start()
			e.stop()
			requireOK(t, e.verify())
			var orig []string
			rewriteLines(t, e.storeDir, func(l []string) []string {
				orig = append([]string(nil), l...)
				return tt.edit(t, l)
			})
			want := uint64(10)
			if tt.wantSeq != nil {
				want = tt.wantSeq(orig)
			}
			rep := e.verify()
			if rep.OK() {
				t.Fatal("tampering not detected")
			}
			found := false
			for _, p := range rep.Problems {
				if p.Kind == tt.wantKind && p.Seq == want && !p.Warning {
					found = true
				}
			}
			if !found {
				for _, p := range rep.Problems {
					t.Log(p)
				}
				t.Fatalf("want %s at seq %d", tt.wantKind, want)
			}
		})
	}
}

func TestVerifyWithoutKeyOrHead(t *testing.T) {
	e := newEnv(t, Config{}, local.Options{})
	e.start()
	e.tr.Emit(stmt(1))
	e.stop()
	r, err := local.Open(e.storeDir, local.Options{ReadOnly: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := Verify(t.Context(), r, Trust{})
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[Kind]bool{}
	for _, p := range rep.Problems {
		kinds[p.Kind] = true
	}
	if !rep.OK() || !kinds[KindNoKey] || !kinds[KindNoHead] {
		t.Fatalf("want OK with no_key and no_head warnings, got %v", rep.Problems)
	}
}

func TestSubtract(t *testing.T) {
	tests := []struct {
		r     seqRange
		cover []seqRange
		want  []seqRange
	}{
		{seqRange{5, 10}, nil, []seqRange{{5, 10}}},
		{seqRange{5, 10}, []seqRange{{1, 20}}, nil},
		{seqRange{5, 10}, []seqRange{{7, 8}}, []seqRange{{5, 6}, {9, 10}}},
		{seqRange{5, 10}, []seqRange{{1, 5}, {10, 12}}, []seqRange{{6, 9}}},
		{seqRange{5, 10}, []seqRange{{11, 12}}, []seqRange{{5, 10}}},
	}
	for _, tt := range tests {
		got := subtract(tt.r, tt.cover)
		if len(got) != len(tt.want) {
			t.Fatalf("subtract(%v, %v) = %v, want %v", tt.r, tt.cover, got, tt.want)
		}
		for i := range got {
			if got[i] != tt.want[i] {
				t.Fatalf("subtract(%v, %v) = %v, want %v", tt.r, tt.cover, got, tt.want)
			}
		}
	}
}

func TestVerifyHead(t *testing.T) {
	tests := []struct {
		name     string
		edit     func(h *Head, key ed25519.PrivateKey, lines []string) ([]string, *Head)
		wantKind Kind
		wantOK   bool
	}{
		{"forged head", func(h *Head, _ ed25519.PrivateKey, l []string) ([]string, *Head) {
			h.Seq-- // an attacker hiding the last event must change the head too
			return l[:len(l)-1], h
		}, KindBadHead, false},
		{"head from another agent", func(h *Head, key ed25519.PrivateKey, l []string) ([]string, *Head) {
			h.AgentID = "other"
			h.sign(key)
			return l, h
		}, KindTruncated, false},
		{"events after the head and the last anchor", func(h *Head, key ed25519.PrivateKey, l []string) ([]string, *Head) {
			// A crash after a store write, before the head and the final anchor: allowed, but
			// the events after the signature are only a warning's worth of protected.
			l = l[:len(l)-1] // the final anchor
			prev := decode(t, l[len(l)-4])
			h.Seq, h.Hash = prev.Seq, prev.Hash
			h.sign(key)
			return l, h
		}, KindUnsigned, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, Config{AnchorInterval: time.Hour}, local.Options{})
			e.start()
			for i := range 10 {
				e.tr.Emit(stmt(i))
			}
			e.stop()
			key, err := LoadOrCreateKey(e.stateDir)
			if err != nil {
				t.Fatal(err)
			}
			h, err := ReadHead(filepath.Join(e.stateDir, HeadFile))
			if err != nil {
				t.Fatal(err)
			}
			var newHead *Head
			rewriteLines(t, e.storeDir, func(l []string) []string {
				var out []string
				out, newHead = tt.edit(h, key, l)
				return out
			})
			if err := writeHead(filepath.Join(e.stateDir, HeadFile), newHead); err != nil {
				t.Fatal(err)
			}
			rep := e.verify()
			if rep.OK() != tt.wantOK {
				t.Fatalf("OK = %v: %v", rep.OK(), rep.Problems)
			}
			if !slices.ContainsFunc(rep.Problems, func(p Problem) bool { return p.Kind == tt.wantKind }) {
				t.Fatalf("want %s, got %v", tt.wantKind, rep.Problems)
			}
		})
	}
}
