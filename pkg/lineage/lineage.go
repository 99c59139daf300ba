// Package lineage says, for each output column of a PostgreSQL statement, which table
// columns its values are computed from: the taint analysis result masking relies on, so that
// a sensitive column is masked whatever function, operator, cast, constructor, subquery, CTE,
// view, set operation, cursor, RETURNING list or SQL function body it went through.
//
// It works on pg_query's parse tree with the help of a Catalog (relations and their column
// lists, view definitions, functions and SQL function bodies). A column's value flows from
// what its target-list expression reads: every column reference in it, through any builtin
// function (arguments taint the result), and through the expressions of the subqueries,
// CTEs, views and SQL functions it refers to. Only an allow-list of expressions that reveal
// nothing of a value stops the flow: count(...), EXISTS, IS [NOT] NULL, and the functions
// Options.Clean names. A column that is a source column unchanged is Direct (its masking
// strategy applies); any other is transformed (masked wholesale).
//
// Limits, by design: columns read only in WHERE, JOIN ... ON, GROUP BY, HAVING, ORDER BY,
// window and FILTER clauses, CASE conditions aside, do not taint the output (they leak by
// inference, one bit per row); data laundered through a write (CREATE TABLE AS, INSERT into
// another table, then reading that table) is not followed; a function that is not
// LANGUAGE sql and not in pg_catalog is opaque (its output is treated as tainted); builtins
// that read tables by name (query_to_xml and friends) and custom settings (where set_config
// can have stashed a value) are opaque too. What cannot be
// analysed at all (parse failure, unknown relation or column, depth exceeded, catalog
// error) is reported as Failed: the caller masks every column.
package lineage

import (
	"fmt"
	"slices"
	"strings"

	pg "github.com/pganalyze/pg_query_go/v6"
)

// Source is one table column.
type Source struct{ Schema, Table, Column string }

func (s Source) String() string {
	if s.Schema == "" || s.Schema == "public" {
		return s.Table + "." + s.Column
	}
	return s.Schema + "." + s.Table + "." + s.Column
}

// Column is what one output column reads.
type Column struct {
	Name string
	// Sources are the table columns whose values flow into this one (sorted, unique).
	Sources []Source
	// Direct: the value is Sources[0] itself, unchanged.
	Direct bool
	// Opaque, when set, says why part of the expression could not be followed (a plpgsql
	// function, a builtin that reads a table by name): the column must be masked.
	Opaque string
}

// Tainted reports whether anything of the column may come from a table column.
func (c *Column) Tainted() bool { return len(c.Sources) > 0 || c.Opaque != "" }

// Kind says what a statement's rows are.
type Kind uint8

const (
	// Rows: Columns describe the statement's result, position by position.
	Rows Kind = iota
	// NoTableData: the statement's rows (SHOW, EXPLAIN, utility statements) carry no
	// table values.
	NoTableData
	// Fetch: the rows are those of the cursor Name (FETCH, MOVE).
	Fetch
	// Execute: the rows are those of the prepared statement Name (EXECUTE).
	Execute
)

// Result is the analysis of one statement.
type Result struct {
	Kind    Kind
	Columns []Column
	// All is the union of every output column: what a column is taken to read when the
	// result's columns cannot be matched to the analysis one by one.
	All Column
	// Name is the cursor (Fetch) or prepared statement (Execute) the rows come from.
	Name string
	// Defines is the cursor (DECLARE) or prepared statement (PREPARE) this statement
	// defines, with Columns the rows it will return; DefinesCursor tells which.
	Defines       string
	DefinesCursor bool
	// Failed, when set, says why the statement could not be analysed: every column of its
	// result must be masked.
	Failed string
}

// Relation is a table, view or other relation as the catalog knows it.
type Relation struct {
	Schema, Name string
	Columns      []string // in attribute order, dropped columns left out
	// View is the definition (a SELECT) of a view or materialized view; empty for tables.
	View string
}

// Function is one function of a name.
type Function struct {
	Schema   string
	Language string // sql, plpgsql, internal, c, ...
	Body     string // prosrc: the text of a LANGUAGE sql body (empty for BEGIN ATOMIC bodies)
	ArgNames []string
}

// Catalog answers what the analysis needs to know of the database.
type Catalog interface {
	// Relations returns the relations schema.name may refer to: with schema "", those of
	// that name in every schema (the session's search_path, which decides among them, is
	// not known to the analysis; all are taken, and their columns united by name).
	Relations(schema, name string) ([]Relation, error)
	// Functions returns the functions a call of schema.name may resolve to (schema "":
	// along the search path, pg_catalog first): every overload.
	Functions(schema, name string) ([]Function, error)
}

