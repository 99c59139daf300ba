package policy

import (
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/vigil-db/vigil/pkg/mask"
	"github.com/vigil-db/vigil/pkg/sqlparse"
	"go.yaml.in/yaml/v3"
)

// validator checks a decoded policy and reports errors at the line of the field at fault,
// which it finds by walking the YAML node tree alongside the decoded structs.
type validator struct {
	name     string
	root     *yaml.Node
	errs     []error
	warnings []string
}

// line finds the line of the node at path (mapping keys as strings, sequence indexes as
// ints); it stops at the deepest node found.
func (v *validator) line(path ...any) int {
	n := v.root
	if n.Kind == yaml.DocumentNode && len(n.Content) > 0 {
		n = n.Content[0]
	}
	line := n.Line
	for _, p := range path {
		switch k := p.(type) {
		case string:
			if n.Kind != yaml.MappingNode {
				return line
			}
			found := false
			for i := 0; i+1 < len(n.Content); i += 2 {
				if n.Content[i].Value == k {
					line = n.Content[i].Line
					n = n.Content[i+1]
					found = true
					break
				}
			}
			if !found {
				return line
			}
		case int:
			if n.Kind != yaml.SequenceNode || k >= len(n.Content) {
				return line
			}
			n = n.Content[k]
			line = n.Line
		}
	}
	return line
}

func (v *validator) errorf(path []any, format string, args ...any) {
	field := ""
	for _, p := range path {
		switch k := p.(type) {
		case string:
			if field != "" {
				field += "."
			}
			field += k
		case int:
			field += fmt.Sprintf("[%d]", k)
		}
	}
	v.errs = append(v.errs, fmt.Errorf("%s: line %d: %s: %s", v.name, v.line(path...), field, fmt.Sprintf(format, args...)))
}

func at(path []any, more ...any) []any {
	return append(append([]any(nil), path...), more...)
}

func (v *validator) policy(p *Policy) {
	if p.Version != 0 && p.Version != 1 {
		v.errorf([]any{"version"}, "unsupported policy version %d (this Vigil reads version 1)", p.Version)
	}
	if p.DefaultEnvironment == "" {
		p.DefaultEnvironment = DefaultEnvironment
	}
	if p.DefaultAction == "" {
		p.DefaultAction = ActionAllow
	} else if _, ok := severity[p.DefaultAction]; !ok {
		v.errorf([]any{"default_action"}, "unknown action %q (want %s)", p.DefaultAction, actionList())
	}
	seenEnv := map[string]bool{}
	for i, e := range p.Environments {
		path := []any{"environments", i}
		if e.Name == "" {
			v.errorf(at(path, "name"), "an environment needs a name")
		}
		if seenEnv[e.Name] {
			v.errorf(at(path, "name"), "environment %q is defined twice", e.Name)
		}
		seenEnv[e.Name] = true
		if len(e.Servers) == 0 && len(e.Databases) == 0 {
			v.errorf(path, "environment %q lists neither servers nor databases", e.Name)
		}
		for j, s := range e.Servers {
			if _, err := parseServerPattern(s); err != nil {
				v.errorf(at(path, "servers", j), "%v", err)
			}
		}
		v.globs(at(path, "databases"), e.Databases)
	}
	for name, g := range p.Principals {
		path := []any{"principals", name}
		if len(g.DBUsers)+len(g.OIDCGroups)+len(g.Emails)+len(g.Workloads) == 0 {
			v.errorf(path, "group %q has no members", name)
		}
		v.globs(at(path, "db_users"), g.DBUsers)
		v.globs(at(path, "emails"), g.Emails)
		for j, w := range g.Workloads {
			v.workload(at(path, "workloads", j), w)
		}
	}
	v.sensitive(&p.Sensitive)
	for i, w := range p.Enforce.Workloads {
		v.workload([]any{"enforce", "workloads", i}, w)
	}
	for i, g := range p.Enforce.Principals {
		if _, ok := p.Principals[g]; !ok {
			v.errorf([]any{"enforce", "principals", i}, "unknown principal group %q", g)
		}
	}
	seenRule := map[string]bool{}
	for i := range p.Rules {
		r := &p.Rules[i]
		path := []any{"rules", i}
		if r.Name == "" {
			v.errorf(at(path, "name"), "a rule needs a name (decisions cite it)")
		} else if seenRule[r.Name] {
			v.errorf(at(path, "name"), "rule %q is defined twice", r.Name)
		}
		seenRule[r.Name] = true
		if _, ok := severity[r.Action]; !ok {
			v.errorf(at(path, "action"), "unknown action %q (want %s)", r.Action, actionList())
		}
		if r.Raw && r.Action != ActionAllow && r.Action != ActionAlert {
			v.errorf(at(path, "raw"), "raw access can only be granted by allow or alert rules")
		}
		v.match(at(path, "match"), &r.Match, p, seenEnv)
		v.approval(at(path, "approval"), r, p)
		if f := r.Flag; f != nil {
			if f.For < 0 || (f.For > 0 && f.For < time.Second) {
				v.errorf(at(path, "flag", "for"), "for %v: want a duration of a second or more, such as 30m", f.For)
			}
			if r.Action == ActionBlock || r.Action == ActionRequireApproval {
				// Capture cannot refuse; a proxy that refuses has the workload already.
				v.warnings = append(v.warnings, fmt.Sprintf("%s: line %d: rule %s: a flag on a %s rule acts only on what capture sees (workloads that reach the server directly)",
					v.name, v.line(at(path, "flag")...), r.Name, r.Action))
			}
		}
	}
}

