package policy

import (
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"

	"cel.dev/cel-go/cel"
	"github.com/vigil-db/vigil/pkg/event"
	"github.com/vigil-db/vigil/pkg/mask"
	"github.com/vigil-db/vigil/pkg/sqlparse"
)

// Request is one statement to decide, with everything known about who sent it and where.
type Request struct {
	Protocol    string // "postgres" or "mysql"
	SQL         string
	Source      string // "ebpf" (capture: the decision is a label) or "proxy" (enforced)
	DBUser      string
	Database    string
	Application string
	ClientAddr  string
	ServerAddr  string
	// Groups are verified identity groups (OIDC); Identity.Groups count as well.
	Groups   []string
	Process  *event.Process
	Identity *event.Identity
	// Params, when not nil, are the values a Bind gives the parameters of SQL (a
	// PostgreSQL statement prepared with $1, $2, …): the statement is judged as it runs
	// with them (sqlparse.ClassifyBound), not as prepared.
	Params []sqlparse.Param
	// Estimate is the planner's estimate for the statement, which the proxy asks for when a
	// decision says NeedsEstimate; nil: not asked.
	Estimate *Estimate
}

// Estimate is what the server's planner expects an UPDATE, DELETE or MERGE to touch.
type Estimate struct {
	// Rows is the planner's row estimate; Table names the target and TableRows is its
	// pg_class.reltuples (below 0: never analyzed, the share is unknown).
	Rows      float64
	Table     string
	TableRows float64
	// Err says why there is no estimate (EXPLAIN failed, timed out, was not allowed): the
	// statement then matches every estimate condition.
	Err string
}

// Share is Rows as a share of TableRows; ok is false when the table's size is unknown.
func (e *Estimate) Share() (share float64, ok bool) {
	if e.TableRows < 0 || e.Err != "" {
		return 0, false
	}
	if e.TableRows == 0 {
		return 1, e.Rows > 0 // an empty table (as far as the statistics know)
	}
	return e.Rows / e.TableRows, true
}

func (e *Estimate) String() string {
	if e.Err != "" {
		return "no planner estimate (" + e.Err + "): treated as over the threshold"
	}
	if share, ok := e.Share(); ok {
		return fmt.Sprintf("planner estimate %.0f rows of %.0f in %s (%.0f%%)", e.Rows, e.TableRows, e.Table, 100*share)
	}
	return fmt.Sprintf("planner estimate %.0f rows in %s (table never analyzed: its size is unknown)", e.Rows, e.Table)
}

// Decision is what the policy says about a request.
type Decision struct {
	// Action is allow, alert, block, mask or require_approval.
	Action string
	// Rule names the rule that decided, or "default" when none matched.
	Rule    string
	Message string
	// Info is the classification the decision rests on, shared with the classifier's
	// cache: read it, never modify it. Unless the policy has CEL conditions (which can read
	// statement text), a statement served by the template cache gets its template's
	// classification, whose Statements[i].Text belong to another text of that template.
	Info *sqlparse.Info
	// Mask says results must be masked for this principal (PII columns and values the
	// detectors recognize), when the connection goes through the proxy.
	Mask bool
	// Approval is the deciding require_approval rule's approval block (nil: defaults).
	Approval *Approval
	// Flag is the deciding rule's flag block (nil: the rule flags nothing).
	Flag *RuleFlag
	// NeedsEstimate says a rule with an estimate condition (estimated_rows_over,
	// estimated_share_over) comes before the deciding rule and matches on everything else:
	// the decision holds only if the planner's estimate stays under its thresholds. The
	// proxy asks the planner and decides again with Request.Estimate set.
	NeedsEstimate bool
}

// FlagsWorkloads reports whether any rule has a flag block.
func (e *Engine) FlagsWorkloads() bool {
	for _, r := range e.rules {
		if r.Flag != nil {
			return true
		}
	}
	return false
}

// RuleFlag returns the flag block of the named rule, nil when it has none.
func (e *Engine) RuleFlag(name string) *RuleFlag {
	for _, r := range e.rules {
		if r.Name == name {
			return r.Flag
		}
	}
	return nil
}

