package sqlparse

import (
	"slices"
	"strings"

	pg "github.com/pganalyze/pg_query_go/v6"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// Whether a WHERE restricts the target of an UPDATE/DELETE is decided by proof, not by
// spotting tautologies: a predicate restricts only when the analysis below can show that it
// compares the target's own row with something that is not the same row (a constant, a
// parameter, another table's row), and every shape it cannot read — a predicate only on a
// USING table, a function of the row, a pattern it cannot see, a subquery over the target
// itself — counts as touching every row. For production that sends the statement to the
// policy's no-effective-WHERE rule, where a person can approve it, instead of letting it
// through on the benefit of the doubt (the shapes that deleted every row while looking
// restricted are in the corpus beside this file's tests).

// scope is what a predicate's column references can refer to.
type scope struct {
	// names are the target's names in this statement (its alias, or its relation name).
	names []string
	// rel is the target's relation name, to recognise the target read again elsewhere.
	rel string
	// others are the other tables in the statement's FROM/USING, by name or alias, with the
	// relation each stands for ("" for subqueries and functions).
	others map[string]string
	// inner is set inside a subquery: its unqualified columns are the subquery's own.
	inner bool
	// ctes are the statement's WITH queries, by name.
	ctes map[string]*pg.Node
}

// systemColumns never hold NULL and are not the row's data.
var systemColumns = map[string]bool{"ctid": true, "xmin": true, "xmax": true, "cmin": true, "cmax": true, "tableoid": true, "oid": true}

// refs is what an expression's column references point at.
type refs struct {
	target  bool // the target row
	self    bool // another reference to the target's relation (a self-join), as good as target
	other   bool // another table's row
	unknown bool // unqualified where several tables could own the column
	system  bool // only system columns of the target
}

func (p *pred) scan(n *pg.Node) refs { return p.scanFrom(n, 0) }

// scanFrom scans n as if sub subqueries deep.
func (p *pred) scanFrom(n *pg.Node, sub0 int) refs {
	var r refs
	if n == nil {
		return r
	}
	sys, data := false, false
	// shadow holds the statement's names that a subquery's own FROM reuses: inside it,
	// victim.id in (SELECT … FROM customers victim) is the customer's.
	var visit func(m protoreflect.Message, sub int, shadow map[string]bool)
	visit = func(m protoreflect.Message, sub int, shadow map[string]bool) {
		switch x := m.Interface().(type) {
		case *pg.ColumnRef:
			last := x.Fields[len(x.Fields)-1].GetString_().GetSval()
			if len(x.Fields) > 1 && shadow[x.Fields[len(x.Fields)-2].GetString_().GetSval()] {
				r.other = true
				return
			}
			switch owner := p.owner(x, sub); owner {
			case ownTarget:
				r.target = true
				if systemColumns[last] {
					sys = true
				} else {
					data = true
				}
			case ownSelf:
				r.self = true
			case ownOther:
				r.other = true
			case ownUnknown:
				r.unknown = true
			}
			return
		case *pg.SubLink, *pg.RangeSubselect:
			sub++
		case *pg.SelectStmt:
			if sub > 0 {
				shadow = p.shadowed(x, shadow)
			}
		}
		m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
			if fd.Kind() != protoreflect.MessageKind || fd.IsMap() {
				return true
			}
			if fd.IsList() {
				l := v.List()
				for i := 0; i < l.Len(); i++ {
					visit(l.Get(i).Message(), sub, shadow)
				}
			} else {
				visit(v.Message(), sub, shadow)
			}
			return true
		})
	}
	visit(n.ProtoReflect(), sub0, nil)
	r.system = sys && !data
	return r
}

// shadowed adds to shadow the names of p's statement that sel's FROM introduces again.
func (p *pred) shadowed(sel *pg.SelectStmt, shadow map[string]bool) map[string]bool {
	var out map[string]bool
	for nm := range fromNames(sel.FromClause) {
		_, other := p.sc.others[nm]
		if !slices.Contains(p.sc.names, nm) && !other || shadow[nm] {
			continue
		}
		if out == nil {
			out = map[string]bool{}
			for k := range shadow {
				out[k] = true
			}
		}
		out[nm] = true
	}
	if out == nil {
		return shadow
	}
	return out
}

type owner int

const (
	ownNone owner = iota
	ownTarget
	ownSelf
	ownOther
	ownUnknown
)