func (v *validator) approval(path []any, r *Rule, p *Policy) {
	a := r.Approval
	if a == nil {
		return
	}
	if r.Action != ActionRequireApproval {
		v.errorf(path, "an approval block needs action %s (this rule's action is %s)", ActionRequireApproval, r.Action)
	}
	// A bare number decodes as nanoseconds: "hold: 30" is a typo for 30s, not a wish.
	for _, d := range []struct {
		key string
		d   time.Duration
	}{{"hold", a.Hold}, {"expiry", a.Expiry}} {
		if d.d < 0 || (d.d > 0 && d.d < time.Second) {
			v.errorf(at(path, d.key), "%s %v: want a duration of a second or more, such as 30s or 15m", d.key, d.d)
		}
	}
	if a.Required < 0 {
		v.errorf(at(path, "required"), "required %d: want 1 or more approvers", a.Required)
	}
	if a.Uses < 0 {
		v.errorf(at(path, "uses"), "uses %d: want 1 or more", a.Uses)
	}
	for i, name := range a.Approvers {
		if user, ok := strings.CutPrefix(name, "os:"); ok {
			if user == "" {
				v.errorf(at(path, "approvers", i), "os: needs a user name (os:alice)")
			}
			continue
		}
		if _, ok := p.Principals[name]; !ok {
			v.errorf(at(path, "approvers", i), "unknown principal group %q (name a group from principals, or an OS user as os:NAME)", name)
		}
	}
}

func actionList() string {
	return strings.Join([]string{ActionAllow, ActionAlert, ActionBlock, ActionMask, ActionRequireApproval}, ", ")
}

// cleanFunctionName is an unquoted PostgreSQL function name as the parser folds it.
var cleanFunctionName = regexp.MustCompile(`^[a-z_][a-z0-9_$]*$`)

func (v *validator) sensitive(s *Sensitive) {
	path := []any{"sensitive"}
	if s.Detectors != nil {
		if _, err := mask.New(mask.Config{Key: []byte{0}, Detectors: *s.Detectors}); err != nil {
			v.errorf(at(path, "detectors"), "%v", err)
		}
	}
	if s.Strategy != nil {
		if err := s.Strategy.Validate(); err != nil {
			v.errorf(at(path, "strategy"), "%v", err)
		}
	}
	for i, f := range s.CleanFunctions {
		if !cleanFunctionName.MatchString(f) {
			v.errorf(at(path, "clean_functions", i), "%q is not a function name (lower-case, unqualified: a pg_catalog function)", f)
		}
	}
	for i, c := range s.Columns {
		cp := at(path, "columns", i)
		if len(c.Columns) == 0 {
			v.errorf(cp, "a sensitive entry needs columns")
		}
		v.globs(at(cp, "tables"), c.Tables)
		v.globs(at(cp, "columns"), c.Columns)
		if c.Strategy != nil {
			if err := c.Strategy.Validate(); err != nil {
				v.errorf(at(cp, "strategy"), "%v", err)
			}
		}
	}
	dp := at(path, "dictionary")
	known := map[string]bool{}
	for _, c := range DictionaryCategories() {
		known[c] = true
	}
	for i, c := range s.Dictionary.Disable {
		if !known[c] {
			v.errorf(at(dp, "disable", i), "unknown category %q (known: %s)", c, strings.Join(DictionaryCategories(), ", "))
		}
	}
	v.globs(at(dp, "except"), s.Dictionary.Except)
	for c, st := range s.Dictionary.Strategies {
		if !known[c] {
			v.errorf(at(dp, "strategies", c), "unknown category %q (known: %s)", c, strings.Join(DictionaryCategories(), ", "))
		} else if err := st.Validate(); err != nil {
			v.errorf(at(dp, "strategies", c), "%v", err)
		}
	}
	d, dsp := s.Discovery, at(path, "discovery")
	switch {
	case d.Interval < 0:
		v.errorf(at(dsp, "interval"), "must not be negative")
	case d.Timeout < 0:
		v.errorf(at(dsp, "timeout"), "must not be negative")
	case d.SampleRows < 0 || d.SampleRows > 10000:
		v.errorf(at(dsp, "sample_rows"), "must be between 1 and 10000")
	case d.MaxTables < 0:
		v.errorf(at(dsp, "max_tables"), "must not be negative")
	case d.MinShare < 0 || d.MinShare > 1:
		v.errorf(at(dsp, "min_share"), "must be between 0 and 1")
	case d.MinValues < 0:
		v.errorf(at(dsp, "min_values"), "must not be negative")
	}
}