// DefaultRule is the Rule of a decision no rule matched.
const DefaultRule = "default"

// EventDecision is the decision in the audit event's vocabulary (docs/events.md):
// require_approval is recorded as approval_required.
func (d Decision) EventDecision() string {
	if d.Action == ActionRequireApproval {
		return event.DecisionApprovalRequired
	}
	return d.Action
}

// MarshalJSON emits the decision as `vigil policy eval` prints it.
func (d Decision) MarshalJSON() ([]byte, error) {
	out := struct {
		Decision    string        `json:"decision"`
		Action      string        `json:"action"`
		Rule        string        `json:"rule"`
		Kind        string        `json:"kind"`
		Message     string        `json:"message"`
		Tables      []string      `json:"tables"`
		Flags       sqlparse.Flag `json:"flags"`
		Mask        bool          `json:"mask"`
		Fingerprint string        `json:"fingerprint,omitempty"`
		ParseError  string        `json:"parse_error,omitempty"`
	}{Decision: d.EventDecision(), Action: d.Action, Rule: d.Rule, Message: d.Message, Tables: []string{}, Mask: d.Mask}
	if d.Info != nil {
		out.Kind, out.Flags, out.Fingerprint, out.ParseError = d.Info.Kind, d.Info.Flags, d.Info.Fingerprint, d.Info.ParseError
		if d.Info.Tables != nil {
			out.Tables = d.Info.Tables
		}
	}
	return json.Marshal(out)
}

// Option configures an Engine.
type Option func(*engineOptions)

type engineOptions struct {
	tokenKey []byte
	getenv   func(string) string
}

// WithTokenKey sets the key of the token masking strategy, overriding the policy's
// token_key_env.
func WithTokenKey(key []byte) Option { return func(o *engineOptions) { o.tokenKey = key } }

// WithGetenv replaces os.Getenv for reading token_key_env (tests, embedding).
func WithGetenv(f func(string) string) Option { return func(o *engineOptions) { o.getenv = f } }

// Engine decides requests under one policy. It is safe for concurrent use.
type Engine struct {
	p         *Policy
	rules     []rule
	envs      []env
	masker    *mask.Masker
	maskByDef bool
	strategy  mask.Strategy
	columns   []sensitiveColumns
	dict      *Dictionary // nil: the dictionary is off
	dictOff   map[string]bool
	discovery Discovery
	envCache  sync.Map // envKey -> string
	// readsText: a rule's CEL condition can see the statement text, so decisions need
	// each statement's own (sqlparse.Classify rather than ClassifyShape).
	readsText bool
}

type rule struct {
	*Rule
	flags sqlparse.Flag
	prg   cel.Program
}

type env struct {
	name      string
	servers   []serverPattern
	databases []string
}

type envKey struct{ server, database string }

type sensitiveColumns struct {
	tables, columns []string
	strategy        mask.Strategy
}