// Options tune the analysis.
type Options struct {
	// Clean names functions (pg_catalog ones, by name) whose result reveals nothing of
	// their arguments' values for this deployment: length, octet_length, ... are a policy
	// choice, masked by default.
	Clean []string
	// MaxDepth bounds how deep views and SQL functions are expanded (default 8).
	MaxDepth int
}

// readsByName are builtins that run a query or read a table named by an argument: the
// analysis cannot see what they read.
var readsByName = map[string]bool{
	"query_to_xml": true, "query_to_xml_and_xmlschema": true, "query_to_xmlschema": true,
	"table_to_xml": true, "table_to_xml_and_xmlschema": true, "table_to_xmlschema": true,
	"cursor_to_xml": true, "cursor_to_xmlschema": true,
	"schema_to_xml": true, "schema_to_xml_and_xmlschema": true, "schema_to_xmlschema": true,
	"database_to_xml": true, "database_to_xml_and_xmlschema": true, "database_to_xmlschema": true,
	"pg_show_all_settings": true, "ts_stat": true, "pg_read_file": true, "pg_read_binary_file": true, "lo_get": true,
	"loread": true, "lo_export": true,
}

// Analyze analyses one statement (sql must hold exactly one).
func Analyze(sql string, cat Catalog, opt Options) *Result {
	tree, err := pg.Parse(sql)
	if err != nil {
		return &Result{Failed: "parse: " + err.Error()}
	}
	if len(tree.Stmts) != 1 {
		return &Result{Failed: fmt.Sprintf("%d statements where one was expected", len(tree.Stmts))}
	}
	if opt.MaxDepth <= 0 {
		opt.MaxDepth = 8
	}
	a := &analyzer{cat: cat, opt: opt}
	r := a.statement(tree.Stmts[0].Stmt, nil)
	if a.fail != "" {
		// A cursor or prepared statement that cannot be analysed is still defined: what
		// is fetched from it is masked whole.
		return &Result{Failed: a.fail, Defines: r.Defines, DefinesCursor: r.DefinesCursor}
	}
	for i := range r.Columns {
		r.All = merge(r.All, r.Columns[i])
	}
	r.All.Name, r.All.Direct = "", false
	return r
}

type analyzer struct {
	cat   Catalog
	opt   Options
	depth int
	fail  string
	// params are the argument taints while a SQL function body is analysed.
	params     []Column
	paramNames []string
}

func (a *analyzer) failf(format string, args ...any) {
	if a.fail == "" {
		a.fail = fmt.Sprintf(format, args...)
	}
}

// item is one FROM item (or DML target) in scope.
type item struct {
	alias string
	names []string
	cols  []Column
	// open: a function's result whose column names are not known; any reference to the
	// item gets this taint.
	open *Column
}

type scope struct {
	items  []*item
	ctes   map[string]*item
	parent *scope
	// params of a SQL function body are visible by name from every scope of it.
}

func (s *scope) cte(name string) *item {
	for ; s != nil; s = s.parent {
		if c, ok := s.ctes[name]; ok {
			return c
		}
	}
	return nil
}