// owner says whose column a reference is. Inside a subquery (sub > 0) only references
// qualified with a name of the outer statement reach out of it.
func (p *pred) owner(c *pg.ColumnRef, sub int) owner {
	if len(c.Fields) == 1 {
		switch {
		case sub > 0 || p.sc.inner:
			return ownOther
		case len(p.sc.others) == 0:
			return ownTarget
		}
		return ownUnknown
	}
	q := c.Fields[len(c.Fields)-2].GetString_().GetSval()
	if _, own := p.sc.others[q]; p.sc.inner && own {
		return ownOther // the subquery's table of that name hides the target's
	}
	if slices.Contains(p.sc.names, q) {
		return ownTarget
	}
	if rel, ok := p.sc.others[q]; ok {
		if rel != "" && rel == p.sc.rel {
			return ownSelf
		}
		return ownOther
	}
	if sub > 0 || p.sc.inner {
		return ownOther // the subquery's own tables
	}
	return ownUnknown
}

// restricts reports whether n provably selects some rows of the target and not others.
func (p *pred) restricts(n *pg.Node) bool {
	if n == nil {
		return false
	}
	switch x := n.Node.(type) {
	case *pg.Node_BoolExpr:
		b := x.BoolExpr
		switch b.Boolop {
		case pg.BoolExprType_AND_EXPR:
			return slices.ContainsFunc(b.Args, p.restricts)
		case pg.BoolExprType_OR_EXPR:
			// Every arm must restrict, save those that select nothing.
			n := 0
			for _, a := range b.Args {
				if p.predicate(a) == never {
					continue
				}
				if !p.restricts(a) {
					return false
				}
				n++
			}
			return n > 0
		case pg.BoolExprType_NOT_EXPR:
			return len(b.Args) == 1 && p.restricts(b.Args[0])
		}
	case *pg.Node_AExpr:
		return p.restrictsExpr(x.AExpr)
	case *pg.Node_NullTest:
		r := p.scan(x.NullTest.Arg)
		return r.target && !r.system && !r.self && !r.unknown
	case *pg.Node_BooleanTest:
		return p.restricts(x.BooleanTest.Arg)
	case *pg.Node_TypeCast:
		return isBoolType(x.TypeCast.TypeName) && p.restricts(x.TypeCast.Arg)
	case *pg.Node_ColumnRef:
		// A boolean column of the row.
		r := p.scan(n)
		return r.target && !r.system
	case *pg.Node_SubLink:
		return p.restrictsSubLink(x.SubLink)
	}
	return false
}

// compares reports whether a comparison of l with r restricts: one side is the target row,
// the other is not (a constant, a parameter, another table's row, an uncorrelated
// subquery). eq says the comparison is an equality: only then does a single value read
// from the target itself, id = (SELECT max(id) FROM target), restrict; any other
// comparison with what the target's unrestricted rows yield (id >= (SELECT min(id) …), id
// = ANY (ARRAY(SELECT id …))) can be made to hold for every row.
func (p *pred) compares(l, r *pg.Node, eq bool) bool {
	l, r = p.simplify(l), p.simplify(r)
	lr, rr := p.scan(l), p.scan(r)
	if lr.unknown || rr.unknown || lr.self || rr.self {
		return false
	}
	if lr.target == rr.target {
		return false // both sides the row (id = coalesce($1, id)), or neither
	}
	row, other := lr, r
	if rr.target {
		row, other = rr, l
	}
	if row.system {
		return false
	}
	if eq && isScalarSubquery(other) {
		return true
	}
	return !p.readsTargetIn(other)
}

// isScalarSubquery reports a (possibly cast) scalar subquery: one value.
func isScalarSubquery(n *pg.Node) bool {
	for n.GetTypeCast() != nil {
		n = n.GetTypeCast().Arg
	}
	sl := n.GetSubLink()
	return sl != nil && sl.SubLinkType == pg.SubLinkType_EXPR_SUBLINK
}

// readsTargetIn reports whether an expression holds a subquery that reads the target's
// relation without restricting which of its rows it reads.
func (p *pred) readsTargetIn(n *pg.Node) bool {
	return anyNode(n.ProtoReflect(), func(m protoreflect.Message) (found, stop bool) {
		if sl, ok := m.Interface().(*pg.SubLink); ok {
			if sel := sl.Subselect.GetSelectStmt(); sel != nil && p.readsTarget(sel, 0) && !p.restrictedRead(sel, 0) {
				return true, true
			}
		}
		return false, false
	})
}

