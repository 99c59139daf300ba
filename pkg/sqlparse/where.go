package sqlparse

import (
	"math/big"
	"slices"
	"strings"

	pg "github.com/pganalyze/pg_query_go/v6"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// truth is what a predicate selects, as far as the parse tree alone can tell.
type truth uint8

const (
	// filter: depends on the row; selects some rows.
	filter truth = iota
	// always: true (or NULL) for every row: a tautology such as id = id.
	always
	// never: false for every row.
	never
	// rowFree: does not depend on the row and cannot be folded here ($1, now() > '2020'):
	// it selects every row or none.
	rowFree
)

// pred judges the predicates of one DML statement whose target is known by names.
// readsLiteral records that a verdict looked at a literal's value (1 = 1 is a tautology,
// id = 1 is not; x = 'a' OR x <> 'a' covers every row, x = 'a' OR x <> 'b' does not): such
// a classification holds only for the literals it was made with, so the template cache
// never serves it for others.
//
// params are the values bound to $1, $2, … when the statement is judged at Bind (bound is
// then set); at Parse a parameter may be anything, NULL included. readsParam records that
// a verdict looked at a parameter, so a Bind may judge it again with the values.
type pred struct {
	sc           scope
	readsLiteral bool
	params       []Param
	bound        bool
	readsParam   bool
}

// Param is one value bound to a parameter, as far as the classifier can read it.
type Param struct {
	// Null: the parameter is bound to NULL.
	Null bool
	// Known: Text is its value (sent in text format). A value sent in binary is not NULL
	// but unread: a pattern or a boolean in it proves nothing.
	Known bool
	Text  string
}

// constString is constString, noting that a literal was read.
func (p *pred) constString(n *pg.Node) (string, bool) {
	p.readsLiteral = true
	return constString(n)
}

// effectiveWhere reports whether where really restricts the rows of an UPDATE/DELETE: it
// is not a tautology or independent of the row (predicate), and it provably restricts the
// target (restricts). No WHERE counts as none.
func (p *pred) effectiveWhere(where *pg.Node) bool {
	if where == nil {
		return false
	}
	if where.GetCurrentOfExpr() != nil {
		return true
	}
	return !p.selectsAll(where)
}

// selectsAll reports whether a predicate is not proved to select only some of the target's
// rows. One that selects none (false) counts as unproved at Parse, but with the values of
// a Bind (bound to NULL: WHERE $1 AND flag) it touches nothing, and a Bind is never judged
// worse than its Parse.
func (p *pred) selectsAll(n *pg.Node) bool {
	switch p.predicate(n) {
	case filter:
		return !p.restricts(n)
	case never:
		return !p.bound
	}
	return true
}

// mergeTouchesAll reports whether a MERGE updates or deletes every target row: an ON
// condition that does not filter with an unconditional WHEN MATCHED UPDATE/DELETE, or an
// unconditional WHEN NOT MATCHED BY SOURCE UPDATE/DELETE (which hits every target row the
// source lacks — all of them for an empty source).
func (p *pred) mergeTouchesAll(x *pg.MergeStmt) bool {
	onAll := p.selectsAll(x.JoinCondition)
	for _, c := range x.MergeWhenClauses {
		wc := c.GetMergeWhenClause()
		if wc == nil || (wc.CommandType != pg.CmdType_CMD_UPDATE && wc.CommandType != pg.CmdType_CMD_DELETE) {
			continue
		}
		condAll := wc.Condition == nil || p.selectsAll(wc.Condition)
		switch wc.MatchKind {
		case pg.MergeMatchKind_MERGE_WHEN_MATCHED:
			if onAll && condAll {
				return true
			}
		case pg.MergeMatchKind_MERGE_WHEN_NOT_MATCHED_BY_SOURCE:
			if condAll {
				return true
			}
		}
	}
	return false
}

func (p *pred) predicate(n *pg.Node) truth {
	if n == nil {
		return always
	}
	if !rowDependent(n, p.sc.names) {
		switch v, ok := p.foldBool(n); {
		case !ok:
			return rowFree
		case v:
			return always
		default:
			return never
		}
	}
	switch x := n.Node.(type) {
	case *pg.Node_BoolExpr:
		return p.boolPredicate(x.BoolExpr)
	case *pg.Node_AExpr:
		return p.exprPredicate(x.AExpr)
	case *pg.Node_TypeCast:
		if isBoolType(x.TypeCast.TypeName) {
			return p.predicate(x.TypeCast.Arg)
		}
	case *pg.Node_SubLink:
		if selfInSubquery(x.SubLink, p.sc.names) {
			return always
		}
		if p.emptyQuery(x.SubLink.Subselect.GetSelectStmt()) {
			// Over no rows: EXISTS and IN are false for every row, ALL is true, and
			// NOT EXISTS / NOT IN (their negation) true.
			switch x.SubLink.SubLinkType {
			case pg.SubLinkType_EXISTS_SUBLINK, pg.SubLinkType_ANY_SUBLINK:
				return never
			case pg.SubLinkType_ALL_SUBLINK:
				return always
			}
		}
	case *pg.Node_BooleanTest:
		// x IS TRUE / IS NOT FALSE keep the truth of x where x is not NULL.
		switch x.BooleanTest.Booltesttype {
		case pg.BoolTestType_IS_TRUE, pg.BoolTestType_IS_NOT_FALSE:
			return p.predicate(x.BooleanTest.Arg)
		case pg.BoolTestType_IS_FALSE, pg.BoolTestType_IS_NOT_TRUE:
			return negate(p.predicate(x.BooleanTest.Arg))
		}
	}
	return filter
}

func negate(t truth) truth {
	switch t {
	case always:
		return never
	case never:
		return always
	}
	return t
}

func (p *pred) boolPredicate(b *pg.BoolExpr) truth {
	switch b.Boolop {
	case pg.BoolExprType_NOT_EXPR:
		if len(b.Args) == 1 {
			return negate(p.predicate(b.Args[0]))
		}
	case pg.BoolExprType_AND_EXPR:
		res := always
		for _, a := range b.Args {
			switch p.predicate(a) {
			case never:
				return never
			case filter:
				res = filter
			case rowFree:
				if res == always {
					res = rowFree
				}
			}
		}
		if res == filter && p.complementary(b.Args) {
			return never // x AND NOT x, x < y AND x >= y: no row
		}
		return res
	case pg.BoolExprType_OR_EXPR:
		res := never
		for _, a := range b.Args {
			switch p.predicate(a) {
			case always:
				return always
			case rowFree:
				res = rowFree
			case filter:
				if res == never {
					res = filter
				}
			}
		}
		if res == filter && (p.complementary(b.Args) || p.coversAll(b.Args)) {
			return always
		}
		return res
	}
	return filter
}

// complementary finds, among the arms of an OR, a pair that together cover every row:
// x IS NULL / x IS NOT NULL, x / NOT x, x < y / x >= y (and the other comparison pairs).
func (p *pred) complementary(args []*pg.Node) bool {
	for i, a := range args {
		for _, b := range args[i+1:] {
			if p.complementPair(a, b) || p.complementPair(b, a) {
				return true
			}
		}
	}
	return false
}

var opComplement = map[string]string{"<": ">=", ">": "<=", "=": "<>", "<=": ">", ">=": "<", "<>": "=", "!=": "="}

func (p *pred) complementPair(a, b *pg.Node) bool {
	if na, nb := a.GetNullTest(), b.GetNullTest(); na != nil && nb != nil {
		return na.Nulltesttype != nb.Nulltesttype && p.sameExpr(na.Arg, nb.Arg)
	}
	if ta, tb := a.GetBooleanTest(), b.GetBooleanTest(); ta != nil && tb != nil {
		// x IS TRUE / x IS NOT TRUE, and the FALSE and UNKNOWN pairs.
		pair := map[pg.BoolTestType]pg.BoolTestType{
			pg.BoolTestType_IS_TRUE: pg.BoolTestType_IS_NOT_TRUE, pg.BoolTestType_IS_FALSE: pg.BoolTestType_IS_NOT_FALSE,
			pg.BoolTestType_IS_UNKNOWN: pg.BoolTestType_IS_NOT_UNKNOWN,
		}
		return pair[ta.Booltesttype] == tb.Booltesttype && p.sameExpr(ta.Arg, tb.Arg)
	}
	if nb := b.GetBoolExpr(); nb != nil && nb.Boolop == pg.BoolExprType_NOT_EXPR && len(nb.Args) == 1 {
		return p.sameExpr(a, nb.Args[0])
	}
	ea, eb := a.GetAExpr(), b.GetAExpr()
	if ea == nil || eb == nil || ea.Kind != pg.A_Expr_Kind_AEXPR_OP || eb.Kind != pg.A_Expr_Kind_AEXPR_OP {
		return false
	}
	oa, ob := opName(ea.Name), opName(eb.Name)
	return opComplement[oa] == ob && p.sameExpr(ea.Lexpr, eb.Lexpr) && p.sameExpr(ea.Rexpr, eb.Rexpr)
}

func (p *pred) exprPredicate(e *pg.A_Expr) truth {
	if e.Kind == pg.A_Expr_Kind_AEXPR_OP || e.Kind == pg.A_Expr_Kind_AEXPR_DISTINCT || e.Kind == pg.A_Expr_Kind_AEXPR_NOT_DISTINCT {
		e = &pg.A_Expr{Kind: e.Kind, Name: e.Name, Lexpr: p.simplify(e.Lexpr), Rexpr: p.simplify(e.Rexpr)}
	}
	switch e.Kind {
	case pg.A_Expr_Kind_AEXPR_OP:
		switch op := opName(e.Name); op {
		case "=", "<=", ">=":
			if p.sameExpr(e.Lexpr, e.Rexpr) {
				return always
			}
		case "<>", "!=", "<", ">":
			if p.sameExpr(e.Lexpr, e.Rexpr) {
				return never
			}
		case "~", "~*":
			if s, ok := p.constString(e.Rexpr); ok && (s == "" || s == ".*" || s == "^" || s == "$") {
				return always
			}
		}
	case pg.A_Expr_Kind_AEXPR_OP_ANY, pg.A_Expr_Kind_AEXPR_OP_ALL:
		if p.emptyArray(e.Rexpr) {
			// x op ANY ('{}') is false, x op ALL ('{}') true, for every row.
			if e.Kind == pg.A_Expr_Kind_AEXPR_OP_ALL {
				return always
			}
			return never
		}
	case pg.A_Expr_Kind_AEXPR_NOT_DISTINCT:
		if p.sameExpr(e.Lexpr, e.Rexpr) {
			return always
		}
	case pg.A_Expr_Kind_AEXPR_DISTINCT:
		if p.sameExpr(e.Lexpr, e.Rexpr) {
			return never
		}
	case pg.A_Expr_Kind_AEXPR_LIKE, pg.A_Expr_Kind_AEXPR_ILIKE:
		if s, ok := p.constString(e.Rexpr); ok && s != "" && strings.Trim(s, "%") == "" && !strings.HasPrefix(opName(e.Name), "!") {
			return always
		}
	case pg.A_Expr_Kind_AEXPR_IN:
		if opName(e.Name) == "=" {
			for _, it := range e.Rexpr.GetList().GetItems() {
				if p.sameExpr(e.Lexpr, it) {
					return always
				}
			}
		}
	case pg.A_Expr_Kind_AEXPR_BETWEEN, pg.A_Expr_Kind_AEXPR_BETWEEN_SYM:
		if items := e.Rexpr.GetList().GetItems(); len(items) == 2 && p.sameExpr(e.Lexpr, items[0]) && p.sameExpr(e.Lexpr, items[1]) {
			return always
		}
	}
	return filter
}

// emptyQuery reports a query that provably returns no rows: its WHERE is false (folded,
// so also c.id = t.id AND false), or its LIMIT is 0.
func (p *pred) emptyQuery(sel *pg.SelectStmt) bool {
	if sel == nil || sel.Op != pg.SetOperation_SETOP_NONE || len(sel.ValuesLists) > 0 {
		return false
	}
	if sel.LimitCount != nil {
		if v, ok := p.fold(sel.LimitCount); ok && v.kind == 'n' && v.n.Sign() == 0 {
			return true
		}
	}
	return sel.WhereClause != nil && p.predicate(sel.WhereClause) == never && len(sel.GroupClause) == 0 && sel.HavingClause == nil &&
		!hasAggregate(sel.TargetList)
}

// hasAggregate reports a target list that may aggregate (SELECT count(*) … WHERE false is
// one row): any function call counts.
func hasAggregate(targets []*pg.Node) bool {
	return slices.ContainsFunc(targets, func(t *pg.Node) bool {
		return anyNode(t.ProtoReflect(), func(m protoreflect.Message) (found, stop bool) {
			_, ok := m.Interface().(*pg.FuncCall)
			return ok, ok
		})
	})
}

// emptyArray reports an array with no elements: '{}' (cast or not) or ARRAY[].
func (p *pred) emptyArray(n *pg.Node) bool {
	for n.GetTypeCast() != nil {
		n = n.GetTypeCast().Arg
	}
	if a := n.GetAArrayExpr(); a != nil {
		return len(a.Elements) == 0
	}
	s, ok := p.constString(n)
	return ok && strings.TrimSpace(strings.Trim(strings.TrimSpace(s), "{}")) == "" && strings.HasPrefix(strings.TrimSpace(s), "{")
}

// selfInSubquery recognizes "col IN (SELECT col FROM target)": the target's own column
// looked up in the whole target table, which every row with a non-NULL col satisfies.
func selfInSubquery(sl *pg.SubLink, names []string) bool {
	if sl.SubLinkType != pg.SubLinkType_ANY_SUBLINK || (len(sl.OperName) > 0 && opName(sl.OperName) != "=") {
		return false
	}
	col := sl.Testexpr.GetColumnRef()
	sel := sl.Subselect.GetSelectStmt()
	if col == nil || sel == nil || sel.WhereClause != nil || sel.LimitCount != nil || sel.HavingClause != nil ||
		len(sel.GroupClause) > 0 || sel.Op != pg.SetOperation_SETOP_NONE || len(sel.FromClause) != 1 || len(sel.TargetList) != 1 {
		return false
	}
	rv := sel.FromClause[0].GetRangeVar()
	inner := sel.TargetList[0].GetResTarget().GetVal().GetColumnRef()
	if rv == nil || inner == nil || !slices.Contains(names, rv.Relname) && (rv.Alias == nil || !slices.Contains(names, rv.Alias.Aliasname)) {
		return false
	}
	last := func(f []*pg.Node) string { return f[len(f)-1].GetString_().GetSval() }
	return last(col.Fields) != "" && last(col.Fields) == last(inner.Fields)
}

func opName(name []*pg.Node) string {
	if len(name) == 0 {
		return ""
	}
	return name[len(name)-1].GetString_().GetSval()
}

// rowDependent reports whether n refers to the target row. Outside subqueries any column
// reference does; inside one, only references qualified by the target's name, or
// unqualified ones (without the catalog we cannot tell which table they belong to).
func rowDependent(n *pg.Node, names []string) bool {
	d := depScan{names: names}
	d.msg(n.ProtoReflect(), 0)
	return d.found
}

type depScan struct {
	names []string
	found bool
}

func (d *depScan) msg(m protoreflect.Message, sub int) {
	if d.found {
		return
	}
	switch x := m.Interface().(type) {
	case *pg.ColumnRef:
		if sub == 0 || len(x.Fields) == 1 {
			d.found = true
			return
		}
		q := x.Fields[len(x.Fields)-2].GetString_().GetSval()
		for _, nm := range d.names {
			if q == nm {
				d.found = true
			}
		}
		return
	case *pg.CurrentOfExpr:
		d.found = true
		return
	case *pg.SubLink, *pg.RangeSubselect:
		sub++
	}
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		if fd.Kind() != protoreflect.MessageKind {
			return true
		}
		if fd.IsList() {
			l := v.List()
			for i := 0; i < l.Len(); i++ {
				d.msg(l.Get(i).Message(), sub)
			}
		} else if !fd.IsMap() {
			d.msg(v.Message(), sub)
		}
		return !d.found
	})
}