// NewEngine compiles a policy (CEL conditions, patterns, masking keys) into an Engine.
func NewEngine(p *Policy, opts ...Option) (*Engine, error) {
	if p == nil {
		return nil, fmt.Errorf("policy engine: no policy")
	}
	o := engineOptions{getenv: os.Getenv}
	for _, f := range opts {
		f(&o)
	}
	e := &Engine{p: p, maskByDef: true, strategy: mask.Strategy{Kind: mask.Full}}
	s := &p.Sensitive
	if s.MaskByDefault != nil {
		e.maskByDef = *s.MaskByDefault
	}
	if s.Strategy != nil {
		e.strategy = *s.Strategy
	}
	key := o.tokenKey
	if key == nil && s.TokenKeyEnv != "" {
		v := o.getenv(s.TokenKeyEnv)
		if v == "" {
			return nil, fmt.Errorf("policy %s: sensitive.token_key_env names %s, which is not set", p.Name, s.TokenKeyEnv)
		}
		key = []byte(v)
	}
	cfg := mask.Config{Key: key}
	if s.Detectors != nil {
		cfg.Detectors = *s.Detectors
	}
	m, err := mask.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("policy %s: %w", p.Name, err)
	}
	e.masker = m
	for _, c := range s.Columns {
		sc := sensitiveColumns{tables: c.Tables, columns: c.Columns, strategy: e.strategy}
		if c.Strategy != nil {
			sc.strategy = *c.Strategy
		}
		e.columns = append(e.columns, sc)
	}
	if d := s.Dictionary; d.Enabled == nil || *d.Enabled {
		e.dict, e.dictOff = &d, map[string]bool{}
		for _, c := range d.Disable {
			e.dictOff[c] = true
		}
	}
	e.discovery = s.Discovery.withDefaults()
	for _, en := range p.Environments {
		ev := env{name: en.Name, databases: en.Databases}
		for _, s := range en.Servers {
			sp, err := parseServerPattern(s)
			if err != nil {
				return nil, fmt.Errorf("policy %s: environment %s: %w", p.Name, en.Name, err)
			}
			ev.servers = append(ev.servers, sp)
		}
		e.envs = append(e.envs, ev)
	}
	for i := range p.Rules {
		r := rule{Rule: &p.Rules[i]}
		for _, f := range r.Match.Flags {
			fl, ok := sqlparse.ParseFlag(f)
			if !ok {
				return nil, fmt.Errorf("policy %s: rule %s: unknown flag %q", p.Name, r.Name, f)
			}
			r.flags |= fl
		}
		if r.Match.When != "" {
			e.readsText = true
			prg, err := compileCEL(r.Match.When)
			if err != nil {
				return nil, fmt.Errorf("policy %s: rule %s: %w", p.Name, r.Name, err)
			}
			r.prg = prg
		}
		e.rules = append(e.rules, r)
	}
	return e, nil
}

// Policy is the policy the engine decides with.
func (e *Engine) Policy() *Policy { return e.p }

// Masker is the masker configured by the policy's sensitive section.
func (e *Engine) Masker() *mask.Masker { return e.masker }

// Environment names the environment of a server ("ip:port" or socket path) and database:
// the first environment whose lists match, else the policy's default environment.
func (e *Engine) Environment(serverAddr, database string) string {
	k := envKey{serverAddr, database}
	if v, ok := e.envCache.Load(k); ok {
		return v.(string)
	}
	name := e.p.DefaultEnvironment
	for _, en := range e.envs {
		if len(en.servers) > 0 {
			ok := false
			for _, sp := range en.servers {
				if sp.match(serverAddr) {
					ok = true
					break
				}
			}
			if !ok {
				continue
			}
		}
		if len(en.databases) > 0 && !anyGlob(en.databases, database) {
			continue
		}
		name = en.name
		break
	}
	// Bounded in practice by the set of servers and databases an agent sees.
	e.envCache.Store(k, name)
	return name
}

// Decide classifies the request's SQL and applies the rules to each of its statements;
// the worst statement's decision is the message's decision. For Source "ebpf" the decision
// is a label: nothing is enforced.
func (e *Engine) Decide(req *Request) Decision {
	var info *sqlparse.Info
	if req.Params != nil && req.Protocol == sqlparse.ProtocolPostgres {
		info = sqlparse.ClassifyBound(req.SQL, req.Params)
	} else if e.readsText {
		info = sqlparse.Classify(req.Protocol, req.SQL)
	} else {
		info = sqlparse.ClassifyShape(req.Protocol, req.SQL)
	}
	ctx := evalCtx{e: e, req: req, info: info}
	var best Decision
	bestSev := -1
	needs := false
	judge := func(st *sqlparse.Stmt) {
		d := ctx.decide(st)
		needs = needs || d.NeedsEstimate
		if sev := severity[d.Action]; sev > bestSev {
			best, bestSev = d, sev
		}
	}
	if len(info.Statements) == 0 {
		// Unparseable, unsupported or empty: judge the text as a whole.
		judge(&sqlparse.Stmt{Text: req.SQL, Kind: info.Kind, Command: info.Kind, Flags: info.Flags})
	} else {
		for i := range info.Statements {
			judge(&info.Statements[i])
		}
	}
	best.Info = info
	// A refusal needs no estimate: nothing the planner says can make it pass.
	best.NeedsEstimate = needs && best.Action != ActionBlock
	return best
}

