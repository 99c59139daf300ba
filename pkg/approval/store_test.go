package approval

import (
	"context"
	"crypto/ed25519"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vigil-db/vigil/pkg/event"
)

func newKey(t *testing.T) ed25519.PrivateKey {
	t.Helper()
	_, k, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func signed(t *testing.T, key ed25519.PrivateKey, now time.Time) Grant {
	t.Helper()
	g := Grant{Version: 1, RequestID: "ap-1", Requester: "db:alice", Database: "app", Fingerprint: "fp",
		StatementSHA256: StatementHash("ALTER TABLE t DROP COLUMN c", nil, nil), Approvers: []string{"os:bob"},
		Issued: now, Expires: now.Add(DefaultExpiry), Uses: 1}
	if err := g.Sign(key, KeyID(key.Public().(ed25519.PublicKey))); err != nil {
		t.Fatal(err)
	}
	return g
}

// TestGrantRefusals: a grant verifies only unaltered, signed by a known key, unexpired, and
// permits only its own requester, database and exact statement.
func TestGrantRefusals(t *testing.T) {
	key, other := newKey(t), newKey(t)
	now := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
	keys := map[string]ed25519.PublicKey{KeyID(key.Public().(ed25519.PublicKey)): key.Public().(ed25519.PublicKey)}
	hash := StatementHash("ALTER TABLE t DROP COLUMN c", nil, nil)
	for _, tc := range []struct {
		name   string
		change func(g *Grant)
		at     time.Time
		// permits checks Permits with these instead of the grant's own.
		requester, database, hash string
		want                      error
	}{
		{name: "valid", want: nil},
		{name: "valid after a JSON round trip of a local time", change: func(g *Grant) { g.Issued = g.Issued.In(time.FixedZone("x", 3600)) }},
		{name: "forged: signed by another key", change: func(g *Grant) {
			kid := g.KeyID
			_ = g.Sign(other, kid)
		}, want: ErrForged},
		{name: "unknown key", change: func(g *Grant) { _ = g.Sign(other, KeyID(other.Public().(ed25519.PublicKey))) }, want: ErrUnknownKey},
		{name: "altered: more uses", change: func(g *Grant) { g.Uses = 100 }, want: ErrForged},
		{name: "altered: later expiry", change: func(g *Grant) { g.Expires = g.Expires.Add(time.Hour) }, want: ErrForged},
		{name: "altered: other statement hash", change: func(g *Grant) { g.StatementSHA256 = StatementHash("DROP TABLE t", nil, nil) }, want: ErrForged},
		{name: "altered: another requester", change: func(g *Grant) { g.Requester = "db:mallory" }, want: ErrForged},
		{name: "altered: approvers", change: func(g *Grant) { g.Approvers = []string{"os:root"} }, want: ErrForged},
		{name: "truncated signature", change: func(g *Grant) { g.Signature = g.Signature[:10] }, want: ErrForged},
		{name: "expired", at: now.Add(DefaultExpiry), want: ErrExpired},
		{name: "other text", hash: StatementHash("ALTER TABLE t DROP COLUMN d", nil, nil), want: ErrOtherStatement},
		{name: "other parameters", hash: StatementHash("ALTER TABLE t DROP COLUMN c", [][]byte{[]byte("1")}, nil), want: ErrOtherStatement},
		{name: "other requester", requester: "db:mallory", want: ErrOtherRequester},
		{name: "other database", database: "other", want: ErrOtherDatabase},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := signed(t, key, now)
			if tc.change != nil {
				tc.change(&g)
			}
			at := now.Add(time.Minute)
			if !tc.at.IsZero() {
				at = tc.at
			}
			err := Verify(g, keys, at)
			if err == nil {
				req, db, h := "db:alice", "app", hash
				if tc.requester != "" {
					req = tc.requester
				}
				if tc.database != "" {
					db = tc.database
				}
				if tc.hash != "" {
					h = tc.hash
				}
				err = g.Permits(req, db, h)
			}
			if !errors.Is(err, tc.want) {
				t.Errorf("got %v, want %v", err, tc.want)
			}
		})
	}
}