// sameExpr compares two expressions structurally, ignoring source locations.
func (p *pred) sameExpr(a, b *pg.Node) bool {
	if a == nil || b == nil {
		return a == b
	}
	return p.sameMsg(a.ProtoReflect(), b.ProtoReflect())
}

func (p *pred) sameMsg(a, b protoreflect.Message) bool {
	if a.Descriptor() != b.Descriptor() {
		return false
	}
	if _, ok := a.Interface().(*pg.A_Const); ok {
		p.readsLiteral = true
	}
	fields := a.Descriptor().Fields()
	for i := 0; i < fields.Len(); i++ {
		fd := fields.Get(i)
		if fd.Name() == "location" {
			continue
		}
		if a.Has(fd) != b.Has(fd) {
			return false
		}
		if !a.Has(fd) {
			continue
		}
		va, vb := a.Get(fd), b.Get(fd)
		switch {
		case fd.IsList():
			la, lb := va.List(), vb.List()
			if la.Len() != lb.Len() {
				return false
			}
			for j := 0; j < la.Len(); j++ {
				if fd.Kind() == protoreflect.MessageKind {
					if !p.sameMsg(la.Get(j).Message(), lb.Get(j).Message()) {
						return false
					}
				} else if !la.Get(j).Equal(lb.Get(j)) {
					return false
				}
			}
		case fd.Kind() == protoreflect.MessageKind:
			if !p.sameMsg(va.Message(), vb.Message()) {
				return false
			}
		default:
			if !va.Equal(vb) {
				return false
			}
		}
	}
	return true
}

