package lineage

import (
	"fmt"
	"slices"
	"strings"

	pg "github.com/pganalyze/pg_query_go/v6"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// expr returns what an expression reads. Node types without a rule of their own read the
// union of their children (generic): a new operator, constructor or JSON/XML builder is
// followed without a rule for it.
func (a *analyzer) expr(n *pg.Node, sc *scope) Column {
	if n == nil || n.Node == nil {
		return Column{}
	}
	switch x := n.Node.(type) {
	case *pg.Node_AConst, *pg.Node_String_, *pg.Node_Integer, *pg.Node_Float, *pg.Node_Boolean,
		*pg.Node_BitString, *pg.Node_SqlvalueFunction, *pg.Node_SetToDefault:
		return Column{}
	case *pg.Node_ParamRef:
		if i := int(x.ParamRef.Number) - 1; i >= 0 && i < len(a.params) {
			return a.params[i]
		}
		return Column{}
	case *pg.Node_ColumnRef:
		return a.columnRef(x.ColumnRef.Fields, sc)
	case *pg.Node_NullTest:
		// IS [NOT] NULL reveals whether there is a value, nothing of it.
		return Column{}
	case *pg.Node_FuncCall:
		return a.call(x.FuncCall, sc)
	case *pg.Node_SubLink:
		sl := x.SubLink
		switch sl.SubLinkType {
		case pg.SubLinkType_EXISTS_SUBLINK:
			return Column{}
		case pg.SubLinkType_EXPR_SUBLINK:
			cols := a.statement(sl.Subselect, sc).Columns
			if len(cols) == 0 {
				return Column{}
			}
			c := cols[0]
			for _, o := range cols[1:] {
				c = merge(c, o)
			}
			c.Direct = len(cols) == 1 && cols[0].Direct
			return c
		}
		c := a.expr(sl.Testexpr, sc)
		for _, o := range a.statement(sl.Subselect, sc).Columns {
			c = merge(c, o)
		}
		return c
	case *pg.Node_ResTarget:
		return a.expr(x.ResTarget.Val, sc)
	}
	c := a.generic(n, sc)
	c.Direct = false
	return c
}

// generic is the union of what every expression under n reads.
func (a *analyzer) generic(n *pg.Node, sc *scope) Column {
	var out Column
	var visit func(m protoreflect.Message)
	visit = func(m protoreflect.Message) {
		m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
			if fd.Kind() != protoreflect.MessageKind {
				return true
			}
			one := func(v protoreflect.Value) {
				if node, ok := v.Message().Interface().(*pg.Node); ok {
					out = merge(out, a.expr(node, sc))
					return
				}
				visit(v.Message())
			}
			if fd.IsList() {
				l := v.List()
				for i := 0; i < l.Len(); i++ {
					one(l.Get(i))
				}
			} else {
				one(v)
			}
			return true
		})
	}
	// n itself is a Node (a oneof wrapper): visit the message it holds.
	n.ProtoReflect().Range(func(_ protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		if v.Message().Interface() != nil {
			visit(v.Message())
		}
		return false
	})
	return out
}

// columnRef resolves a column reference: column of a FROM item in the innermost scope that
// has one of that name (all of them, if several), a whole-row reference to an item, or a
// SQL function's parameter by name.
func (a *analyzer) columnRef(fields []*pg.Node, sc *scope) Column {
	names := strNames(fields)
	if isStar(fields) {
		// t.* or * inside an expression (row_to_json(t.*), count(*) is not here):
		// the whole row.
		var c Column
		for _, col := range a.star(fields, sc) {
			c = merge(c, col)
		}
		return c
	}
	if len(names) == 1 {
		name := names[0]
		for s := sc; s != nil; s = s.parent {
			var c Column
			found := 0
			for _, it := range s.items {
				if i := slices.Index(it.names, name); i >= 0 {
					if found == 0 {
						c = it.cols[i]
					} else {
						c = merge(c, it.cols[i])
					}
					found++
				}
			}
			if found == 0 {
				for _, it := range s.items {
					if it.open != nil {
						c = merge(c, *it.open)
						found++
					}
				}
			}
			if found > 0 {
				return c
			}
		}
		if it := a.findItem(name, sc); it != nil {
			return a.wholeRow(it)
		}
		if i := slices.Index(a.paramNames, name); i >= 0 && i < len(a.params) {
			return a.params[i]
		}
		a.failf("column %q not found", name)
		return Column{}
	}
	// t.col, schema.t.col, or (with a SQL function's name) fn.param.
	alias, col := names[len(names)-2], names[len(names)-1]
	if it := a.findItem(alias, sc); it != nil {
		return a.columnOf(it, col)
	}
	if i := slices.Index(a.paramNames, col); i >= 0 && i < len(a.params) {
		return a.params[i]
	}
	a.failf("column %s not found", strings.Join(names, "."))
	return Column{}
}

