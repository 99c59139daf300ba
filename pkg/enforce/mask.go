package enforce

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/vigil-db/vigil/pkg/lineage"
	"github.com/vigil-db/vigil/pkg/mask"
)

// Result masking. Which columns carry sensitive values is decided by taint (taint.go): the
// statement's analysis says which table columns each output position reads, and a position
// that reads a PII column is masked, with that column's strategy when it is the column
// unchanged and wholesale when it is computed from it. A column that comes straight from a
// table (RowDescription names its table OID and attribute number) is also classified by
// name; computed columns that read no table column (literals, parameters) are checked value
// by value with the detectors, the second net. A masked value keeps its column's type valid
// for the client: text types get the strategy's output, json/jsonb a JSON string (or the
// document with its PII leaves masked), any other type NULL.

type colAction uint8

const (
	colKeep   colAction = iota // raw access
	colMask                    // a PII column: every value masked
	colDetect                  // masked where the detectors recognize PII
)

type colPlan struct {
	action colAction
	strat  mask.Strategy
	oid    uint32 // data type
	binary bool
	name   string // for events: "table.column" or the result column's label
	// derived: masked because its value is computed from a PII column (taint), not the
	// column itself; strat then masks it wholesale.
	derived bool
}

// rowPlan is how one result's rows are masked.
type rowPlan struct {
	cols    []colPlan
	nullAll bool // column sources unknown: every value is replaced by NULL
	// pii and masked are the PII columns the result reads and those that left masked,
	// for the events; note says what the taint analysis could not follow.
	pii, masked []string
	// ledger: every column leaves raw; the plan only names the PII columns for the events.
	ledger bool
	note   string
}

// maxCachedPlans bounds the per-session cache of plans by decision and row description.
const maxCachedPlans = 128

// planDecision is what a result's plan depends on besides its RowDescription: the decision
// its statement was judged with. Policy.Column's raw is !Decide(req).Mask, which the rule
// that decided determines, and a column's classification depends on the column alone; so
// statements that differ only in literals (simple-protocol clients inline their values)
// share one plan.
type planDecision struct {
	rule, action string
	mask         bool
	lin          *lineage.Result // the statement's taint analysis (cached per text)
}

// cachedPlan returns the plan of a RowDescription for a masked statement, building it on the
// first sight of that pair: classification costs catalog lookups and policy calls, and a
// session runs the same statements again and again.
func (ss *session) cachedPlan(body []byte, h *item) *rowPlan {
	if g := ss.srv.cat.runs.gen.Load(); g != ss.piiGen {
		// The catalog's tags or discovery changed what is PII: plan again.
		clear(ss.planCache)
		ss.plansCached, ss.piiGen = 0, g
	}
	var lin *lineage.Result
	if masksResult(h) {
		lin = ss.lineageOf(h)
	}
	dk := planDecision{h.st.dec.Rule, h.st.dec.Action, h.st.mask, lin}
	plans := ss.planCache[dk]
	p, ok := plans[string(body)] // indexing by string(body) does not allocate
	if !ok {
		if ss.plansCached >= maxCachedPlans {
			clear(ss.planCache)
			ss.plansCached, plans = 0, nil
		}
		if plans == nil {
			plans = make(map[string]*rowPlan)
			ss.planCache[dk] = plans
		}
		p = ss.planFor(body, h)
		plans[string(body)] = p
		ss.plansCached++
	}
	if p != nil {
		h.cols.addPlan(p)
	}
	return p
}

// masksResult says whether h's result is masked: its statement was judged with masking (a
// result with no statement of its own is masked, failing closed).
func masksResult(h *item) bool { return h.st == nil || h.st.mask }

// nullPlan is used when a result must be masked but its columns could not be learned.
var nullPlan = &rowPlan{nullAll: true}

// Type OIDs the masking distinguishes.
const (
	oidChar    = 18
	oidName    = 19
	oidInt8    = 20
	oidInt2    = 21
	oidInt4    = 23
	oidText    = 25
	oidJSON    = 114
	oidBPChar  = 1042
	oidVarchar = 1043
	oidNumeric = 1700
	oidUnknown = 705
	oidJSONB   = 3802
)