// value is a folded constant: a boolean, a number or a string.
type value struct {
	kind byte // 'b', 'n', 's', 'z' (NULL), 'x' (not NULL, value unread)
	b    bool
	n    *big.Rat
	s    string
}

// foldBool folds a row-independent predicate made of literals, casts, comparisons,
// arithmetic and boolean logic. ok is false when it contains anything else.
func (p *pred) foldBool(n *pg.Node) (v, ok bool) {
	c, ok := p.fold(n)
	if !ok {
		return false, false
	}
	switch c.kind {
	case 'b':
		return c.b, true
	case 'z':
		return false, true
	case 's':
		return parseBoolText(c.s)
	}
	return false, false
}

func (p *pred) fold(n *pg.Node) (value, bool) {
	if n == nil {
		return value{}, false
	}
	switch x := n.Node.(type) {
	case *pg.Node_AConst:
		p.readsLiteral = true
		c := x.AConst
		switch {
		case c.Isnull:
			return value{kind: 'z'}, true
		case c.GetBoolval() != nil:
			return value{kind: 'b', b: c.GetBoolval().Boolval}, true
		case c.GetIval() != nil:
			return value{kind: 'n', n: new(big.Rat).SetInt64(int64(c.GetIval().Ival))}, true
		case c.GetFval() != nil:
			r, ok := new(big.Rat).SetString(c.GetFval().Fval)
			return value{kind: 'n', n: r}, ok
		case c.GetSval() != nil:
			return value{kind: 's', s: c.GetSval().Sval}, true
		}
	case *pg.Node_TypeCast:
		v, ok := p.fold(x.TypeCast.Arg)
		if !ok {
			return v, false
		}
		if isBoolType(x.TypeCast.TypeName) {
			switch v.kind {
			case 's':
				b, ok := parseBoolText(v.s)
				return value{kind: 'b', b: b}, ok
			case 'n':
				return value{kind: 'b', b: v.n.Sign() != 0}, true
			}
		}
		return v, true
	case *pg.Node_ParamRef:
		return p.param(x.ParamRef)
	case *pg.Node_BoolExpr:
		return p.foldBoolExpr(x.BoolExpr)
	case *pg.Node_NullTest:
		v, ok := p.fold(x.NullTest.Arg)
		if !ok {
			return v, false
		}
		isNull := v.kind == 'z'
		return value{kind: 'b', b: isNull == (x.NullTest.Nulltesttype == pg.NullTestType_IS_NULL)}, true
	case *pg.Node_AExpr:
		return p.foldAExpr(x.AExpr)
	}
	return value{}, false
}