func (a *analyzer) statement(n *pg.Node, sc *scope) *Result {
	if n == nil {
		return &Result{Kind: NoTableData}
	}
	switch x := n.Node.(type) {
	case *pg.Node_SelectStmt:
		return &Result{Columns: a.selectStmt(x.SelectStmt, sc)}
	case *pg.Node_InsertStmt, *pg.Node_UpdateStmt, *pg.Node_DeleteStmt, *pg.Node_MergeStmt:
		return &Result{Columns: a.dml(n, sc)}
	case *pg.Node_DeclareCursorStmt:
		r := a.statement(x.DeclareCursorStmt.Query, sc)
		r.Defines, r.DefinesCursor = x.DeclareCursorStmt.Portalname, true
		return r
	case *pg.Node_PrepareStmt:
		r := a.statement(x.PrepareStmt.Query, sc)
		r.Defines = x.PrepareStmt.Name
		return r
	case *pg.Node_FetchStmt:
		return &Result{Kind: Fetch, Name: x.FetchStmt.Portalname}
	case *pg.Node_ExecuteStmt:
		return &Result{Kind: Execute, Name: x.ExecuteStmt.Name}
	case *pg.Node_CopyStmt:
		c := x.CopyStmt
		if c.Query != nil {
			return a.statement(c.Query, sc)
		}
		if c.IsFrom || c.Relation == nil {
			return &Result{Kind: NoTableData}
		}
		it := a.rangeVar(c.Relation, &scope{parent: sc})
		if it == nil {
			return &Result{}
		}
		if len(c.Attlist) == 0 {
			return &Result{Columns: it.cols}
		}
		var cols []Column
		for _, at := range c.Attlist {
			cols = append(cols, a.columnOf(it, strName(at)))
		}
		return &Result{Columns: cols}
	case *pg.Node_CallStmt:
		if x.CallStmt.Funccall == nil {
			return &Result{}
		}
		c := a.call(x.CallStmt.Funccall, &scope{parent: sc})
		return &Result{Columns: []Column{c}, All: c}
	case *pg.Node_VariableShowStmt:
		if strings.Contains(x.VariableShowStmt.Name, ".") {
			c := Column{Name: x.VariableShowStmt.Name, Opaque: "SHOW of a custom setting, which a session can have set to any value"}
			return &Result{Columns: []Column{c}}
		}
		return &Result{Kind: NoTableData}
	case *pg.Node_ExplainStmt:
		// EXPLAIN shows plans (names and literals), not values; EXPLAIN ANALYZE runs
		// the statement but returns none of its rows.
		return &Result{Kind: NoTableData}
	}
	// Other statements return no rows; one that does is not understood: fail closed.
	a.failf("rows of a %s statement are not analysed", strings.TrimPrefix(fmt.Sprintf("%T", n.Node), "*pg_query.Node_"))
	return &Result{}
}

func (a *analyzer) selectStmt(s *pg.SelectStmt, outer *scope) []Column {
	if s == nil {
		return nil
	}
	sc := &scope{parent: outer}
	if s.WithClause != nil {
		a.with(s.WithClause, sc)
	}
	if s.Op != pg.SetOperation_SETOP_NONE && s.Op != pg.SetOperation_SET_OPERATION_UNDEFINED {
		l := a.selectStmt(s.Larg, sc)
		r := a.selectStmt(s.Rarg, sc)
		if len(l) != len(r) {
			a.failf("set operation with %d and %d columns", len(l), len(r))
			return l
		}
		out := make([]Column, len(l))
		for i := range l {
			out[i] = merge(l[i], r[i])
			out[i].Name = l[i].Name
			out[i].Direct = l[i].Direct && r[i].Direct && len(out[i].Sources) == 1
		}
		return out
	}
	if len(s.ValuesLists) > 0 {
		var out []Column
		for _, row := range s.ValuesLists {
			l, _ := row.Node.(*pg.Node_List)
			if l == nil {
				continue
			}
			for i, e := range l.List.Items {
				c := a.expr(e, sc)
				c.Name = fmt.Sprintf("column%d", i+1)
				if i >= len(out) {
					out = append(out, c)
				} else {
					d := out[i].Direct && c.Direct && slices.Equal(out[i].Sources, c.Sources)
					out[i] = merge(out[i], c)
					out[i].Direct = d
				}
			}
		}
		return out
	}
	for _, f := range s.FromClause {
		sc.items = append(sc.items, a.fromItem(f, sc)...)
	}
	return a.targets(s.TargetList, sc)
}

// targets evaluates a target (or RETURNING) list, expanding stars.
func (a *analyzer) targets(list []*pg.Node, sc *scope) []Column {
	var out []Column
	for _, t := range list {
		rt, _ := t.Node.(*pg.Node_ResTarget)
		if rt == nil {
			continue
		}
		v := rt.ResTarget.Val
		if cr, ok := v.GetNode().(*pg.Node_ColumnRef); ok && isStar(cr.ColumnRef.Fields) {
			out = append(out, a.star(cr.ColumnRef.Fields, sc)...)
			continue
		}
		c := a.expr(v, sc)
		c.Name = rt.ResTarget.Name
		if c.Name == "" {
			if cr, ok := v.GetNode().(*pg.Node_ColumnRef); ok && len(cr.ColumnRef.Fields) > 0 {
				c.Name = strName(cr.ColumnRef.Fields[len(cr.ColumnRef.Fields)-1])
			}
		}
		out = append(out, c)
	}
	return out
}

