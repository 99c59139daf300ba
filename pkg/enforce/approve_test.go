package enforce

import (
	"context"
	"crypto/ed25519"
	"errors"
	"io"
	"log/slog"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/vigil-db/vigil/internal/testpg"
	"github.com/vigil-db/vigil/pkg/approval"
	"github.com/vigil-db/vigil/pkg/event"
	"github.com/vigil-db/vigil/pkg/policy"
)

// approvalHarness is a proxy whose policy holds DELETEs on accounts for 10s and refuses
// UPDATEs of accounts at once, both for an approval, with a store approvers decide in.
func approvalHarness(t *testing.T) (*harness, *approval.Store) {
	t.Helper()
	pg := testpg.Start(t)
	if _, err := pg.Psql("postgres", schemaSQL); err != nil {
		t.Fatal(err)
	}
	p := policy.Default()
	p.Rules = append([]policy.Rule{
		{Name: "held-delete", Match: policy.Match{Commands: []string{"DELETE"}, Tables: []string{"accounts"}},
			Action: policy.ActionRequireApproval, Approval: &policy.Approval{Hold: 10 * time.Second}},
		{Name: "refused-update", Match: policy.Match{Commands: []string{"UPDATE"}, Tables: []string{"accounts"}},
			Action: policy.ActionRequireApproval},
	}, p.Rules...)
	engine, err := policy.NewEngine(p)
	if err != nil {
		t.Fatal(err)
	}
	_, key, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	var store *approval.Store
	h := startWith(t, pg, engine, recordParams, func(c *Config) {
		store, err = approval.Open(approval.Options{Dir: t.TempDir(), Key: key, Sink: discardSink{},
			Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
		if err != nil {
			t.Fatal(err)
		}
		c.Approvals = store
	})
	return h, store
}

type discardSink struct{}

func (discardSink) Emit(*event.Event) {}

// pendingRequest waits for the pending request of statement text with these parameters.
func pendingRequest(t *testing.T, store *approval.Store, text string, params ...string) approval.Request {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		for _, r := range store.List() {
			if r.Status == approval.StatusPending && r.Statement == text && slices.Equal(r.Params, params) {
				return r
			}
		}
	}
	t.Fatalf("no pending request for %s %v in %+v", text, params, store.List())
	return approval.Request{}
}

var bob = approval.Approver{Principal: "os:bob"}

// TestExtendedProtocolApprovals: statements sent with Parse/Bind/Execute (pgx, in each of
// its extended-protocol modes) are held or refused as approval requests bound to the text
// and the bound parameters: a held one runs once approved, a denied one fails its
// transaction, a grant for one parameter does not run the statement with another, and is
// spent by use.
func TestExtendedProtocolApprovals(t *testing.T) {
	h, store := approvalHarness(t)
	ctx := context.Background()
	c := h.connect(t, "analyst")
	notices := make(chan string, 16)
	c2, err := pgx.ConnectConfig(ctx, func() *pgx.ConnConfig {
		cfg, err := pgx.ParseConfig(h.dsn("analyst", "postgres"))
		if err != nil {
			t.Fatal(err)
		}
		cfg.OnNotice = func(_ *pgconn.PgConn, n *pgconn.Notice) { notices <- n.Message }
		return cfg
	}())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c2.Close(context.Background()) })
	count := func(id int) int {
		t.Helper()
		var n int
		if err := c.QueryRow(ctx, "SELECT count(*) FROM accounts WHERE id = $1", id).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}

	const del = "DELETE FROM accounts WHERE id = $1"
	for i, mode := range []pgx.QueryExecMode{pgx.QueryExecModeCacheStatement, pgx.QueryExecModeDescribeExec, pgx.QueryExecModeExec} {
		id := i + 1
		// Held, with a NOTICE naming the request; approved: it runs.
		done := make(chan error, 1)
		go func() { _, err := c2.Exec(ctx, del, mode, id); done <- err }()
		r := pendingRequest(t, store, del, itoa(id))
		if r.Rule != "held-delete" || r.Requester != "db:analyst" {
			t.Errorf("mode %v: request %+v", mode, r)
		}
		select {
		case n := <-notices:
			if !strings.Contains(n, "held for approval "+r.ID) {
				t.Errorf("mode %v: notice %q", mode, n)
			}
		case <-time.After(5 * time.Second):
			t.Errorf("mode %v: no NOTICE for the hold", mode)
		}
		if _, err := store.Approve(r.ID, bob, "cleanup"); err != nil {
			t.Fatal(err)
		}
		if err := <-done; err != nil {
			t.Fatalf("mode %v: approved DELETE: %v", mode, err)
		}
		if count(id) != 0 {
			t.Errorf("mode %v: row %d still there after the approved DELETE", mode, id)
		}
		e := h.log.Find(t, del)
		if e.ApprovalID != r.ID || e.Error != "" || !slices.Equal(e.Params, []string{itoa(id)}) {
			t.Errorf("mode %v: event %+v", mode, e)
		}
		h.log.Reset()
	}

	// Denied inside a transaction: the statement fails it, the row stays.
	tx, err := c2.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { _, err := tx.Exec(ctx, del, 7); done <- err }()
	r := pendingRequest(t, store, del, "7")
	if _, err := store.Deny(r.ID, bob, "not that one"); err != nil {
		t.Fatal(err)
	}
	if err := <-done; pgCode(err) != "42501" || !strings.Contains(err.Error(), "denied by os:bob: not that one") {
		t.Errorf("denied DELETE: %v", err)
	}
	if st := c2.PgConn().TxStatus(); st != 'E' {
		t.Errorf("tx status after a denied statement = %c, want E", st)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if count(7) != 1 {
		t.Error("row 7 gone after a denied DELETE")
	}
	<-notices

	// Refused at once naming the request; approved for $1 = 5, it does not run for 6, runs
	// once for 5, and a second run is a replay.
	const upd = "UPDATE accounts SET balance = 0 WHERE id = $1"
	_, err = c2.Exec(ctx, upd, 5)
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.Code != "42501" || !strings.Contains(pe.Message, "request ap-") {
		t.Fatalf("refused-at-once UPDATE: %v", err)
	}
	five := pendingRequest(t, store, upd, "5")
	if !strings.Contains(pe.Message, five.ID) {
		t.Errorf("refusal %q does not name %s", pe.Message, five.ID)
	}
	if _, err := store.Approve(five.ID, bob, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := c2.Exec(ctx, upd, 6); pgCode(err) != "42501" || strings.Contains(err.Error(), five.ID) {
		t.Errorf("UPDATE with another parameter under the grant for 5: %v", err)
	}
	if _, err := c2.Exec(ctx, upd, 5); err != nil {
		t.Fatalf("UPDATE under its grant: %v", err)
	}
	var bal int
	if err := c.QueryRow(ctx, "SELECT balance FROM accounts WHERE id = 5").Scan(&bal); err != nil || bal != 0 {
		t.Errorf("balance of 5 = %d %v after the approved UPDATE", bal, err)
	}
	if _, err := c2.Exec(ctx, upd, 5); pgCode(err) != "42501" || strings.Contains(err.Error(), five.ID) {
		t.Errorf("second UPDATE under a spent grant: %v", err)
	}
	// The session goes on.
	if count(8) != 1 {
		t.Error("row 8 missing")
	}
}

func itoa(n int) string { return stringInt(int32(n)) }

// TestHeldClientHangsUp: a client that goes away while its statement is held withdraws the
// request at once; it is not left pending, to run unattended if someone approves it later.
func TestHeldClientHangsUp(t *testing.T) {
	h, store := approvalHarness(t)
	rs := rawDial(t, h.addr, "analyst")
	const sql = "DELETE FROM accounts WHERE id = 1"
	rs.write(wire(t, &pgproto3.Query{String: sql}))
	if _, ok := rs.receiveMsg().(*pgproto3.NoticeResponse); !ok {
		t.Fatal("no NOTICE of the hold")
	}
	r := pendingRequest(t, store, sql)
	rs.c.Close()
	for deadline := time.Now().Add(3 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		got, _ := store.Get(r.ID)
		if got.Status == approval.StatusWithdrawn {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("request %s is %s after its client left", r.ID, got.Status)
		}
	}
	if out, _ := h.pg.Psql("postgres", "SELECT count(*) FROM accounts WHERE id = 1"); out != "1" {
		t.Fatalf("the held DELETE ran: %s", out)
	}
}

// TestHeldPsqlKilled: a client that is killed while its statement is held has its
// request withdrawn within a poll, so approvers are not asked for what nobody waits for,
// and the statement never runs.
func TestHeldPsqlKilled(t *testing.T) {
	h, store := approvalHarness(t)
	ctx := context.Background()
	// psql killed: gone without a Terminate or a CancelRequest (pgx would send one).
	const del = "DELETE FROM accounts WHERE id = 7"
	psql := exec.Command("psql", "-X", "-q", "-c", del, h.dsn("analyst", "postgres"))
	if err := psql.Start(); err != nil {
		t.Fatal(err)
	}
	r := pendingRequest(t, store, del)
	start := time.Now()
	psql.Process.Kill()
	psql.Wait()
	for {
		got, err := store.Get(r.ID)
		if err != nil {
			t.Fatal(err)
		}
		if got.Status == approval.StatusWithdrawn {
			if !strings.Contains(got.Detail, "closed its connection") {
				t.Errorf("withdrawn with detail %q", got.Detail)
			}
			t.Logf("withdrawn %v after the hangup", time.Since(start).Round(time.Millisecond))
			break
		}
		if time.Since(start) > 3*time.Second {
			t.Fatalf("request %s still %s %v after its client hung up (hold is 10s)", r.ID, got.Status, time.Since(start))
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, err := store.Approve(r.ID, bob, "late"); err == nil {
		t.Error("a withdrawn request was approved")
	}
	var n int
	if err := h.connect(t, "analyst").QueryRow(ctx, "SELECT count(*) FROM accounts WHERE id = 7").Scan(&n); err != nil || n != 1 {
		t.Errorf("row 7: %d, %v; want it there", n, err)
	}
}