func textType(oid uint32) bool {
	switch oid {
	case oidName, oidText, oidBPChar, oidVarchar, oidUnknown:
		return true
	}
	return false
}

// field is a result column as RowDescription (or a statement description) gives it.
type field struct {
	name   string
	table  uint32
	att    uint16
	oid    uint32
	binary bool
}

// planFor builds the masking plan of a RowDescription for a masked statement.
func (ss *session) planFor(body []byte, h *item) *rowPlan {
	var rd pgproto3.RowDescription
	if err := rd.Decode(body); err != nil {
		return nullPlan
	}
	fields := make([]field, len(rd.Fields))
	for i, f := range rd.Fields {
		fields[i] = field{string(f.Name), f.TableOID, f.TableAttributeNumber, f.DataTypeOID, f.Format == 1}
	}
	return ss.plan(fields, h)
}

// plan classifies each result column: by taint, by the policy when it comes from a table
// column, by the detectors otherwise. A nil plan means every column may leave raw; a ledger
// plan that they may, and which of them are PII (a statement judged raw still records the
// PII columns it returns as they are; the taint analysis, which costs a parse, runs only
// for masked statements).
func (ss *session) plan(fields []field, h *item) *rowPlan {
	var oids []uint32
	for _, f := range fields {
		if f.table != 0 {
			oids = append(oids, f.table)
		}
	}
	names, err := ss.srv.cat.columns(ss, oids)
	if err != nil {
		ss.srv.log.Warn("resolving result columns; judging them by taint and the value detectors", "session_id", ss.id, "err", err)
	}
	req := ss.req
	if h.st != nil {
		req.SQL = h.st.text
	}
	pol := ss.srv.policy
	plan := &rowPlan{cols: make([]colPlan, len(fields))}
	keep := 0
	for i, f := range fields {
		cp := colPlan{action: colDetect, strat: pol.Strategy(), oid: f.oid, binary: f.binary, name: f.name}
		if n, ok := names[attKey{f.table, f.att}]; ok && f.table != 0 {
			cp.name = n.table + "." + n.column
			if n.schema != "public" && n.schema != "" {
				cp.name = n.schema + "." + cp.name
			}
			pii, strat, raw := ss.columnPII(&req, n)
			switch {
			case pii && raw:
				cp.action = colKeep
				plan.pii = append(plan.pii, cp.name)
			case raw:
				cp.action = colKeep
			case pii:
				cp.action, cp.strat = colMask, strat
				plan.pii = append(plan.pii, cp.name)
				plan.masked = append(plan.masked, cp.name)
			}
		}
		if cp.action == colDetect && !masksResult(h) {
			cp.action = colKeep // a statement judged raw: the plan only names its PII columns
		}
		plan.cols[i] = cp
	}
	if masksResult(h) {
		if reason := ss.applyTaint(plan, ss.lineageOf(h), &req); reason != "" {
			ss.srv.m.unanalysed.Inc()
			ss.srv.log.Warn("result columns cannot be traced to their sources; every column is masked",
				"session_id", ss.id, "reason", reason)
			plan.note = joinDetail(plan.note, "every column masked: "+reason)
		}
	}
	for i := range plan.cols {
		if plan.cols[i].action == colKeep {
			keep++
		}
	}
	if keep == len(fields) && plan.note == "" {
		if len(plan.pii) == 0 {
			return nil
		}
		plan.ledger = true
	}
	return plan
}