func isStar(fields []*pg.Node) bool {
	if len(fields) == 0 {
		return false
	}
	_, ok := fields[len(fields)-1].Node.(*pg.Node_AStar)
	return ok
}

// star expands * or t.* in a target list.
func (a *analyzer) star(fields []*pg.Node, sc *scope) []Column {
	var out []Column
	add := func(it *item) {
		if it.open != nil {
			c := *it.open
			c.Name = it.alias
			out = append(out, c)
			return
		}
		out = append(out, it.cols...)
	}
	if len(fields) == 1 {
		for _, it := range sc.items {
			add(it)
		}
		return out
	}
	it := a.findItem(strName(fields[len(fields)-2]), sc)
	if it == nil {
		a.failf("no FROM item %q for %s.*", strName(fields[len(fields)-2]), strName(fields[len(fields)-2]))
		return nil
	}
	add(it)
	return out
}

func (a *analyzer) findItem(alias string, sc *scope) *item {
	for s := sc; s != nil; s = s.parent {
		for _, it := range s.items {
			if it.alias == alias {
				return it
			}
		}
	}
	return nil
}

// with registers a WITH clause's CTEs in sc. A recursive CTE is analysed until its
// columns' taint no longer grows.
func (a *analyzer) with(w *pg.WithClause, sc *scope) {
	if sc.ctes == nil {
		sc.ctes = make(map[string]*item)
	}
	for _, n := range w.Ctes {
		cte, _ := n.Node.(*pg.Node_CommonTableExpr)
		if cte == nil {
			continue
		}
		c := cte.CommonTableExpr
		names := strNames(c.Aliascolnames)
		sel, _ := c.Ctequery.Node.(*pg.Node_SelectStmt)
		if !w.Recursive || sel == nil || sel.SelectStmt.Larg == nil {
			sc.ctes[c.Ctename] = newItem(c.Ctename, a.statement(c.Ctequery, sc).Columns, names)
			continue
		}
		// Start from the non-recursive term, then iterate with the CTE in scope.
		cols := a.selectStmt(sel.SelectStmt.Larg, sc)
		for range 8 {
			sc.ctes[c.Ctename] = newItem(c.Ctename, cols, names)
			next := a.statement(c.Ctequery, sc).Columns
			if len(next) != len(cols) {
				a.failf("recursive CTE %q: %d then %d columns", c.Ctename, len(cols), len(next))
				return
			}
			changed := false
			for i := range next {
				m := merge(cols[i], next[i])
				m.Name, m.Direct = cols[i].Name, cols[i].Direct && next[i].Direct && len(m.Sources) == 1
				if !slices.Equal(m.Sources, cols[i].Sources) || m.Opaque != cols[i].Opaque {
					changed = true
				}
				cols[i] = m
			}
			if !changed {
				break
			}
		}
		sc.ctes[c.Ctename] = newItem(c.Ctename, cols, names)
	}
}

// newItem makes a FROM item of cols, renamed by names (column aliases) where given.
func newItem(alias string, cols []Column, names []string) *item {
	it := &item{alias: alias, cols: make([]Column, len(cols)), names: make([]string, len(cols))}
	copy(it.cols, cols)
	for i := range cols {
		it.names[i] = cols[i].Name
		if i < len(names) {
			it.names[i] = names[i]
		}
		it.cols[i].Name = it.names[i]
	}
	return it
}