// TestStatementHashBindsParameters: the hash tells apart texts, parameters, NULL and
// empty parameters, a text from a shorter text with parameters, and a parameter's bytes in
// text from the same bytes in binary.
func TestStatementHashBindsParameters(t *testing.T) {
	hashes := []string{
		StatementHash("SELECT $1", nil, nil),
		StatementHash("SELECT $1", [][]byte{nil}, nil),
		StatementHash("SELECT $1", [][]byte{{}}, nil),
		StatementHash("SELECT $1", [][]byte{[]byte("1")}, nil),
		StatementHash("SELECT $1", [][]byte{[]byte("2")}, nil),
		StatementHash("SELECT $", [][]byte{[]byte("1")}, nil),
		// The same bytes in binary are another value.
		StatementHash("SELECT $1", [][]byte{[]byte("1")}, []int16{1}),
		StatementHash("SELECT $1, $2", [][]byte{[]byte("1"), []byte("2")}, []int16{0, 1}),
		StatementHash("SELECT $1, $2", [][]byte{[]byte("1"), []byte("2")}, nil),
	}
	// Formats spelled out or left to the defaults hash alike, as the server reads them alike.
	text := [][]byte{[]byte("1"), []byte("2")}
	if a, b, c := StatementHash("SELECT $1, $2", text, nil), StatementHash("SELECT $1, $2", text, []int16{0}), StatementHash("SELECT $1, $2", text, []int16{0, 0}); a != b || b != c {
		t.Errorf("text formats hash differently: %s %s %s", a, b, c)
	}
	if a, b := StatementHash("SELECT $1, $2", text, []int16{1}), StatementHash("SELECT $1, $2", text, []int16{1, 1}); a != b {
		t.Errorf("binary formats hash differently: %s %s", a, b)
	}
	for i := range hashes {
		for j := i + 1; j < len(hashes); j++ {
			if hashes[i] == hashes[j] {
				t.Errorf("hash %d equals hash %d", i, j)
			}
		}
	}
}

type events struct {
	mu   sync.Mutex
	list []event.Event
}

func (s *events) Emit(e *event.Event) {
	s.mu.Lock()
	s.list = append(s.list, *e)
	s.mu.Unlock()
}

func (s *events) details() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, e := range s.list {
		out = append(out, e.Detail)
	}
	return out
}

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

type fixture struct {
	s     *Store
	ev    *events
	clock *clock
	dir   string
	key   ed25519.PrivateKey
}

func newFixture(t *testing.T) *fixture {
	f := &fixture{ev: &events{}, clock: &clock{t: time.Date(2026, 1, 2, 3, 0, 0, 0, time.UTC)}, dir: t.TempDir(), key: newKey(t)}
	f.reopen(t)
	return f
}

func (f *fixture) reopen(t *testing.T) {
	t.Helper()
	s, err := Open(Options{Dir: f.dir, Key: f.key, Sink: f.ev, Now: f.clock.now})
	if err != nil {
		t.Fatal(err)
	}
	f.s = s
}

func uid(n int32) *int32 { return &n }

var drop = Statement{Requester: "db:alice", RequesterUID: uid(1000), DBUser: "alice", Database: "app",
	Text: "ALTER TABLE t DROP COLUMN c", Display: "ALTER TABLE t DROP COLUMN c", Rule: "ddl", SessionID: "s1"}

var (
	bob   = Approver{Principal: "os:bob", UID: uid(1001)}
	carol = Approver{Principal: "os:carol", UID: uid(1002)}
)