// maskRow rewrites a DataRow under plan into ss.rowBuf.
func (ss *session) maskRow(plan *rowPlan, msg []byte, h *item) ([]byte, error) {
	body := msg[5:]
	if len(body) < 2 {
		return nil, fmt.Errorf("malformed DataRow")
	}
	n := int(binary.BigEndian.Uint16(body))
	if !plan.nullAll && n != len(plan.cols) {
		return nil, fmt.Errorf("DataRow with %d columns for a RowDescription of %d", n, len(plan.cols))
	}
	out, sp := beginMsg(ss.rowBuf[:0], 'D')
	out = append(out, body[:2]...)
	p := 2
	masker := ss.srv.policy.Masker()
	for i := 0; i < n; i++ {
		if p+4 > len(body) {
			return nil, fmt.Errorf("malformed DataRow")
		}
		l := int32(binary.BigEndian.Uint32(body[p:]))
		p += 4
		if l < 0 {
			out = appendNull(out)
			continue
		}
		if int(l) > len(body)-p {
			return nil, fmt.Errorf("malformed DataRow")
		}
		v := body[p : p+int(l)]
		p += int(l)
		if plan.nullAll {
			out = appendNull(out)
			ss.srv.m.maskedValues.Inc()
			continue
		}
		out = ss.appendField(out, &plan.cols[i], v, h, masker)
	}
	if p != len(body) {
		return nil, fmt.Errorf("malformed DataRow")
	}
	ss.rowBuf = finishMsg(out, sp)
	return ss.rowBuf, nil
}

// appendField appends one non-NULL result value as its column's plan says (raw, masked,
// or masked where the detectors recognize it), recording in h what was masked. DataRows
// and the rows of COPY TO STDOUT both go through it.
func (ss *session) appendField(out []byte, cp *colPlan, v []byte, h *item, masker *mask.Masker) []byte {
	switch cp.action {
	case colMask:
		ss.srv.m.maskedValues.Inc()
		return appendMasked(out, cp, masker.Apply(cp.strat, v), cp.strat.Kind == mask.Null)
	case colDetect:
		mv, null, found := detectValue(masker, cp, v)
		if !found {
			return appendValue(out, v)
		}
		h.cols.pii = addOnce(h.cols.pii, cp.name)
		h.cols.masked = addOnce(h.cols.masked, cp.name)
		ss.srv.m.maskedValues.Inc()
		if null {
			return appendNull(out)
		}
		return appendValue(out, mv)
	}
	return appendValue(out, v) // colKeep
}

func appendNull(out []byte) []byte { return append(out, 0xff, 0xff, 0xff, 0xff) }

func appendValue(out, v []byte) []byte {
	out = binary.BigEndian.AppendUint32(out, uint32(len(v)))
	return append(out, v...)
}

// appendMasked appends the masked form of a PII column's value, valid for its type.
func appendMasked(out []byte, cp *colPlan, masked []byte, null bool) []byte {
	if null {
		return appendNull(out)
	}
	switch {
	case textType(cp.oid):
		return appendValue(out, masked)
	case cp.oid == oidJSON || cp.oid == oidJSONB:
		js, _ := json.Marshal(string(masked))
		if cp.oid == oidJSONB && cp.binary {
			js = append([]byte{1}, js...)
		}
		return appendValue(out, js)
	default:
		return appendNull(out)
	}
}

// detectValue runs the detectors over one value of a column that is not classified by name.
// It returns the value to send (or null), and whether anything was found. Only text types
// can carry a masked text; a value of any other type that carries PII becomes NULL.
func detectValue(m *mask.Masker, cp *colPlan, v []byte) (out []byte, null, found bool) {
	switch {
	case textType(cp.oid):
		masked, ok := maskEmbedded(m, cp.strat, v)
		if !ok {
			return nil, false, false
		}
		return masked, masked == nil, true
	case cp.oid == oidJSON || cp.oid == oidJSONB:
		doc := v
		if cp.binary && cp.oid == oidJSONB {
			if len(doc) == 0 || doc[0] != 1 {
				return nil, true, true // unknown jsonb version: cannot inspect, do not pass
			}
			doc = doc[1:]
		}
		masked, ok := maskJSON(m, cp.strat, doc)
		if !ok {
			return nil, false, false
		}
		if cp.binary && cp.oid == oidJSONB {
			masked = append([]byte{1}, masked...)
		}
		return masked, false, true
	case cp.binary:
		// Numbers, money, arrays, records: read by type and structure (values.go).
		found := binaryPII(m, cp.strat, cp.oid, v, 0)
		return nil, found, found
	default:
		// The text form of a non-text type: arrays, records, numbers as the type prints them.
		if _, ok := maskEmbedded(m, cp.strat, v); ok || textNumberPII(m, v) {
			return nil, true, true
		}
		return nil, false, false
	}
}