func (v *validator) workload(path []any, w Workload) {
	if w.UID == nil && w.Exe == "" && w.Comm == "" && w.ContainerID == "" && w.Image == "" && w.Pod == "" &&
		w.Namespace == "" && w.ServiceAccount == "" && len(w.Labels) == 0 {
		v.errorf(path, "an empty workload selector would match every process")
	}
	for k := range w.Labels {
		if k == "" {
			v.errorf(path, "a label selector needs a label name")
		}
	}
}

func (v *validator) globs(path []any, list []string) {
	for i, g := range list {
		if g == "" {
			v.errorf(at(path, i), "empty pattern")
		}
	}
}

var knownKinds = map[string]bool{
	sqlparse.KindSelect: true, sqlparse.KindInsert: true, sqlparse.KindUpdate: true,
	sqlparse.KindDelete: true, sqlparse.KindMerge: true, sqlparse.KindDDL: true,
	sqlparse.KindDCL: true, sqlparse.KindTruncate: true, sqlparse.KindCopy: true,
	sqlparse.KindTxn: true, sqlparse.KindSet: true, sqlparse.KindOther: true,
}

func (v *validator) match(path []any, m *Match, p *Policy, envs map[string]bool) {
	for i, s := range m.Sources {
		if s != "ebpf" && s != "proxy" {
			v.errorf(at(path, "sources", i), "unknown source %q (want ebpf or proxy)", s)
		}
	}
	for i, s := range m.Protocols {
		if s != sqlparse.ProtocolPostgres && s != sqlparse.ProtocolMySQL {
			v.errorf(at(path, "protocols", i), "unknown protocol %q (want postgres or mysql)", s)
		}
	}
	for i, e := range m.Environments {
		if !envs[e] && e != p.DefaultEnvironment {
			v.errorf(at(path, "environments", i), "unknown environment %q (define it under environments, or use %q)", e, p.DefaultEnvironment)
		}
	}
	for i, g := range m.Principals {
		if _, ok := p.Principals[g]; !ok {
			v.errorf(at(path, "principals", i), "unknown principal group %q", g)
		}
	}
	for i := range m.Kinds {
		m.Kinds[i] = strings.ToUpper(m.Kinds[i])
		if !knownKinds[m.Kinds[i]] {
			v.errorf(at(path, "kinds", i), "unknown statement kind %q", m.Kinds[i])
		}
	}
	for i := range m.Commands {
		m.Commands[i] = strings.ToUpper(m.Commands[i])
	}
	for i, f := range m.Flags {
		if _, ok := sqlparse.ParseFlag(f); !ok {
			v.errorf(at(path, "flags", i), "unknown flag %q (known: %s)", f, strings.Join(sqlparse.FlagNames(), ", "))
		}
	}
	for _, l := range []struct {
		key  string
		list []string
	}{{"databases", m.Databases}, {"db_users", m.DBUsers}, {"groups", m.Groups}, {"applications", m.Applications},
		{"commands", m.Commands}, {"tables", m.Tables}, {"writes", m.Writes}, {"columns", m.Columns},
		{"functions", m.Functions}, {"variables", m.Variables}} {
		v.globs(at(path, l.key), l.list)
	}
	for i, w := range m.Workloads {
		v.workload(at(path, "workloads", i), w)
	}
	if r := m.EstimatedRowsOver; r != nil && *r < 0 {
		v.errorf(at(path, "estimated_rows_over"), "want a row count of 0 or more, got %v", *r)
	}
	if s := m.EstimatedShareOver; s != nil && (*s < 0 || *s >= 1) {
		v.errorf(at(path, "estimated_share_over"), "want a share of the table from 0 up to (not including) 1, got %v", *s)
	}
	if m.When != "" {
		if _, err := compileCEL(m.When); err != nil {
			v.errorf(at(path, "when"), "%v", err)
		}
	}
}
