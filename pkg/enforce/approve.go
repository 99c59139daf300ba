package enforce

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/vigil-db/vigil/pkg/approval"
	"github.com/vigil-db/vigil/pkg/sqlparse"
)

// A Query that a rule sends to require_approval becomes an approval request. With a grant
// already issued for exactly this statement and requester it runs, spending a use. Without
// one, the rule's hold decides: zero refuses it at once naming the request (the client runs
// it again once approved); otherwise the client gets a NOTICE naming the request and the
// session waits here, in fromClient, for the decision. Waiting in fromClient holds back the
// session's later requests, which the protocol answers in order anyway, and no other
// session. The outcome is either the statement forwarded or the usual refusal path
// (refusedSQL to the server, the proxy's error to the client) with one of:
//
//	42501 denied by an approver, or refused at once
//	57014 the hold timed out, or the client cancelled (CancelRequest), which withdraws it
//	57P01 the agent is stopping; the request stays pending for a retry
//	58030 the request could not be recorded

var errClientCancel = errors.New("the client cancelled the statement")

// requester names the session's principal for approvals: the verified identity when
// there is one, else the database user.
func (ss *session) requester() string {
	if id := ss.principal.Identity; id != nil {
		if id.Email != "" {
			return id.Email
		}
		if id.Subject != "" {
			return "oidc:" + id.Subject
		}
	}
	return "db:" + ss.user
}

// approve settles a require_approval Query st (blocked by decide); it may wait.
func (ss *session) approve(st *stmt) (*stmt, error) {
	store := ss.srv.cfg.Approvals
	if store == nil {
		return st, nil
	}
	if _, bad := ss.encodingRefusal(st.text, st.dec.Info); bad {
		return st, nil
	}
	req := approval.Statement{
		Requester: ss.requester(), DBUser: ss.user, Database: ss.database,
		Text: st.text, Display: sqlparse.RedactSecrets(st.text), Rule: st.dec.Rule, SessionID: ss.id,
	}
	if ss.principal.Process != nil {
		req.RequesterUID = ss.principal.Process.UID
	}
	if st.dec.Info != nil {
		req.Fingerprint = st.dec.Info.Fingerprint
	}
	var terms approval.Terms
	if a := st.dec.Approval; a != nil {
		terms = approval.Terms{Hold: a.Hold, Approvers: a.Approvers, Required: a.Required, Expiry: a.Expiry, Uses: a.Uses}
	}
	if r, ok, err := store.Use(req); err != nil {
		return ss.unrecorded(st, err), nil
	} else if ok {
		return allowed(st, r.ID), nil
	}
	r, _, err := store.Submit(req, terms)
	if err != nil {
		return ss.unrecorded(st, err), nil
	}
	approve := "vigil approvals approve " + r.ID
	if terms.Hold <= 0 {
		return refused(st, r.ID, errorFields{"42501",
			fmt.Sprintf("Vigil: statement needs an approval under policy rule %s%s: request %s", quoteRule(st.dec.Rule), suffix(st.dec.Message), r.ID),
			fmt.Sprintf("Once approved (%s), run the same statement again: it runs under the grant.", approve)}), nil
	}
	// A cancel withdraws the request from the moment the client can know of it.
	ctx, withdraw := context.WithCancelCause(ss.context())
	defer withdraw(nil)
	ctx, stop := context.WithTimeout(ctx, terms.Hold)
	defer stop()
	ss.srv.holds.Store(ss.key, withdraw)
	defer ss.srv.holds.Delete(ss.key)
	// Earlier requests of the batch go to the server now: their answers are not held.
	if err := ss.sw.Flush(); err != nil {
		return nil, fmt.Errorf("writing to upstream: %w", err)
	}
	if err := ss.notice(fmt.Sprintf("Vigil: statement held for approval %s under rule %s; approve with: %s", r.ID, quoteRule(st.dec.Rule), approve)); err != nil {
		return nil, err
	}
	store.Note(r.ID, "notified", fmt.Sprintf("notified: the client was told to wait up to %s", terms.Hold))
	return ss.hold(ctx, st, req, r.ID, terms.Hold), nil
}

// hold waits for the decision on request id until ctx ends (the hold's timeout, a client
// cancel, the proxy's shutdown).
func (ss *session) hold(ctx context.Context, st *stmt, req approval.Statement, id string, d time.Duration) *stmt {
	store := ss.srv.cfg.Approvals
	r, err := store.Wait(ctx, id)
	switch {
	case err == nil:
	case errors.Is(context.Cause(ctx), errClientCancel):
		r, err = store.Withdraw(id, approval.StatusWithdrawn, "withdrawn: the client cancelled the statement")
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		r, err = store.Withdraw(id, approval.StatusExpired, fmt.Sprintf("expired: no decision within the %s hold", d))
	default:
		// The agent is stopping: the request stays, for a retry through another agent
		// process once approved.
		return refused(st, id, errorFields{"57P01",
			"Vigil: the proxy is shutting down while statement waits for approval " + id,
			"The request stays pending: once approved, run the statement again."})
	}
	if err != nil {
		return ss.unrecorded(st, err)
	}
	switch r.Status {
	case approval.StatusApproved:
		u, ok, err := store.Use(req)
		if err != nil {
			return ss.unrecorded(st, err)
		}
		if ok {
			return allowed(st, u.ID)
		}
		// Its grant failed verification on use: the store recorded why.
		r, _ = store.Get(id)
		return refused(st, id, errorFields{"42501", "Vigil: the grant of approval " + id + " was refused: " + r.Detail, ""})
	case approval.StatusDenied:
		msg := "Vigil: approval " + id + " was denied"
		if r.Denial != nil {
			msg += " by " + r.Denial.By + suffix(r.Denial.Reason)
		}
		return refused(st, id, errorFields{"42501", msg, "The statement did not run."})
	case approval.StatusWithdrawn:
		return refused(st, id, errorFields{"57014", "canceling statement due to user request (Vigil: approval request " + id + " withdrawn)", ""})
	default:
		return refused(st, id, errorFields{"57014",
			fmt.Sprintf("Vigil: no approval within %s for request %s (%s)", d, id, r.Status),
			"The statement did not run; run it again to file a new request."})
	}
}

// unrecorded refuses a statement whose approval could not be looked up or recorded.
func (ss *session) unrecorded(st *stmt, err error) *stmt {
	ss.srv.log.Error("approval store", "session_id", ss.id, "err", err)
	return refused(st, "", errorFields{"58030", "Vigil: the approval request could not be recorded: " + err.Error(), ""})
}

func allowed(st *stmt, id string) *stmt {
	c := *st
	c.blocked, c.refusal, c.approvalID = false, errorFields{}, id
	return &c
}

func refused(st *stmt, id string, f errorFields) *stmt {
	c := *st
	c.blocked, c.refusal, c.approvalID = true, f, id
	return &c
}

// notice writes a NoticeResponse to the client from fromClient, taking the client writer
// from fromServer, which releases it whenever it waits for the server.
func (ss *session) notice(text string) error {
	msg, err := encode(nil, (*pgproto3.NoticeResponse)(errorMsg("NOTICE", "01000", text, "")))
	if err != nil {
		return err
	}
	ss.cwMu.Lock()
	defer ss.cwMu.Unlock()
	if _, err := ss.cw.Write(msg); err != nil {
		return fmt.Errorf("writing to client: %w", err)
	}
	if err := ss.cw.Flush(); err != nil {
		return fmt.Errorf("writing to client: %w", err)
	}
	return nil
}