// Column classifies one result column for the proxy: pii says whether the policy names it
// sensitive, s how to mask it, raw whether this principal may see it unmasked.
func (e *Engine) Column(req *Request, schema, table, column string) (pii bool, s mask.Strategy, raw bool) {
	raw = !e.Decide(req).Mask
	if sv, ok := e.ColumnSensitivity(schema, table, column); ok {
		return true, sv.Strategy, raw
	}
	return false, e.strategy, raw
}

// ColumnSensitivity says whether a column is PII by its name: the policy's
// sensitive.columns first, then the name dictionary.
func (e *Engine) ColumnSensitivity(schema, table, column string) (Sensitivity, bool) {
	qualified := table
	if schema != "" {
		qualified = schema + "." + table
	}
	for _, c := range e.columns {
		if len(c.tables) > 0 {
			ok := false
			for _, t := range c.tables {
				if table != "" && tableMatch(t, qualified) {
					ok = true
					break
				}
			}
			if !ok {
				continue
			}
		}
		if anyGlob(c.columns, column) {
			return Sensitivity{Source: SourcePolicy, Strategy: c.strategy}, true
		}
	}
	if e.dict == nil || anyGlob(e.dict.Except, column) {
		return Sensitivity{}, false
	}
	cat, words, ok := matchDictionary(column, e.dictOff)
	if !ok {
		return Sensitivity{}, false
	}
	return Sensitivity{Source: SourceName, Category: cat, Strategy: e.CategoryStrategy(cat), Detail: "name matches " + strconv.Quote(words)}, true
}

// CategoryStrategy is how columns of a dictionary category, or values of a detector, are
// masked: sensitive.dictionary.strategies, else sensitive.strategy.
func (e *Engine) CategoryStrategy(category string) mask.Strategy {
	if e.dict != nil {
		if s, ok := e.dict.Strategies[category]; ok {
			return s
		}
		if s, ok := e.dict.Strategies[categoryOfDetector(category)]; ok {
			return s
		}
	}
	return e.strategy
}

// Discovery is the policy's discovery configuration with its defaults filled in.
func (e *Engine) Discovery() Discovery { return e.discovery }

// Enforced reports whether the policy's enforce section selects this connection's client:
// the agent steers such connections into the proxy.
func (e *Engine) Enforced(req *Request) bool {
	if matchAnyWorkload(e.p.Enforce.Workloads, req.Process) {
		return true
	}
	c := evalCtx{e: e, req: req}
	for _, g := range e.p.Enforce.Principals {
		if c.inGroup(g) {
			return true
		}
	}
	return false
}

// Approves reports whether a is among approvers: an "os:USER" entry naming a's OS user, or
// a principal group a belongs to (by verified email or OIDC group, or a workload selector
// on uid). An empty list approves anyone.
func (e *Engine) Approves(approvers []string, a Approver) bool {
	if len(approvers) == 0 {
		return true
	}
	for _, name := range approvers {
		if user, ok := strings.CutPrefix(name, "os:"); ok {
			if a.OSUser != "" && a.OSUser == user {
				return true
			}
			continue
		}
		g, ok := e.p.Principals[name]
		if !ok {
			continue
		}
		if a.Email != "" && anyGlob(g.Emails, a.Email) {
			return true
		}
		for _, og := range a.Groups {
			if anyExact(g.OIDCGroups, og) {
				return true
			}
		}
		if a.UID != nil && matchAnyWorkload(g.Workloads, &event.Process{UID: a.UID}) {
			return true
		}
	}
	return false
}

// EnforcesWorkloads reports whether the policy's enforce section selects workloads, which
// the agent then looks for among the host's processes.
func (e *Engine) EnforcesWorkloads() bool { return len(e.p.Enforce.Workloads) > 0 }

// Strategy is the masking strategy for values found by the detectors.
func (e *Engine) Strategy() mask.Strategy { return e.strategy }