// isSep separates the tokens detectors are tried on inside a longer text. Characters that
// occur inside emails, phone numbers and card numbers (@ . - + ( ) _) are not separators;
// control bytes are, so that text inside binary values (arrays, records) is found too.
func isSep(c byte) bool {
	switch c {
	case ' ', ',', ';', ':', '"', '\'', '<', '>', '[', ']', '{', '}', '|', '=', '\\', '/', '`', 0x7f:
		return true
	}
	return c < 0x20
}

// maxWindow is how many adjacent tokens are tried together, for values written with spaces
// ("4111 1111 1111 1111", "+1 (555) 123-4567").
const maxWindow = 5

// maskEmbedded masks every span of v the detectors recognize: the whole value, any token, or
// a run of up to maxWindow tokens. nil with ok means the value becomes NULL (null strategy).
func maskEmbedded(m *mask.Masker, s mask.Strategy, v []byte) (out []byte, ok bool) {
	if _, hit := m.Detect(v); hit {
		return m.Apply(s, v), true
	}
	type span struct{ start, end int }
	var toks []span
	for i := 0; i < len(v); {
		for i < len(v) && isSep(v[i]) {
			i++
		}
		j := i
		for j < len(v) && !isSep(v[j]) {
			j++
		}
		if j > i {
			toks = append(toks, span{i, j})
		}
		i = j
	}
	var hits []span
	for i := 0; i < len(toks); i++ {
		// Longest run first, so a card number written in groups is masked whole.
		for w := min(maxWindow, len(toks)-i); w >= 1; w-- {
			sp := span{toks[i].start, toks[i+w-1].end}
			if _, hit := m.Detect(v[sp.start:sp.end]); hit {
				hits = append(hits, sp)
				i += w - 1
				break
			}
		}
	}
	if len(hits) == 0 {
		return nil, false
	}
	if s.Kind == mask.Null {
		return nil, true
	}
	var b bytes.Buffer
	last := 0
	for _, h := range hits {
		b.Write(v[last:h.start])
		b.Write(m.Apply(s, v[h.start:h.end]))
		last = h.end
	}
	b.Write(v[last:])
	return b.Bytes(), true
}

// maskJSON masks the string and number leaves of a JSON document that carry PII. A document
// that does not parse is replaced whole when its text contains PII.
func maskJSON(m *mask.Masker, s mask.Strategy, doc []byte) ([]byte, bool) {
	dec := json.NewDecoder(bytes.NewReader(doc))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		if _, ok := maskEmbedded(m, s, doc); ok {
			js, _ := json.Marshal(mask.Placeholder)
			return js, true
		}
		return nil, false
	}
	found := false
	var walk func(x any) any
	walk = func(x any) any {
		switch t := x.(type) {
		case map[string]any:
			for k, e := range t {
				t[k] = walk(e)
			}
		case []any:
			for i, e := range t {
				t[i] = walk(e)
			}
		case string:
			if out, ok := maskEmbedded(m, s, []byte(t)); ok {
				found = true
				if out == nil {
					return nil
				}
				return string(out)
			}
		case json.Number:
			if _, ok := m.Detect([]byte(t)); ok {
				found = true
				if s.Kind == mask.Null {
					return nil
				}
				return string(m.Apply(s, []byte(t)))
			}
		}
		return x
	}
	v = walk(v)
	if !found {
		return nil, false
	}
	out, err := json.Marshal(v)
	if err != nil {
		js, _ := json.Marshal(mask.Placeholder)
		return js, true
	}
	return out, true
}