func (a *analyzer) fromItem(n *pg.Node, sc *scope) []*item {
	switch x := n.Node.(type) {
	case *pg.Node_RangeVar:
		if it := a.rangeVar(x.RangeVar, sc); it != nil {
			return []*item{it}
		}
		return nil
	case *pg.Node_RangeSubselect:
		r := a.statement(x.RangeSubselect.Subquery, sc)
		alias, names := aliasOf(x.RangeSubselect.Alias, "")
		return []*item{newItem(alias, r.Columns, names)}
	case *pg.Node_JoinExpr:
		j := x.JoinExpr
		items := append(a.fromItem(j.Larg, sc), a.fromItem(j.Rarg, sc)...)
		if j.Alias == nil {
			return items
		}
		var cols []Column
		for _, it := range items {
			if it.open != nil {
				c := *it.open
				cols = append(cols, c)
				continue
			}
			cols = append(cols, it.cols...)
		}
		alias, names := aliasOf(j.Alias, "")
		return []*item{newItem(alias, cols, names)}
	case *pg.Node_RangeFunction:
		rf := x.RangeFunction
		var t Column
		fname := ""
		for _, f := range rf.Functions {
			l, _ := f.Node.(*pg.Node_List)
			if l == nil || len(l.List.Items) == 0 {
				continue
			}
			t = merge(t, a.expr(l.List.Items[0], sc))
			if fc, ok := l.List.Items[0].Node.(*pg.Node_FuncCall); ok && fname == "" {
				_, fname = funcName(fc.FuncCall.Funcname)
			}
		}
		t.Direct = false
		alias, names := aliasOf(rf.Alias, fname)
		for _, cd := range rf.Coldeflist {
			if d, ok := cd.Node.(*pg.Node_ColumnDef); ok {
				names = append(names, d.ColumnDef.Colname)
			}
		}
		if len(names) == 0 {
			return []*item{{alias: alias, open: &t}}
		}
		cols := make([]Column, len(names))
		for i := range cols {
			cols[i] = t
		}
		if rf.Ordinality {
			cols = append(cols, Column{Name: "ordinality"})
		}
		return []*item{newItem(alias, cols, names)}
	case *pg.Node_RangeTableSample:
		return a.fromItem(x.RangeTableSample.Relation, sc)
	default:
		// XMLTABLE, JSON_TABLE and the like: columns of unknown names, tainted by what
		// their expressions read.
		t := a.generic(n, sc)
		t.Direct = false
		return []*item{{open: &t}}
	}
}

func aliasOf(al *pg.Alias, def string) (string, []string) {
	if al == nil {
		return def, nil
	}
	return al.Aliasname, strNames(al.Colnames)
}

// rangeVar resolves a relation reference: a CTE in scope, a table, or a view (whose
// definition is analysed).
func (a *analyzer) rangeVar(rv *pg.RangeVar, sc *scope) *item {
	alias, names := aliasOf(rv.Alias, rv.Relname)
	if rv.Schemaname == "" {
		if c := sc.cte(rv.Relname); c != nil {
			return newItem(alias, c.cols, names)
		}
	}
	rels, err := a.cat.Relations(rv.Schemaname, rv.Relname)
	if err != nil {
		a.failf("catalog: %v", err)
		return nil
	}
	if len(rels) == 0 {
		a.failf("unknown relation %s", qualified(rv.Schemaname, rv.Relname))
		return nil
	}
	var it *item
	for _, rel := range rels {
		cols := a.relation(rel)
		if a.fail != "" {
			return nil
		}
		it = unite(it, newItem(alias, cols, names))
	}
	return it
}

// unite merges the candidates an unqualified name may refer to: columns by name, in the
// order first seen.
func unite(it, other *item) *item {
	if it == nil {
		return other
	}
	for i, n := range other.names {
		if j := slices.Index(it.names, n); j >= 0 {
			d := it.cols[j].Direct && other.cols[i].Direct && slices.Equal(it.cols[j].Sources, other.cols[i].Sources)
			it.cols[j] = merge(it.cols[j], other.cols[i])
			it.cols[j].Name, it.cols[j].Direct = n, d
			continue
		}
		it.names = append(it.names, n)
		it.cols = append(it.cols, other.cols[i])
	}
	return it
}

// relation returns a relation's columns: a table's are themselves, a view's what its
// definition reads (nil after a failure).
func (a *analyzer) relation(rel Relation) []Column {
	var cols []Column
	if rel.View != "" {
		if a.depth >= a.opt.MaxDepth {
			a.failf("view %s: expansion deeper than %d", qualified(rel.Schema, rel.Name), a.opt.MaxDepth)
			return nil
		}
		tree, err := pg.Parse(rel.View)
		if err != nil || len(tree.Stmts) != 1 {
			a.failf("view %s: definition does not parse", qualified(rel.Schema, rel.Name))
			return nil
		}
		a.depth++
		sub := &analyzer{cat: a.cat, opt: a.opt, depth: a.depth}
		cols = sub.statement(tree.Stmts[0].Stmt, nil).Columns
		a.depth--
		if sub.fail != "" {
			a.failf("view %s: %s", qualified(rel.Schema, rel.Name), sub.fail)
			return nil
		}
		if len(cols) != len(rel.Columns) {
			a.failf("view %s: %d columns, its definition %d", qualified(rel.Schema, rel.Name), len(rel.Columns), len(cols))
			return nil
		}
		for i := range cols {
			cols[i].Name = rel.Columns[i]
		}
	} else {
		cols = make([]Column, len(rel.Columns))
		for i, c := range rel.Columns {
			cols[i] = Column{Name: c, Sources: []Source{{rel.Schema, rel.Name, c}}, Direct: true}
		}
	}
	return cols
}

