package enforce

import (
	"github.com/vigil-db/vigil/pkg/mask"
	"github.com/vigil-db/vigil/pkg/policy"
)

// columnPII is the one place that says whether a table column holds PII, how it is masked,
// and whether req may read it raw. Result masking, COPY and every other channel ask it, so
// a new source of knowledge about sensitive columns is added here and nowhere else.
func (ss *session) columnPII(req *policy.Request, n colName) (pii bool, s mask.Strategy, raw bool) {
	return ss.srv.policy.Column(req, n.schema, n.table, n.column)
}
