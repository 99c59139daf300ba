package enforce

import (
	"slices"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/vigil-db/vigil/pkg/event"
	"github.com/vigil-db/vigil/pkg/mask"
	"github.com/vigil-db/vigil/pkg/policy"
	"github.com/vigil-db/vigil/pkg/sqlparse"
)

// Policy is what the proxy needs from the policy engine (*policy.Engine implements it): a
// decision per statement text, a classification per result column, and the masker that
// applies strategies and runs the value detectors.
type Policy interface {
	Decide(req *policy.Request) policy.Decision
	// Column's raw must be !Decide(req).Mask, and pii and s must depend on the column
	// alone: a session reuses a result's plan for statements judged with the same decision.
	Column(req *policy.Request, schema, table, column string) (pii bool, s mask.Strategy, raw bool)
	Masker() *mask.Masker
	// Strategy masks values that only the detectors recognize.
	Strategy() mask.Strategy
}

// ReplicationPolicy is optionally implemented by a Policy that can allow replication
// connections. Without it (or when it says no) the proxy refuses them: a replication stream
// carries every row of every table and cannot be masked.
type ReplicationPolicy interface {
	AllowReplication(req *policy.Request) bool
}

// refusedSQL replaces a refused statement on its way to the server. It is a syntax error, so
// the server fails it exactly as it would fail a bad statement: inside a transaction block
// the transaction is aborted, in a pipeline everything up to Sync is skipped, and the
// ReadyForQuery that follows carries the server's own transaction status. The proxy then
// swaps the server's error for its own. The comment explains the server log line.
const refusedSQL = "/* statement refused by the Vigil proxy */ vigil_refused"

// stmt is one judged statement text (a Query, a Parse, a FunctionCall). It is immutable once
// built and shared between the two directions of a session.
type stmt struct {
	text    string
	dec     policy.Decision
	blocked bool // refused: the server gets refusedSQL instead
	mask    bool // result values are classified and masked
	// refusal is the client's error for a refused statement.
	refusal errorFields
	// approvalID is the approval request the statement ran under or waits for.
	approvalID string
	// perBind marks a prepared statement that needs an approval: the server prepared it,
	// and each Bind of it is approved with its parameters or refused.
	perBind bool
	// atBind marks a prepared statement whose decision depends on its parameters: each
	// Bind of it is judged with its values (bind.go).
	atBind bool
	// estimateAtBind marks a prepared statement whose decision depends on the planner's
	// estimate, which each Bind asks for with its parameters (of the types paramOIDs, as
	// the Parse declared them; 0: the server infers them).
	estimateAtBind bool
	paramOIDs      []uint32
	// estimate is the planner's estimate the decision rests on (nil: none was asked for);
	// events carry it in their detail.
	estimate *policy.Estimate
}

// errorFields are the parts of an ErrorResponse the proxy writes itself.
type errorFields struct{ code, message, hint string }

// decide judges one statement text for this session, asking the planner first when the
// decision depends on its estimate (a Query: no parameters).
func (ss *session) decide(sql string) *stmt {
	st := ss.judge(sql, nil, nil)
	if st.dec.NeedsEstimate {
		st = ss.judge(sql, nil, ss.estimateFor(st, nil))
	}
	return st
}

// estimateFor asks the planner about st, with a Bind's parameters when b is set.
func (ss *session) estimateFor(st *stmt, b *pgproto3.Bind) *policy.Estimate {
	if st.dec.Info != nil && len(st.dec.Info.Statements) > 1 {
		return &policy.Estimate{Err: "a query of several statements cannot be estimated; send them one by one"}
	}
	if b == nil {
		return ss.srv.cat.estimate(ss, st.text, nil, nil, nil)
	}
	return ss.srv.cat.estimate(ss, st.text, b.Parameters, b.ParameterFormatCodes, st.paramOIDs)
}