// TestApprovalRefusals: every way an approval must not be given is refused and recorded.
func TestApprovalRefusals(t *testing.T) {
	for _, tc := range []struct {
		name  string
		terms Terms
		by    Approver
		want  error
	}{
		{"another identity", Terms{}, bob, nil},
		{"self-approval: same principal", Terms{}, Approver{Principal: "db:alice"}, ErrSelfApproval},
		{"self-approval: same uid", Terms{}, Approver{Principal: "os:alice", UID: uid(1000)}, ErrSelfApproval},
		{"outside the approvers", Terms{Approvers: []string{"os:carol"}}, bob, ErrNotApprover},
		{"among the approvers", Terms{Approvers: []string{"os:carol"}}, carol, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			r, created, err := f.s.Submit(drop, tc.terms)
			if err != nil || !created {
				t.Fatal(created, err)
			}
			got, err := f.s.Approve(r.ID, tc.by, "checked")
			if !errors.Is(err, tc.want) {
				t.Fatalf("approve: %v, want %v", err, tc.want)
			}
			if tc.want == nil {
				if got.Status != StatusApproved || got.Grant == nil {
					t.Fatalf("approved request %+v", got)
				}
				return
			}
			if r, _ := f.s.Get(r.ID); r.Status != StatusPending {
				t.Errorf("status %s after a refused approval, want pending", r.Status)
			}
			if d := f.ev.details(); !strings.Contains(d[len(d)-1], "refused: approval by "+tc.by.Principal) {
				t.Errorf("no refusal event: %q", d)
			}
		})
	}
}

// TestGrantUses: an approved statement runs once (the default), a second use is a replay;
// a grant never serves another statement, requester or database; the use count survives a
// restart; an expired grant is retired.
func TestGrantUses(t *testing.T) {
	f := newFixture(t)
	if _, ok, err := f.s.Use(drop); ok || err != nil {
		t.Fatalf("use before any request: %v %v", ok, err)
	}
	r, _, err := f.s.Submit(drop, Terms{Uses: 2})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := f.s.Use(drop); ok {
		t.Fatal("a pending request was usable")
	}
	again, created, _ := f.s.Submit(drop, Terms{})
	if created || again.ID != r.ID {
		t.Errorf("the same statement again filed %s (created %v), want the pending %s", again.ID, created, r.ID)
	}
	if _, err := f.s.Approve(r.ID, bob, ""); err != nil {
		t.Fatal(err)
	}
	for _, other := range []func(s *Statement){
		func(s *Statement) { s.Text += " CASCADE" },
		func(s *Statement) { s.Params = [][]byte{[]byte("x")} },
		func(s *Statement) { s.Requester = "db:mallory" },
		func(s *Statement) { s.Database = "other" },
	} {
		st := drop
		other(&st)
		if _, ok, _ := f.s.Use(st); ok {
			t.Errorf("the grant served another statement %+v", st)
		}
	}
	if got, ok, err := f.s.Use(drop); !ok || err != nil || got.UsesLeft != 1 {
		t.Fatalf("first use: %+v %v %v", got, ok, err)
	}
	f.reopen(t)
	if got, ok, err := f.s.Use(drop); !ok || err != nil || got.Status != StatusUsed {
		t.Fatalf("second use after a restart: %+v %v %v", got, ok, err)
	}
	if _, ok, _ := f.s.Use(drop); ok {
		t.Fatal("a third use of a two-use grant")
	}
	if d := f.ev.details(); !strings.Contains(d[len(d)-1], ErrReplayed.Error()) {
		t.Errorf("replay not recorded: %q", d)
	}

	r2, _, _ := f.s.Submit(drop, Terms{})
	if r2.ID == r.ID {
		t.Fatal("a used request was reused")
	}
	if _, err := f.s.Approve(r2.ID, bob, ""); err != nil {
		t.Fatal(err)
	}
	f.clock.add(DefaultExpiry)
	if _, ok, _ := f.s.Use(drop); ok {
		t.Fatal("an expired grant was used")
	}
	if got, _ := f.s.Get(r2.ID); got.Status != StatusExpired {
		t.Errorf("expired grant's request is %s", got.Status)
	}
}

