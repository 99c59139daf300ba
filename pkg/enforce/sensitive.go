package enforce

import (
	"github.com/vigil-db/vigil/pkg/mask"
	"github.com/vigil-db/vigil/pkg/policy"
)

// SensitivePolicy is optionally implemented by a Policy (*policy.Engine does) that knows
// PII columns by name and configures discovery. Without it the proxy knows only what
// Column says.
type SensitivePolicy interface {
	// ColumnSensitivity says whether a column is PII by its name (the policy's columns
	// with Source policy, then the name dictionary).
	ColumnSensitivity(schema, table, column string) (policy.Sensitivity, bool)
	// CategoryStrategy masks what a detector (or dictionary category) found.
	CategoryStrategy(category string) mask.Strategy
	Discovery() policy.Discovery
}

// columnPII is the one place that says whether a table column holds PII, how it is masked,
// and whether req may read it raw. Result masking, COPY and every other channel ask it, so
// a new source of knowledge about sensitive columns is added here and nowhere else.
func (ss *session) columnPII(req *policy.Request, n colName) (pii bool, s mask.Strategy, raw bool) {
	pii, s, raw = ss.srv.policy.Column(req, n.schema, n.table, n.column)
	if _, ok := ss.srv.policy.(SensitivePolicy); !ok {
		return pii, s, raw
	}
	if sv, ok := ss.columnSensitivity(n); ok {
		return true, sv.Strategy, raw
	}
	return false, ss.srv.policy.Strategy(), raw
}

// columnSensitivity says why a column is PII (resolveSensitivity orders the sources).
func (ss *session) columnSensitivity(n colName) (policy.Sensitivity, bool) {
	sp, ok := ss.srv.policy.(SensitivePolicy)
	if !ok {
		return policy.Sensitivity{}, false
	}
	byName, named := sp.ColumnSensitivity(n.schema, n.table, n.column)
	if named && byName.Source == policy.SourcePolicy {
		return byName, true
	}
	cat := ss.srv.cat
	d := cat.db(ss.upstream, ss.database)
	cat.scheduleDiscovery(ss, d, sp)
	t, tagged := cat.tag(ss, d, n, ss.srv.policy.Strategy())
	disc, discovered := d.pii.discovered(n)
	return resolveSensitivity(byName, named, t, tagged, disc, discovered)
}