// CleanFunctions are the functions the taint analysis lets pass (sensitive.clean_functions).
func (e *Engine) CleanFunctions() []string { return e.p.Sensitive.CleanFunctions }

// evalCtx evaluates rules for one request; principal facts are computed once, lazily.
type evalCtx struct {
	e        *Engine
	req      *Request
	info     *sqlparse.Info
	envName  string
	envDone  bool
	groups   map[string]bool
	idGroups []string
}

func (c *evalCtx) environment() string {
	if !c.envDone {
		c.envName, c.envDone = c.e.Environment(c.req.ServerAddr, c.req.Database), true
	}
	return c.envName
}

func (c *evalCtx) identityGroups() []string {
	if c.idGroups == nil {
		c.idGroups = append([]string{}, c.req.Groups...)
		if c.req.Identity != nil {
			c.idGroups = append(c.idGroups, c.req.Identity.Groups...)
		}
	}
	return c.idGroups
}

// inGroup reports whether the request's principal belongs to the named policy group.
func (c *evalCtx) inGroup(name string) bool {
	if c.groups == nil {
		c.groups = map[string]bool{}
	}
	if v, ok := c.groups[name]; ok {
		return v
	}
	g := c.e.p.Principals[name]
	v := (c.req.DBUser != "" && anyGlob(g.DBUsers, c.req.DBUser)) ||
		(c.req.Identity != nil && c.req.Identity.Email != "" && anyGlob(g.Emails, c.req.Identity.Email)) ||
		matchAnyWorkload(g.Workloads, c.req.Process)
	if !v {
		for _, og := range c.identityGroups() {
			if anyExact(g.OIDCGroups, og) {
				v = true
				break
			}
		}
	}
	c.groups[name] = v
	return v
}