// param folds a parameter: at Bind its bound value, read as an untyped literal (as the
// server reads a text-format parameter of unspecified type); at Parse nothing.
func (p *pred) param(r *pg.ParamRef) (value, bool) {
	p.readsParam = true
	i := int(r.Number) - 1
	if !p.bound || i < 0 || i >= len(p.params) {
		return value{}, false
	}
	switch v := p.params[i]; {
	case v.Null:
		return value{kind: 'z'}, true
	case v.Known:
		return value{kind: 's', s: v.Text}, true
	}
	return value{kind: 'x'}, true
}

// simplify replaces an expression by the argument it stands for, where folding can tell:
// COALESCE drops the arguments that are NULL and ends at the first that cannot be (a
// constant, a parameter bound to a value), so coalesce(NULL::int, id) is id and, bound to
// 5, coalesce($1, id) is $1. Casts of such an expression keep their cast.
func (p *pred) simplify(n *pg.Node) *pg.Node {
	switch x := n.GetNode().(type) {
	case *pg.Node_TypeCast:
		if a := p.simplify(x.TypeCast.Arg); a != x.TypeCast.Arg {
			return &pg.Node{Node: &pg.Node_TypeCast{TypeCast: &pg.TypeCast{Arg: a, TypeName: x.TypeCast.TypeName}}}
		}
	case *pg.Node_CoalesceExpr:
		var rest []*pg.Node
		for _, a := range x.CoalesceExpr.Args {
			a = p.simplify(a)
			v, ok := p.fold(a)
			if ok && v.kind == 'z' {
				continue
			}
			rest = append(rest, a)
			if ok {
				break // never NULL: the arguments after it are never reached
			}
		}
		switch len(rest) {
		case 0:
			return &pg.Node{Node: &pg.Node_AConst{AConst: &pg.A_Const{Isnull: true}}}
		case 1:
			return rest[0]
		case len(x.CoalesceExpr.Args):
			return n
		}
		return &pg.Node{Node: &pg.Node_CoalesceExpr{CoalesceExpr: &pg.CoalesceExpr{Args: rest}}}
	}
	return n
}