func (p *pred) restrictsExpr(e *pg.A_Expr) bool {
	switch e.Kind {
	case pg.A_Expr_Kind_AEXPR_OP:
		switch opName(e.Name) {
		case "~", "~*", "!~", "!~*":
			return p.restrictsPattern(e.Lexpr, e.Rexpr, regexRestricts)
		case "~~", "~~*", "!~~", "!~~*": // LIKE written as an operator
			return p.restrictsPattern(e.Lexpr, e.Rexpr, likeRestricts)
		}
		// Comparisons and the other boolean operators (@>, &&, ?): the row against what
		// is not the row.
		return p.compares(e.Lexpr, e.Rexpr, opName(e.Name) == "=")
	case pg.A_Expr_Kind_AEXPR_OP_ANY, pg.A_Expr_Kind_AEXPR_OP_ALL:
		return p.compares(e.Lexpr, e.Rexpr, false)
	case pg.A_Expr_Kind_AEXPR_DISTINCT, pg.A_Expr_Kind_AEXPR_NOT_DISTINCT:
		return p.compares(e.Lexpr, e.Rexpr, e.Kind == pg.A_Expr_Kind_AEXPR_NOT_DISTINCT)
	case pg.A_Expr_Kind_AEXPR_LIKE, pg.A_Expr_Kind_AEXPR_ILIKE:
		return p.restrictsPattern(e.Lexpr, e.Rexpr, likeRestricts)
	case pg.A_Expr_Kind_AEXPR_SIMILAR:
		// The grammar wraps the pattern in similar_to_escape(pattern [, escape]).
		pat := e.Rexpr
		if fc := pat.GetFuncCall(); fc != nil && len(fc.Args) > 0 && qualifiedName(fc.Funcname) == "pg_catalog.similar_to_escape" {
			pat = fc.Args[0]
		}
		return p.restrictsPattern(e.Lexpr, pat, regexRestricts)
	case pg.A_Expr_Kind_AEXPR_IN:
		l := p.scan(p.simplify(e.Lexpr))
		if !l.target || l.system || l.unknown || l.self {
			return false
		}
		for _, it := range e.Rexpr.GetList().GetItems() {
			if r := p.scan(p.simplify(it)); r.target || r.self || r.unknown || !isScalarSubquery(it) && p.readsTargetIn(it) {
				return false
			}
		}
		return true
	case pg.A_Expr_Kind_AEXPR_BETWEEN, pg.A_Expr_Kind_AEXPR_NOT_BETWEEN, pg.A_Expr_Kind_AEXPR_BETWEEN_SYM, pg.A_Expr_Kind_AEXPR_NOT_BETWEEN_SYM:
		items := e.Rexpr.GetList().GetItems()
		if len(items) != 2 {
			return false
		}
		return p.compares(e.Lexpr, items[0], false) && p.compares(e.Lexpr, items[1], false)
	}
	return false
}

// restrictsPattern judges a pattern match: the row against a pattern that is a constant
// the analysis can read (folded, so '%' concatenated with an empty string is '%') and that
// does not match every value. A pattern from a parameter or an expression is not proof.
func (p *pred) restrictsPattern(l, pat *pg.Node, ok func(string) bool) bool {
	lr := p.scan(l)
	if !lr.target || lr.system || lr.unknown || lr.self {
		return false
	}
	v, folded := p.fold(pat)
	if !folded || v.kind != 's' {
		return false
	}
	return ok(v.s)
}

// likeRestricts: a LIKE pattern restricts when it holds a character that must be present
// ('%' and '_' alone match every value, or every non-empty one).
func likeRestricts(s string) bool {
	return strings.Trim(s, "%_") != ""
}

// regexRestricts: a regular expression (or SIMILAR TO pattern) restricts when it holds a
// literal character that every match must contain, that is one not made optional by what
// follows it, outside alternation and groups. Anything cleverer is not proof.
func regexRestricts(s string) bool {
	if strings.ContainsAny(s, "|()[]\\") {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '{' {
			// A bound {m,n} is a quantifier, not literal digits; what it follows may be
			// repeated zero times (a{0}).
			if j := strings.IndexByte(s[i:], '}'); j > 0 {
				i += j
			}
			continue
		}
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == ' ' || c == '@' || c == '-') {
			continue
		}
		if i+1 < len(s) && strings.IndexByte("*?{", s[i+1]) >= 0 {
			continue
		}
		return true
	}
	return false
}