func qualified(schema, name string) string {
	if schema == "" {
		return name
	}
	return schema + "." + name
}

// dml analyses the RETURNING list of INSERT, UPDATE, DELETE or MERGE. The target's columns
// carry, besides themselves, what the statement writes into them.
func (a *analyzer) dml(n *pg.Node, outer *scope) []Column {
	sc := &scope{parent: outer}
	var with *pg.WithClause
	var rel *pg.RangeVar
	var returning []*pg.Node
	switch x := n.Node.(type) {
	case *pg.Node_InsertStmt:
		with, rel, returning = x.InsertStmt.WithClause, x.InsertStmt.Relation, x.InsertStmt.ReturningList
	case *pg.Node_UpdateStmt:
		with, rel, returning = x.UpdateStmt.WithClause, x.UpdateStmt.Relation, x.UpdateStmt.ReturningList
	case *pg.Node_DeleteStmt:
		with, rel, returning = x.DeleteStmt.WithClause, x.DeleteStmt.Relation, x.DeleteStmt.ReturningList
	case *pg.Node_MergeStmt:
		with, rel, returning = x.MergeStmt.WithClause, x.MergeStmt.Relation, x.MergeStmt.ReturningList
	}
	if with != nil {
		a.with(with, sc)
	}
	if len(returning) == 0 {
		return nil
	}
	target := a.rangeVar(rel, sc)
	if target == nil {
		return nil
	}
	sc.items = append(sc.items, target)
	var written Column // what is written into every target column
	switch x := n.Node.(type) {
	case *pg.Node_InsertStmt:
		if x.InsertStmt.SelectStmt != nil {
			for _, c := range a.statement(x.InsertStmt.SelectStmt, sc).Columns {
				written = merge(written, c)
			}
		}
		if oc := x.InsertStmt.OnConflictClause; oc != nil {
			ex := newItem("excluded", target.cols, nil)
			for i := range ex.cols {
				ex.cols[i] = merge(ex.cols[i], written)
			}
			ocs := &scope{parent: sc, items: []*item{target, ex}}
			for _, t := range oc.TargetList {
				written = merge(written, a.generic(t, ocs))
			}
		}
	case *pg.Node_UpdateStmt:
		for _, f := range x.UpdateStmt.FromClause {
			sc.items = append(sc.items, a.fromItem(f, sc)...)
		}
		for _, t := range x.UpdateStmt.TargetList {
			written = merge(written, a.generic(t, sc))
		}
	case *pg.Node_DeleteStmt:
		for _, f := range x.DeleteStmt.UsingClause {
			sc.items = append(sc.items, a.fromItem(f, sc)...)
		}
	case *pg.Node_MergeStmt:
		sc.items = append(sc.items, a.fromItem(x.MergeStmt.SourceRelation, sc)...)
		for _, w := range x.MergeStmt.MergeWhenClauses {
			written = merge(written, a.generic(w, sc))
		}
	}
	if written.Tainted() {
		for i := range target.cols {
			target.cols[i] = merge(target.cols[i], written)
			target.cols[i].Name = target.names[i]
		}
	}
	return a.targets(returning, sc)
}

// merge is the union of two taints; the result is not Direct.
func merge(x, y Column) Column {
	out := Column{Name: x.Name, Opaque: x.Opaque}
	if out.Opaque == "" {
		out.Opaque = y.Opaque
	}
	if len(y.Sources) == 0 {
		out.Sources = x.Sources
	} else if len(x.Sources) == 0 {
		out.Sources = y.Sources
	} else {
		s := append(slices.Clone(x.Sources), y.Sources...)
		slices.SortFunc(s, func(p, q Source) int { return strings.Compare(p.String(), q.String()) })
		out.Sources = slices.Compact(s)
	}
	return out
}

func strName(n *pg.Node) string {
	if s, ok := n.GetNode().(*pg.Node_String_); ok {
		return s.String_.Sval
	}
	return ""
}

func strNames(ns []*pg.Node) []string {
	var out []string
	for _, n := range ns {
		out = append(out, strName(n))
	}
	return out
}

func funcName(parts []*pg.Node) (schema, name string) {
	names := strNames(parts)
	switch len(names) {
	case 0:
		return "", ""
	case 1:
		return "", names[0]
	}
	return names[len(names)-2], names[len(names)-1]
}