func (a *analyzer) columnOf(it *item, col string) Column {
	if it.open != nil {
		return *it.open
	}
	if i := slices.Index(it.names, col); i >= 0 {
		return it.cols[i]
	}
	// A column of the row the item is (composite field access, system columns): the
	// whole row, conservatively.
	switch col {
	case "ctid", "xmin", "xmax", "cmin", "cmax", "tableoid":
		return Column{}
	}
	return a.wholeRow(it)
}

func (a *analyzer) wholeRow(it *item) Column {
	if it.open != nil {
		c := *it.open
		c.Direct = false
		return c
	}
	var c Column
	for _, col := range it.cols {
		c = merge(c, col)
	}
	return c
}

// call is what a function call returns: nothing for the allow-list, its arguments for a
// builtin, what its body reads for a SQL function, opaque for anything else.
func (a *analyzer) call(fc *pg.FuncCall, sc *scope) Column {
	schema, name := funcName(fc.Funcname)
	builtinName := schema == "" || schema == "pg_catalog"
	if builtinName && (name == "count" || slices.Contains(a.opt.Clean, name)) {
		return Column{}
	}
	var args Column
	argv := make([]Column, len(fc.Args))
	for i, e := range fc.Args {
		argv[i] = a.expr(e, sc)
		args = merge(args, argv[i])
	}
	args.Direct = false
	fns, err := a.cat.Functions(schema, name)
	if err != nil {
		a.failf("catalog: %v", err)
		return args
	}
	if len(fns) == 0 {
		a.failf("unknown function %s", qualified(schema, name))
		return args
	}
	out := args
	for _, f := range fns {
		switch {
		case f.Schema == "pg_catalog" && name == "current_setting" && customSetting(fc.Args):
			out.Opaque = "current_setting of a custom setting, which a session can have set to any value"
		case f.Schema == "pg_catalog" && readsByName[name]:
			out.Opaque = fmt.Sprintf("pg_catalog.%s reads a table or query it is given by name", name)
		case f.Schema == "pg_catalog":
		case f.Language == "sql" && f.Body != "":
			out = merge(out, a.sqlBody(f, name, argv))
		default:
			out.Opaque = fmt.Sprintf("function %s.%s (language %s) cannot be analysed", f.Schema, name, f.Language)
		}
	}
	out.Direct = false
	return out
}

// sqlBody is the union of every output column of a SQL function body's statements, with
// its parameters bound to the call's arguments.
func (a *analyzer) sqlBody(f Function, name string, argv []Column) Column {
	if a.depth >= a.opt.MaxDepth {
		a.failf("function %s.%s: expansion deeper than %d", f.Schema, name, a.opt.MaxDepth)
		return Column{}
	}
	tree, err := pg.Parse(f.Body)
	if err != nil {
		return Column{Opaque: fmt.Sprintf("function %s.%s: body does not parse", f.Schema, name)}
	}
	sub := &analyzer{cat: a.cat, opt: a.opt, depth: a.depth + 1, params: argv, paramNames: f.ArgNames}
	var out Column
	for _, s := range tree.Stmts {
		for _, c := range sub.statement(s.Stmt, nil).Columns {
			out = merge(out, c)
		}
	}
	if sub.fail != "" {
		out.Opaque = fmt.Sprintf("function %s.%s: %s", f.Schema, name, sub.fail)
	}
	return out
}

// customSetting reports a current_setting argument that is not a literal naming a built-in
// setting: custom settings (with a dot) hold what set_config put there.
func customSetting(args []*pg.Node) bool {
	if len(args) == 0 {
		return true
	}
	c, ok := args[0].Node.(*pg.Node_AConst)
	if !ok {
		return true
	}
	sv, ok := c.AConst.Val.(*pg.A_Const_Sval)
	return !ok || strings.Contains(sv.Sval.Sval, ".")
}