// restrictsSubLink judges EXISTS, IN (subquery) and ANY/ALL.
func (p *pred) restrictsSubLink(sl *pg.SubLink) bool {
	sel := sl.Subselect.GetSelectStmt()
	if sel == nil {
		return false
	}
	switch sl.SubLinkType {
	case pg.SubLinkType_EXISTS_SUBLINK:
		// Restricts when it is correlated with the target row, through a restricting
		// predicate, over tables other than the target.
		if p.readsTarget(sel, 0) {
			return false
		}
		inner := p.nested(scope{names: p.sc.names, rel: p.sc.rel, others: fromNames(sel.FromClause), inner: true, ctes: p.sc.ctes})
		ok := inner.restricts(sel.WhereClause)
		p.absorb(inner)
		return ok
	case pg.SubLinkType_ANY_SUBLINK, pg.SubLinkType_ALL_SUBLINK:
		l := p.scan(sl.Testexpr)
		if !l.target || l.system || l.unknown || l.self {
			return false
		}
		if sub := p.scanFrom(sl.Subselect, 1); sub.target || sub.self {
			return false // correlated with the row: id IN (SELECT victim.id …)
		}
		if !p.readsTarget(sel, 0) {
			return true
		}
		// The target's own values: only a restricted read of them restricts.
		return p.restrictedRead(sel, 0)
	}
	return false
}

// readsTarget reports whether a query reads the target's relation, directly, through a
// CTE of the statement, or in a nested subquery of its FROM.
func (p *pred) readsTarget(sel *pg.SelectStmt, depth int) bool {
	if sel == nil || depth > 8 {
		return sel != nil // too deep to tell: assume it does
	}
	defer p.withCTEs(sel.WithClause)()
	if sel.Op != pg.SetOperation_SETOP_NONE {
		return p.readsTarget(sel.Larg, depth+1) || p.readsTarget(sel.Rarg, depth+1)
	}
	var from func(n *pg.Node) bool
	from = func(n *pg.Node) bool {
		switch x := n.Node.(type) {
		case *pg.Node_RangeVar:
			if q, ok := p.sc.ctes[x.RangeVar.Relname]; ok && x.RangeVar.Schemaname == "" {
				return p.readsTarget(q.GetSelectStmt(), depth+1) || q.GetSelectStmt() == nil
			}
			return x.RangeVar.Relname == p.sc.rel
		case *pg.Node_RangeSubselect:
			return p.readsTarget(x.RangeSubselect.Subquery.GetSelectStmt(), depth+1)
		case *pg.Node_JoinExpr:
			return from(x.JoinExpr.Larg) || from(x.JoinExpr.Rarg)
		case *pg.Node_RangeTableSample:
			return from(x.RangeTableSample.Relation)
		}
		// A function over a subquery of the target (unnest((SELECT array_agg(id) FROM t))).
		return p.subqueryReads(n, depth)
	}
	return slices.ContainsFunc(sel.FromClause, from) || slices.ContainsFunc(sel.TargetList, func(n *pg.Node) bool { return p.subqueryReads(n, depth) })
}

// subqueryReads reports whether an expression holds a subquery that reads the target.
func (p *pred) subqueryReads(n *pg.Node, depth int) bool {
	return anyNode(n.ProtoReflect(), func(m protoreflect.Message) (found, stop bool) {
		if sl, ok := m.Interface().(*pg.SubLink); ok {
			return p.readsTarget(sl.Subselect.GetSelectStmt(), depth+1), true
		}
		return false, false
	})
}

// anyNode searches the parse tree under m depth first: match says whether a node is what is
// sought, and whether to stop descending below it.
func anyNode(m protoreflect.Message, match func(protoreflect.Message) (found, stop bool)) bool {
	if found, stop := match(m); found || stop {
		return found
	}
	found := false
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		if fd.Kind() != protoreflect.MessageKind || fd.IsMap() {
			return true
		}
		if fd.IsList() {
			for i, l := 0, v.List(); i < l.Len() && !found; i++ {
				found = anyNode(l.Get(i).Message(), match)
			}
		} else {
			found = anyNode(v.Message(), match)
		}
		return !found
	})
	return found
}