func (p *pred) foldBoolExpr(b *pg.BoolExpr) (value, bool) {
	vals := make([]bool, 0, len(b.Args))
	for _, a := range b.Args {
		v, ok := p.foldBool(a)
		if !ok {
			return value{}, false
		}
		vals = append(vals, v)
	}
	switch b.Boolop {
	case pg.BoolExprType_NOT_EXPR:
		if len(vals) == 1 {
			return value{kind: 'b', b: !vals[0]}, true
		}
	case pg.BoolExprType_AND_EXPR:
		r := true
		for _, v := range vals {
			r = r && v
		}
		return value{kind: 'b', b: r}, true
	case pg.BoolExprType_OR_EXPR:
		r := false
		for _, v := range vals {
			r = r || v
		}
		return value{kind: 'b', b: r}, true
	}
	return value{}, false
}

func (p *pred) foldAExpr(e *pg.A_Expr) (value, bool) {
	if e.Kind != pg.A_Expr_Kind_AEXPR_OP {
		return value{}, false
	}
	op := opName(e.Name)
	r, ok := p.fold(e.Rexpr)
	if !ok {
		return value{}, false
	}
	if e.Lexpr == nil {
		if op == "-" && r.kind == 'n' {
			return value{kind: 'n', n: new(big.Rat).Neg(r.n)}, true
		}
		return value{}, false
	}
	l, ok := p.fold(e.Lexpr)
	if !ok {
		return value{}, false
	}
	// An untyped literal compared with a number is read as a number, as PostgreSQL does.
	if l.kind == 's' && r.kind == 'n' {
		if l.n, ok = new(big.Rat).SetString(strings.TrimSpace(l.s)); !ok {
			return value{}, false
		}
		l.kind = 'n'
	}
	if r.kind == 's' && l.kind == 'n' {
		if r.n, ok = new(big.Rat).SetString(strings.TrimSpace(r.s)); !ok {
			return value{}, false
		}
		r.kind = 'n'
	}
	if l.kind != r.kind || l.kind == 'x' {
		return value{}, false
	}
	if op == "||" && l.kind == 's' {
		return value{kind: 's', s: l.s + r.s}, true
	}
	if l.kind == 'n' {
		switch op {
		case "+":
			return value{kind: 'n', n: new(big.Rat).Add(l.n, r.n)}, true
		case "-":
			return value{kind: 'n', n: new(big.Rat).Sub(l.n, r.n)}, true
		case "*":
			return value{kind: 'n', n: new(big.Rat).Mul(l.n, r.n)}, true
		}
	}
	var c int
	switch l.kind {
	case 'n':
		c = l.n.Cmp(r.n)
	case 's':
		c = strings.Compare(l.s, r.s)
	case 'b':
		c = boolCmp(l.b, r.b)
	default:
		return value{kind: 'z'}, true
	}
	var res bool
	switch op {
	case "=":
		res = c == 0
	case "<>", "!=":
		res = c != 0
	case "<":
		res = c < 0
	case "<=":
		res = c <= 0
	case ">":
		res = c > 0
	case ">=":
		res = c >= 0
	default:
		return value{}, false
	}
	return value{kind: 'b', b: res}, true
}

func boolCmp(a, b bool) int {
	switch {
	case a == b:
		return 0
	case !a:
		return -1
	}
	return 1
}

func isBoolType(tn *pg.TypeName) bool {
	if tn == nil || len(tn.Names) == 0 {
		return false
	}
	n := tn.Names[len(tn.Names)-1].GetString_().GetSval()
	return n == "bool" || n == "boolean"
}