// judge decides one statement text with the values bound to its parameters (nil: as
// prepared, or not prepared) and the planner's estimate (nil: not asked).
func (ss *session) judge(sql string, params []sqlparse.Param, est *policy.Estimate) *stmt {
	req := ss.req
	req.SQL, req.Params, req.Estimate = sql, params, est
	if app := ss.app.Load(); app != nil {
		req.Application = *app
	}
	d := ss.srv.policy.Decide(&req)
	st := &stmt{text: sql, dec: d, mask: d.Mask, estimate: est}
	if d.Mask {
		ss.masking.Store(true)
	}
	switch d.Action {
	case policy.ActionBlock:
		st.blocked = true
		st.refusal = errorFields{"42501",
			"Vigil: statement refused by policy rule " + quoteRule(d.Rule) + suffix(d.Message),
			"If you need to run it, ask for an exception to the rule or an approval; the transaction state is as after any failed statement."}
	case policy.ActionRequireApproval:
		st.blocked = true
		hint := "Request an approval for this statement and run it again once it is granted."
		st.refusal = errorFields{"42501",
			"Vigil: statement needs an approval under policy rule " + quoteRule(d.Rule) + suffix(d.Message), hint}
	}
	if !st.blocked {
		if f, bad := ss.encodingRefusal(sql, d.Info); bad {
			st.blocked, st.refusal = true, f
		}
	}
	if !st.blocked && st.mask {
		if f, bad := channelRefusal(sql); bad {
			st.blocked, st.refusal = true, f
			st.dec.Action, st.dec.Rule, st.dec.Message = policy.ActionBlock, "proxy:masked_channel", f.message
		}
	}
	return st
}

// encodingRefusal says why a statement cannot be judged in the session's client encoding.
func (ss *session) encodingRefusal(sql string, info *sqlparse.Info) (errorFields, bool) {
	switch {
	case encodingChange(info):
		// Refused before the server switches: a pipelined statement behind it would be
		// read by the server in the new encoding but judged here in the old one.
		return errorFields{"22023", "Vigil: this client_encoding is not supported through the proxy",
			"Use UTF8 or another encoding in which every byte below 0x80 is ASCII, written as a literal."}, true
	case ss.unsafeEncoding.Load() && !isASCII(sql):
		// In every client-only encoding a byte below 0x80 is the ASCII character, so an
		// all-ASCII text reads the same to the server as here; others cannot be judged.
		return errorFields{"22023", "Vigil: statements with non-ASCII text are refused while client_encoding is a client-only multi-byte encoding",
			"SET client_encoding TO 'UTF8' (the proxy cannot judge such statements in this encoding)."}, true
	}
	return errorFields{}, false
}

// encodingChange reports a statement that would switch client_encoding to an encoding the
// proxy cannot read, or to one it cannot name (not a literal).
func encodingChange(info *sqlparse.Info) bool {
	if info == nil {
		return false
	}
	for i := range info.Statements {
		s := &info.Statements[i]
		if !slices.Contains(s.Variables, "client_encoding") || s.Encoding == "default" {
			continue
		}
		if s.Encoding == "" || isUnsafeClientEncoding("client_encoding", s.Encoding) {
			return true
		}
	}
	return false
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

func quoteRule(r string) string {
	if r == "" {
		return "(default)"
	}
	return `"` + r + `"`
}

func suffix(msg string) string {
	if msg == "" {
		return ""
	}
	return ": " + msg
}

// baseReq fills the session's part of every policy request.
func (ss *session) baseReq() {
	ss.req = policy.Request{
		Protocol: event.ProtocolPostgres, Source: event.SourceProxy,
		DBUser: ss.user, Database: ss.database, Application: ss.application,
		ClientAddr: ss.clientAddr, ServerAddr: ss.serverAddr,
		Groups: ss.principal.Groups, Process: ss.principal.Process, Identity: ss.principal.Identity,
	}
}

func (ss *session) replicationAllowed() bool {
	rp, ok := ss.srv.policy.(ReplicationPolicy)
	if !ok {
		return false
	}
	req := ss.req
	return rp.AllowReplication(&req)
}