// restrictedRead reports whether a query over the target reads only some of its rows: a
// LIMIT, or a WHERE that restricts the target under its name there — at this level, or in
// the CTE or subquery it reads from.
func (p *pred) restrictedRead(sel *pg.SelectStmt, depth int) bool {
	if sel == nil || depth > 8 || sel.Op != pg.SetOperation_SETOP_NONE {
		return false
	}
	defer p.withCTEs(sel.WithClause)()
	if sel.LimitCount != nil {
		if v, ok := p.fold(sel.LimitCount); ok && v.kind == 'n' {
			return true
		}
	}
	if len(sel.FromClause) != 1 {
		return false
	}
	var names []string
	var next *pg.SelectStmt
	switch x := sel.FromClause[0].Node.(type) {
	case *pg.Node_RangeVar:
		rv := x.RangeVar
		names = targetNames(rv)
		if q, ok := p.sc.ctes[rv.Relname]; ok && rv.Schemaname == "" {
			next = q.GetSelectStmt()
		}
	case *pg.Node_RangeSubselect:
		if x.RangeSubselect.Alias != nil {
			names = []string{x.RangeSubselect.Alias.Aliasname}
		}
		next = x.RangeSubselect.Subquery.GetSelectStmt()
	default:
		return false
	}
	inner := p.nested(scope{names: names, rel: p.sc.rel, ctes: p.sc.ctes})
	ok := sel.WhereClause != nil && inner.predicate(sel.WhereClause) == filter && inner.restricts(sel.WhereClause)
	p.absorb(inner)
	return ok || next != nil && p.restrictedRead(next, depth+1)
}

// nested is a pred for a subquery of p's statement, with its parameters.
func (p *pred) nested(sc scope) *pred {
	return &pred{sc: sc, params: p.params, bound: p.bound}
}

// absorb takes on what a nested pred's verdict read.
func (p *pred) absorb(q *pred) {
	p.readsLiteral = p.readsLiteral || q.readsLiteral
	p.readsParam = p.readsParam || q.readsParam
}

// withCTEs makes the WITH queries of a subquery visible while it is judged (the statement's
// own stay, unless the subquery's shadow them); the returned function restores the scope.
func (p *pred) withCTEs(w *pg.WithClause) func() {
	if w == nil {
		return func() {}
	}
	saved := p.sc.ctes
	m := map[string]*pg.Node{}
	for k, v := range saved {
		m[k] = v
	}
	for k, v := range cteMap(w) {
		m[k] = v
	}
	p.sc.ctes = m
	return func() { p.sc.ctes = saved }
}

// fromNames maps the names that a FROM/USING list introduces to the relations behind them.
func fromNames(items []*pg.Node) map[string]string {
	out := map[string]string{}
	var add func(n *pg.Node)
	add = func(n *pg.Node) {
		switch x := n.Node.(type) {
		case *pg.Node_RangeVar:
			rv := x.RangeVar
			if rv.Alias != nil && rv.Alias.Aliasname != "" {
				out[rv.Alias.Aliasname] = rv.Relname
			} else {
				out[rv.Relname] = rv.Relname
			}
		case *pg.Node_RangeSubselect:
			if a := x.RangeSubselect.Alias; a != nil {
				out[a.Aliasname] = ""
			}
		case *pg.Node_RangeFunction:
			if a := x.RangeFunction.Alias; a != nil {
				out[a.Aliasname] = ""
			}
		case *pg.Node_RangeTableSample:
			add(x.RangeTableSample.Relation)
		case *pg.Node_JoinExpr:
			add(x.JoinExpr.Larg)
			add(x.JoinExpr.Rarg)
			if a := x.JoinExpr.Alias; a != nil {
				out[a.Aliasname] = ""
			}
		}
	}
	for _, it := range items {
		add(it)
	}
	return out
}

// cteMap indexes a statement's WITH queries by name.
func cteMap(w *pg.WithClause) map[string]*pg.Node {
	if w == nil {
		return nil
	}
	m := map[string]*pg.Node{}
	for _, c := range w.Ctes {
		if cte := c.GetCommonTableExpr(); cte != nil {
			m[cte.Ctename] = cte.Ctequery
		}
	}
	return m
}
