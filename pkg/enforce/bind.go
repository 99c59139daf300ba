package enforce

import (
	"unicode/utf8"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/vigil-db/vigil/pkg/policy"
	"github.com/vigil-db/vigil/pkg/sqlparse"
)

// Some verdicts on a prepared statement depend on what is bound to it: DELETE … WHERE id
// = coalesce($1, id) deletes one row for $1 = 3 and every row for NULL; name LIKE $1 is as
// narrow as its pattern. Judged at Parse the analysis must assume the worst, and a
// statement refused there for such a reason only (sqlparse's Info.BindDependent) would
// refuse the ordinary use of it too. So the Parse goes to the server, which only prepares
// it, and each Bind of it is judged with its values (policy.Request.Params): a Bind that
// leaves the target unrestricted is refused as any refused Bind is (refuseBind: an
// ErrorResponse, the session and its other statements usable), and the Bind's decision is
// what its portal's events record. A value sent in binary format is not NULL but is not
// read either, so a pattern or a boolean in it proves nothing.

// atBind defers the refusal of a Parse whose decision rests on its parameters to its Binds.
func (ss *session) atBind(st *stmt) *stmt {
	if !st.blocked || st.dec.Info == nil || !st.dec.Info.BindDependent() {
		return st
	}
	if st.dec.Action != policy.ActionBlock && st.dec.Action != policy.ActionRequireApproval {
		return st
	}
	if _, bad := ss.encodingRefusal(st.text, st.dec.Info); bad {
		return st
	}
	c := *st
	c.blocked, c.refusal, c.atBind = false, errorFields{}, true
	return &c
}

// decideBound judges the statement text of st (as its Parse declared it) with the values
// of Bind b, asking the planner with them when the decision depends on its estimate.
func (ss *session) decideBound(st *stmt, b *pgproto3.Bind) *stmt {
	params := bindParams(b)
	d := ss.judge(st.text, params, nil)
	if d.dec.NeedsEstimate && !d.blocked {
		d = ss.judge(st.text, params, ss.estimateFor(st, b))
	}
	return d
}

// bindParams is what the classifier can read of a Bind's values.
func bindParams(b *pgproto3.Bind) []sqlparse.Param {
	ps := make([]sqlparse.Param, len(b.Parameters))
	for i, v := range b.Parameters {
		f := int16(0)
		switch {
		case len(b.ParameterFormatCodes) == 1:
			f = b.ParameterFormatCodes[0]
		case i < len(b.ParameterFormatCodes):
			f = b.ParameterFormatCodes[i]
		}
		switch {
		case v == nil:
			ps[i] = sqlparse.Param{Null: true}
		case f == 0 && utf8.Valid(v):
			ps[i] = sqlparse.Param{Known: true, Text: string(v)}
		}
	}
	return ps
}