// TestAlteredGrantOnDisk: a grant edited in its file (more uses, another statement) no
// longer verifies: it is refused and retired.
func TestAlteredGrantOnDisk(t *testing.T) {
	f := newFixture(t)
	r, _, _ := f.s.Submit(drop, Terms{})
	if _, err := f.s.Approve(r.ID, bob, ""); err != nil {
		t.Fatal(err)
	}
	got, _ := f.s.Get(r.ID)
	got.Grant.Uses, got.UsesLeft = 1000, 1000
	if err := f.s.write(&got); err != nil {
		t.Fatal(err)
	}
	f.reopen(t)
	if _, ok, _ := f.s.Use(drop); ok {
		t.Fatal("an altered grant was used")
	}
	if got, _ := f.s.Get(r.ID); got.Status != StatusRefused || !strings.Contains(got.Detail, ErrForged.Error()) {
		t.Errorf("altered grant's request: %s %q", got.Status, got.Detail)
	}
}

// TestRequiredApprovers: with N required, the grant comes with the N-th distinct approver;
// the same approver twice does not count.
func TestRequiredApprovers(t *testing.T) {
	f := newFixture(t)
	r, _, _ := f.s.Submit(drop, Terms{Required: 2})
	if got, err := f.s.Approve(r.ID, bob, "one"); err != nil || got.Status != StatusPending {
		t.Fatalf("first approval: %s %v", got.Status, err)
	}
	if _, err := f.s.Approve(r.ID, bob, "again"); !errors.Is(err, ErrAlreadyVoted) {
		t.Fatalf("second vote by the same approver: %v", err)
	}
	got, err := f.s.Approve(r.ID, carol, "two")
	if err != nil || got.Status != StatusApproved {
		t.Fatalf("second approver: %s %v", got.Status, err)
	}
	if !slices.Equal(got.Grant.Approvers, []string{"os:bob", "os:carol"}) {
		t.Errorf("grant approvers %v", got.Grant.Approvers)
	}
	if _, err := f.s.Approve(r.ID, Approver{Principal: "os:dave"}, ""); !errors.Is(err, ErrNotPending) {
		t.Errorf("approving a granted request: %v", err)
	}
}

// TestHoldOutcomes: a waiter learns of approval, denial, withdrawal and expiry; a pending
// request survives a restart and can be approved after it.
func TestHoldOutcomes(t *testing.T) {
	for _, tc := range []struct {
		name string
		act  func(f *fixture, id string)
		want Status
	}{
		{"approved", func(f *fixture, id string) { _, _ = f.s.Approve(id, bob, "") }, StatusApproved},
		{"denied", func(f *fixture, id string) { _, _ = f.s.Deny(id, bob, "not now") }, StatusDenied},
		{"withdrawn", func(f *fixture, id string) { _, _ = f.s.Withdraw(id, StatusWithdrawn, "withdrawn: client cancel") }, StatusWithdrawn},
		{"expired", func(f *fixture, id string) { f.clock.add(time.Minute); f.s.Sweep() }, StatusExpired},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			r, _, _ := f.s.Submit(drop, Terms{Hold: time.Minute})
			f.reopen(t)
			done := make(chan Request, 1)
			go func() {
				got, err := f.s.Wait(context.Background(), r.ID)
				if err != nil {
					t.Error(err)
				}
				done <- got
			}()
			tc.act(f, r.ID)
			select {
			case got := <-done:
				if got.Status != tc.want {
					t.Errorf("status %s, want %s", got.Status, tc.want)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("the waiter was not woken")
			}
		})
	}
}

// TestEventsCarryNoGrant: approval events never carry the grant's signature.
func TestEventsCarryNoGrant(t *testing.T) {
	f := newFixture(t)
	r, _, _ := f.s.Submit(drop, Terms{})
	got, err := f.s.Approve(r.ID, bob, "")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := f.s.Use(drop); err != nil {
		t.Fatal(err)
	}
	sig := string(got.Grant.Signature)
	for _, e := range f.ev.list {
		if e.Type != event.TypeApproval || e.ApprovalID != r.ID {
			t.Errorf("event %+v", e)
		}
		if e.Signature != "" || strings.Contains(e.Detail, sig) {
			t.Errorf("a grant signature in an event: %+v", e)
		}
	}
	var steps []string
	for _, d := range f.ev.details() {
		steps = append(steps, strings.Fields(d)[0])
	}
	if want := []string{"requested:", "approved:", "executed:"}; !slices.Equal(steps, want) {
		t.Errorf("steps %q, want %q", steps, want)
	}
}
