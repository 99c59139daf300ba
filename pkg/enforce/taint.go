package enforce

import (
	"fmt"
	"strings"

	"github.com/vigil-db/vigil/pkg/lineage"
	"github.com/vigil-db/vigil/pkg/mask"
	"github.com/vigil-db/vigil/pkg/policy"
)

// Taint decides which result columns of a masked statement carry a sensitive column's
// values: pkg/lineage analyses the statement's text with the catalog, and plan() masks every
// output position whose expression reads a column columnPII calls PII. Cursors (DECLARE,
// then FETCH) and SQL prepared statements (PREPARE, then EXECUTE) are analysed when they are
// defined and their rows judged by that analysis. A statement the analysis cannot follow is
// masked whole, logged and counted, and its event says why.

// maxAnalyses bounds the per-session caches of analyses and of cursor and prepared
// statement definitions.
const maxAnalyses = 256

// CleanFunctions is optionally implemented by a Policy: pg_catalog functions whose result
// reveals nothing of their arguments for this deployment (length and friends are masked
// unless named).
type CleanFunctions interface {
	CleanFunctions() []string
}

// maxAnalysedText bounds the statements the taint analysis parses: a longer one (a big
// literal, a generated IN list) has every column of its result masked.
const maxAnalysedText = 1 << 20

// analysis returns the taint analysis of one statement text, cached per session. The
// proxy does not follow the session's search_path: the text alone is the key.
func (ss *session) analysis(text string) *lineage.Result {
	if len(text) > maxAnalysedText {
		// Parsing it would cost the parser's copies of the text, in C and in Go, per
		// distinct statement; masking its result whole bounds the session's memory.
		return &lineage.Result{Failed: fmt.Sprintf("the statement's %d bytes are more than the %d the taint analysis reads", len(text), maxAnalysedText)}
	}
	if r, ok := ss.analyses[text]; ok {
		return r
	}
	if ss.analyses == nil || len(ss.analyses) >= maxAnalyses {
		ss.analyses = make(map[string]*lineage.Result)
	}
	var opt lineage.Options
	if cf, ok := ss.srv.policy.(CleanFunctions); ok {
		opt.Clean = cf.CleanFunctions()
	}
	r := lineage.Analyze(text, lineageCatalog{ss}, opt)
	ss.analyses[text] = r
	return r
}

// resultText is the text of the statement whose result h is receiving: the current
// statement of a multi-statement Query.
func (h *item) resultText() string {
	if h.kind == 'Q' && h.parts != nil {
		return h.parts[min(h.idx, len(h.parts)-1)]
	}
	if h.kind == 'Q' && h.text != "" {
		return h.text
	}
	return h.st.text
}

// lineageOf is the analysis a result of h is masked by: its statement's, or for FETCH and
// EXECUTE that of the cursor or prepared statement.
func (ss *session) lineageOf(h *item) *lineage.Result {
	r := ss.analysis(h.resultText())
	switch r.Kind {
	case lineage.Fetch, lineage.Execute:
		key, what := defKey(r.Kind == lineage.Fetch, r.Name)
		if d, ok := ss.defs[key]; ok {
			return d
		}
		return &lineage.Result{Failed: fmt.Sprintf("%s %q was not defined through this session", what, r.Name)}
	}
	return r
}

func defKey(cursor bool, name string) (key, what string) {
	if cursor {
		return "c:" + name, "cursor"
	}
	return "p:" + name, "prepared statement"
}

// noteDefinition remembers the analysis of a DECLARE CURSOR or PREPARE that just completed
// (tag is its CommandComplete tag), for the FETCH and EXECUTE that read it.
func (ss *session) noteDefinition(h *item, tag []byte) {
	t := strings.TrimRight(string(tag), "\x00")
	// Recorded whatever the DECLARE's own decision: a later FETCH may be judged by another
	// rule, one that masks.
	if (t != "DECLARE CURSOR" && t != "PREPARE") || h.st == nil {
		return
	}
	r := ss.analysis(h.resultText())
	if r.Defines == "" {
		return
	}
	if ss.defs == nil || len(ss.defs) >= maxAnalyses {
		ss.defs = make(map[string]*lineage.Result)
	}
	key, _ := defKey(r.DefinesCursor, r.Defines)
	ss.defs[key] = r
}

// applyTaint sets each column's action from the analysis: a column that reads a PII source
// is masked (with that column's strategy when it is the column unchanged, wholesale
// otherwise); one that reads none keeps its classification by RowDescription (or the
// detectors, for computed columns). It returns the reason when the statement could not be
// analysed, in which case every column is masked.
func (ss *session) applyTaint(plan *rowPlan, lin *lineage.Result, req *policy.Request) string {
	if lin.Kind == lineage.NoTableData {
		return ""
	}
	reason := lin.Failed
	if reason == "" && len(lin.Columns) != len(plan.cols) {
		// Stars over functions and joins USING merge columns: position cannot be matched,
		// every column is taken to read all the result reads.
		for i := range plan.cols {
			ss.taintColumn(plan, &plan.cols[i], &lin.All, req)
		}
		return ""
	}
	for i := range plan.cols {
		cp := &plan.cols[i]
		if reason != "" {
			cp.action, cp.strat, cp.derived = colMask, mask.Strategy{Kind: mask.Full}, true
			plan.masked = addOnce(plan.masked, cp.name)
			continue
		}
		ss.taintColumn(plan, cp, &lin.Columns[i], req)
	}
	return reason
}

func (ss *session) taintColumn(plan *rowPlan, cp *colPlan, c *lineage.Column, req *policy.Request) {
	var piiSrc []string
	wholesale := mask.Strategy{Kind: mask.Full}
	var direct mask.Strategy
	for _, s := range c.Sources {
		pii, strat, raw := ss.columnPII(req, colName{s.Schema, s.Table, s.Column})
		if !pii || raw {
			continue
		}
		piiSrc = append(piiSrc, s.String())
		direct = strat
		if strat.Kind == mask.Null {
			wholesale = strat
		}
	}
	if len(piiSrc) == 0 && c.Opaque == "" {
		return
	}
	for _, n := range piiSrc {
		plan.pii = addOnce(plan.pii, n)
		plan.masked = addOnce(plan.masked, n)
	}
	if c.Opaque != "" {
		plan.masked = addOnce(plan.masked, cp.name)
		plan.note = joinDetail(plan.note, "masked "+cp.name+": "+c.Opaque)
	}
	switch {
	case c.Opaque == "" && c.Direct && len(piiSrc) == 1:
		cp.action, cp.strat, cp.derived = colMask, direct, false
	default:
		cp.action, cp.strat, cp.derived = colMask, wholesale, true
	}
}