func anyExact(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func (c *evalCtx) decide(st *sqlparse.Stmt) Decision {
	needs := false
	for i := range c.e.rules {
		r := &c.e.rules[i]
		if !c.matches(r, st) {
			continue
		}
		msg := r.Message
		if estimated(r) {
			over, why, ok := c.overEstimate(r)
			if !ok {
				needs = true
				continue
			}
			if !over {
				continue
			}
			msg = joinMessage(msg, why)
		}
		d := Decision{Action: r.Action, Rule: r.Name, Message: msg, Approval: r.Approval, Flag: r.Flag, NeedsEstimate: needs}
		d.Mask = c.e.maskByDef && !r.Raw
		if r.Action == ActionMask {
			d.Mask = true
		}
		return d
	}
	return Decision{Action: c.e.p.DefaultAction, Rule: DefaultRule, Mask: c.e.maskByDef, NeedsEstimate: needs}
}

// estimated reports a rule with an estimate condition.
func estimated(r *rule) bool {
	return r.Match.EstimatedRowsOver != nil || r.Match.EstimatedShareOver != nil
}

// overEstimate judges a rule's estimate conditions (any one exceeded suffices) against the
// request's estimate; ok is false when there is none yet. why gives the estimate and the
// threshold for the refusal message.
func (c *evalCtx) overEstimate(r *rule) (over bool, why string, ok bool) {
	est := c.req.Estimate
	if est == nil {
		return false, "", false
	}
	m := &r.Match
	var limits []string
	if m.EstimatedRowsOver != nil {
		limits = append(limits, fmt.Sprintf("more than %.0f rows", *m.EstimatedRowsOver))
		over = over || est.Err != "" || est.Rows > *m.EstimatedRowsOver
	}
	if m.EstimatedShareOver != nil {
		limits = append(limits, fmt.Sprintf("more than %.0f%% of the table", 100**m.EstimatedShareOver))
		share, known := est.Share()
		// A table the statistics know nothing of could be any size: fail closed.
		over = over || !known || share > *m.EstimatedShareOver
	}
	return over, est.String() + "; the rule's threshold: " + strings.Join(limits, " or "), true
}

func joinMessage(a, b string) string {
	if a == "" {
		return b
	}
	return a + " (" + b + ")"
}

func (c *evalCtx) matches(r *rule, st *sqlparse.Stmt) bool {
	m := &r.Match
	req := c.req
	if len(m.Sources) > 0 && !anyExact(m.Sources, req.Source) {
		return false
	}
	if len(m.Protocols) > 0 && !anyExact(m.Protocols, req.Protocol) {
		return false
	}
	if r.flags != 0 && !st.Flags.Any(r.flags) {
		return false
	}
	if m.NoEffectiveWhere != nil && st.Flags.Has(sqlparse.FlagNoEffectiveWhere) != *m.NoEffectiveWhere {
		return false
	}
	if len(m.Kinds) > 0 && !anyExact(m.Kinds, st.Kind) {
		return false
	}
	if len(m.Commands) > 0 && !anyGlob(m.Commands, st.Command) {
		return false
	}
	if len(m.Tables) > 0 && !anyTable(m.Tables, st.Reads) && !anyTable(m.Tables, st.Writes) {
		return false
	}
	if len(m.Writes) > 0 && !anyTable(m.Writes, st.Writes) {
		return false
	}
	if len(m.Columns) > 0 && !c.anyColumn(m.Columns, st) {
		return false
	}
	if len(m.Functions) > 0 && !anyFunction(m.Functions, st.Functions) {
		return false
	}
	if len(m.Variables) > 0 && !anyOf(m.Variables, st.Variables) {
		return false
	}
	if len(m.Databases) > 0 && !anyGlob(m.Databases, req.Database) {
		return false
	}
	if len(m.Applications) > 0 && !anyGlob(m.Applications, req.Application) {
		return false
	}
	if len(m.DBUsers) > 0 && !anyGlob(m.DBUsers, req.DBUser) {
		return false
	}
	if len(m.Groups) > 0 && !anyOfExact(m.Groups, c.identityGroups()) {
		return false
	}
	if len(m.Workloads) > 0 && !matchAnyWorkload(m.Workloads, req.Process) {
		return false
	}
	if len(m.Principals) > 0 {
		ok := false
		for _, g := range m.Principals {
			if c.inGroup(g) {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	if len(m.Environments) > 0 && !anyExact(m.Environments, c.environment()) {
		return false
	}
	if r.prg != nil && !c.cel(r, st) {
		return false
	}
	if estimated(r) && (req.Source != event.SourceProxy || (st.Kind != sqlparse.KindUpdate && st.Kind != sqlparse.KindDelete && st.Kind != sqlparse.KindMerge)) {
		// Only the proxy can ask the planner, and only about the statements that change
		// rows.
		return false
	}
	return true
}

func anyTable(patterns, tables []string) bool {
	for _, t := range tables {
		for _, p := range patterns {
			if tableMatch(p, t) {
				return true
			}
		}
	}
	return false
}

func anyFunction(patterns, funcs []string) bool {
	for _, f := range funcs {
		b := f
		if i := strings.LastIndexByte(f, '.'); i >= 0 {
			b = f[i+1:]
		}
		for _, p := range patterns {
			if glob(p, f) || glob(p, b) {
				return true
			}
		}
	}
	return false
}

func anyOf(patterns, values []string) bool {
	for _, v := range values {
		if anyGlob(patterns, v) {
			return true
		}
	}
	return false
}

func anyOfExact(want, have []string) bool {
	for _, h := range have {
		if anyExact(want, h) {
			return true
		}
	}
	return false
}

// anyColumn matches column patterns ("email", "users.email") against the statement's
// column references. A star reference ("*", "u.*") reads every column, so it matches any
// column pattern.
func (c *evalCtx) anyColumn(patterns []string, st *sqlparse.Stmt) bool {
	for _, col := range st.Columns {
		name := col
		if i := strings.LastIndexByte(col, '.'); i >= 0 {
			name = col[i+1:]
		}
		for _, p := range patterns {
			pTable, pCol := "", p
			if i := strings.LastIndexByte(p, '.'); i >= 0 {
				pTable, pCol = p[:i], p[i+1:]
			}
			if name != "*" && !glob(pCol, name) {
				continue
			}
			if pTable == "" || anyTable([]string{pTable}, st.Reads) || anyTable([]string{pTable}, st.Writes) {
				return true
			}
		}
	}
	return false
}
