package enforce

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/vigil-db/vigil/pkg/approval"
	"github.com/vigil-db/vigil/pkg/pgwire"
	"github.com/vigil-db/vigil/pkg/policy"
	"github.com/vigil-db/vigil/pkg/sqlparse"
)

// A Query that a rule sends to require_approval becomes an approval request, and so does
// each Bind of such a statement sent with the extended protocol (its Parse goes to the
// server, which only prepares it: what runs is a portal, and a portal is the text with its
// parameters, which the request and its grant are bound to). With a grant already issued
// for exactly this statement and requester it runs, spending a use. Without one, the rule's
// hold decides: zero refuses it at once naming the request (the client runs it again once
// approved); otherwise the client gets a NOTICE naming the request and the session waits
// here, in fromClient, for the decision. Waiting in fromClient holds back the session's
// later requests, which the protocol answers in order anyway, and no other session. The
// outcome is either the statement forwarded or the usual refusal path (refusedSQL to the
// server in place of the Query or the Bind, the proxy's error to the client) with one of:
//
//	42501 denied by an approver, or refused at once
//	57014 the hold timed out, or the client cancelled (CancelRequest), which withdraws it
//	57P01 the agent is stopping; the request stays pending for a retry
//	58030 the request could not be recorded

var errClientCancel = errors.New("the client cancelled the statement")

// errClientGone ends a hold whose client closed its connection.
var errClientGone = errors.New("the client closed its connection")

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

// approve settles a require_approval statement st: a Query (blocked by decide, b nil) or
// the Bind b of prepared statement stmtName. It may wait. The result is allowed or refused.
func (ss *session) approve(st *stmt, b *pgproto3.Bind, stmtName string) (*stmt, error) {
	store := ss.srv.cfg.Approvals
	if store == nil {
		return st, nil
	}
	if f, bad := ss.encodingRefusal(st.text, st.dec.Info); bad {
		return refused(st, "", f), nil
	}
	req := approval.Statement{
		Requester: ss.requester(), DBUser: ss.user, Database: ss.database,
		Text: st.text, Display: sqlparse.RedactSecrets(st.text), Rule: st.dec.Rule, SessionID: ss.id,
	}
	if b != nil {
		// Copied: the message's buffer is the reader's, and the hold outlives it.
		req.Params = make([][]byte, len(b.Parameters))
		for i, p := range b.Parameters {
			if p != nil {
				req.Params[i] = append([]byte{}, p...)
			}
		}
		req.Formats = slices.Clone(b.ParameterFormatCodes)
		if ss.srv.cfg.RecordParams {
			// Approvers see what they approve, as the trail would record it.
			oids, _ := ss.paramTypes.Load(stmtName)
			types, _ := oids.([]uint32)
			if len(types) != len(req.Params) {
				types = nil
			}
			req.ShownParams = pgwire.FormatParams(req.Params, req.Formats, types)
		}
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
	stopWatch := ss.watchHangup(withdraw)
	held := ss.hold(ctx, st, req, r.ID, terms.Hold)
	stopWatch()
	return held, nil
}

// watchHangup withdraws a hold (cancelling with errClientGone) when the client's connection
// ends while fromClient, its only reader, waits: a statement whose client left must not run
// unattended once approved. A client that sends more meanwhile is no longer watched (its
// data stays buffered for fromClient). The returned func stops the watch before fromClient
// reads again.
func (ss *session) watchHangup(withdraw context.CancelCauseFunc) (stop func()) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		// Past the held message itself, which may still sit in the buffer.
		_, err := ss.cr.r.Peek(ss.cr.pending + 1)
		if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) && !errors.Is(err, bufio.ErrBufferFull) {
			withdraw(errClientGone)
		}
	}()
	return func() {
		ss.deadlineMu.Lock()
		defer ss.deadlineMu.Unlock()
		_ = ss.client.SetReadDeadline(time.Unix(1, 0))
		<-done
		if !ss.serverDone {
			_ = ss.client.SetReadDeadline(time.Time{})
		}
	}
}

// hold waits for the decision on request id until ctx ends (the hold's timeout, a client
// cancel, the proxy's shutdown). If no approval channel could be told of the request, the
// client hears of it in a second NOTICE, and the hold goes on: the CLI can still decide.
func (ss *session) hold(ctx context.Context, st *stmt, req approval.Statement, id string, d time.Duration) *stmt {
	store := ss.srv.cfg.Approvals
	type waited struct {
		r   approval.Request
		err error
	}
	decided := make(chan waited, 1)
	go func() {
		r, err := store.Wait(ctx, id)
		decided <- waited{r, err}
	}()
	delivery := store.Delivery(id)
	var w waited
	for waiting := true; waiting; {
		select {
		case w = <-decided:
			waiting = false
		case err := <-delivery:
			delivery = nil
			if err != nil {
				msg := fmt.Sprintf("Vigil: the approval could not be requested from approvers (%v); request %s can still be approved with: vigil approvals approve %s", err, id, id)
				if nerr := ss.notice(msg); nerr != nil {
					ss.srv.log.Warn("telling a held client its approval was not requested", "session_id", ss.id, "err", nerr)
				}
			}
		}
	}
	r, err := w.r, w.err
	switch {
	case err == nil:
	case errors.Is(context.Cause(ctx), errClientCancel):
		r, err = store.Withdraw(id, approval.StatusWithdrawn, "withdrawn: the client cancelled the statement")
	case errors.Is(context.Cause(ctx), errClientGone):
		r, err = store.Withdraw(id, approval.StatusWithdrawn, "withdrawn: the client closed its connection while the statement was held")
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
	c.blocked, c.refusal, c.approvalID, c.perBind = false, errorFields{}, id, false
	return &c
}

func refused(st *stmt, id string, f errorFields) *stmt {
	c := *st
	c.blocked, c.refusal, c.approvalID, c.perBind = true, f, id, false
	return &c
}

// perBind turns a require_approval Parse into one the server may prepare: each Bind of it
// is then approved (or refused) with its parameters. Without approvals, or when the text
// cannot be judged in the session's encoding, it stays refused at the Parse.
func (ss *session) perBind(st *stmt) *stmt {
	if st.dec.Action != policy.ActionRequireApproval || ss.srv.cfg.Approvals == nil {
		return st
	}
	if _, bad := ss.encodingRefusal(st.text, st.dec.Info); bad {
		return st
	}
	c := *st
	c.blocked, c.refusal, c.perBind = false, errorFields{}, true
	return &c
}

// refuseBind writes, in place of a refused Bind, a named Parse of refusedSQL: the server fails
// it at once with a syntax error (the name is never stored, nor the unnamed statement
// dropped), where it would have failed the Bind, and then skips to Sync as after a failed
// Bind; the proxy swaps the error for the refusal.
func (ss *session) refuseBind() error {
	ss.scratch, _ = beginMsg(ss.scratch[:0], 'P')
	ss.scratch = append(ss.scratch, "vigil_refused"...)
	ss.scratch = append(append(append(ss.scratch, 0), refusedSQL...), 0)
	ss.scratch = append(ss.scratch, 0, 0)
	ss.scratch = finishMsg(ss.scratch, 0)
	_, err := ss.sw.Write(ss.scratch)
	return err
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
