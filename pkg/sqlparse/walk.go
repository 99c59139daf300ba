package sqlparse

import (
	"strings"

	pg "github.com/pganalyze/pg_query_go/v6"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// walker visits every node of one statement's parse tree. It walks generically (protobuf
// reflection over every populated message field), so a table, function or nested statement
// is found wherever the grammar puts it; the node types that carry meaning get a hook.
type walker struct {
	st *Stmt
	// kind is the most consequential kind seen so far among executed (sub)statements.
	kind string
	// scope holds the CTE names visible at this point: an unqualified relation with such a
	// name is the CTE, not a table.
	scope []string
	// skip holds nodes already handled by their parent's hook (a DML target, say).
	skip []any
	// dry > 0 while inside something the server parses but does not run (plain EXPLAIN).
	dry int
	// depth guards against pathological nesting in bodies classified recursively.
	depth int
	// consts, when set, collects the location of every constant (A_Const) visited: the
	// template cache checks that each literal of the text is one (see template.go).
	consts *[]int32
	// params are the values bound to the statement's parameters, when bound is set (a
	// Bind judged with its values); function bodies classified recursively have none.
	params []Param
	bound  bool
}

// pred judges the predicates of a DML statement of this walker's text.
func (w *walker) pred(sc scope) pred {
	if w.depth > 0 {
		return pred{sc: sc} // $n in a function body is the function's argument
	}
	return pred{sc: sc, params: w.params, bound: w.bound}
}

// touchesAll records the verdict of p on one UPDATE/DELETE/MERGE: all says it touches every
// row of its target. A verdict that read a parameter may change once values are bound.
func (w *walker) touchesAll(p *pred, all bool) {
	if all {
		w.flag(FlagNoEffectiveWhere)
		if p.readsParam && w.depth == 0 {
			w.st.BindDependent = true
		}
	}
	w.st.readsLiteral = w.st.readsLiteral || p.readsLiteral
}

func (w *walker) node(n *pg.Node) {
	if n == nil || n.Node == nil {
		return
	}
	// Fast path for the expression nodes that make up most of a tree: direct field access
	// instead of reflection. Every *Node field of these types is visited (their other fields
	// are names, operators and positions).
	switch x := n.Node.(type) {
	case *pg.Node_AConst:
		w.constant(x.AConst)
		return
	case *pg.Node_ParamRef, *pg.Node_String_, *pg.Node_Integer,
		*pg.Node_Float, *pg.Node_Boolean, *pg.Node_AStar, *pg.Node_BitString:
		return
	case *pg.Node_ColumnRef:
		w.column(columnName(x.ColumnRef.Fields))
		return
	case *pg.Node_ResTarget:
		w.nodes(x.ResTarget.Indirection)
		w.node(x.ResTarget.Val)
		return
	case *pg.Node_AExpr:
		w.node(x.AExpr.Lexpr)
		w.node(x.AExpr.Rexpr)
		return
	case *pg.Node_BoolExpr:
		w.nodes(x.BoolExpr.Args)
		return
	case *pg.Node_TypeCast:
		w.node(x.TypeCast.Arg)
		if tn := x.TypeCast.TypeName; tn != nil {
			w.nodes(tn.Typmods)
			w.nodes(tn.ArrayBounds)
		}
		return
	case *pg.Node_NullTest:
		w.node(x.NullTest.Arg)
		return
	case *pg.Node_List:
		w.nodes(x.List.Items)
		return
	case *pg.Node_SortBy:
		w.node(x.SortBy.Node)
		return
	case *pg.Node_JoinExpr:
		w.node(x.JoinExpr.Larg)
		w.node(x.JoinExpr.Rarg)
		w.node(x.JoinExpr.Quals)
		return
	case *pg.Node_SubLink:
		w.node(x.SubLink.Testexpr)
		w.node(x.SubLink.Subselect)
		return
	case *pg.Node_RangeSubselect:
		w.node(x.RangeSubselect.Subquery)
		return
	case *pg.Node_CaseExpr:
		w.node(x.CaseExpr.Arg)
		w.nodes(x.CaseExpr.Args)
		w.node(x.CaseExpr.Defresult)
		return
	case *pg.Node_CaseWhen:
		w.node(x.CaseWhen.Expr)
		w.node(x.CaseWhen.Result)
		return
	case *pg.Node_CoalesceExpr:
		w.nodes(x.CoalesceExpr.Args)
		return
	}
	w.children(n.ProtoReflect())
}

func (w *walker) nodes(ns []*pg.Node) {
	for _, n := range ns {
		w.node(n)
	}
}

// children walks every populated message-typed field of m.
func (w *walker) children(m protoreflect.Message) {
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		if fd.Kind() != protoreflect.MessageKind {
			return true
		}
		if fd.IsList() {
			l := v.List()
			for i := 0; i < l.Len(); i++ {
				w.msg(l.Get(i).Message())
			}
		} else if !fd.IsMap() {
			w.msg(v.Message())
		}
		return true
	})
}

func (w *walker) constant(c *pg.A_Const) {
	if w.consts != nil {
		*w.consts = append(*w.consts, c.Location)
	}
}

func (w *walker) setKind(k string) {
	if w.dry == 0 && worseKind(k, w.kind) {
		w.kind = k
	}
}

func (w *walker) flag(f Flag) { w.st.Flags |= f }

func (w *walker) skipped(x any) bool {
	for _, s := range w.skip {
		if s == x {
			return true
		}
	}
	return false
}

// target records the relation a statement writes; under plain EXPLAIN it is only read.
func (w *walker) target(rv *pg.RangeVar) {
	if rv == nil {
		return
	}
	w.skip = append(w.skip, rv)
	if w.dry > 0 {
		w.st.Reads = addName(w.st.Reads, rvName(rv))
	} else {
		w.st.Writes = addName(w.st.Writes, rvName(rv))
	}
}

func (w *walker) column(name string) {
	if name != "" {
		w.st.Columns = addName(w.st.Columns, name)
	}
}

func (w *walker) function(name string) {
	if name == "" {
		return
	}
	w.st.Functions = addName(w.st.Functions, name)
	if f := functionFlags(name); f != 0 {
		w.flag(f)
		// The flag does not depend on the arguments, but a call that matters this much is
		// classified afresh for every text rather than served from the template cache.
		w.st.readsLiteral = true
	}
}

func (w *walker) variable(name string) {
	name = strings.ToLower(name)
	w.st.Variables = addName(w.st.Variables, name)
	w.flag(variableFlags(name))
}

func (w *walker) inScope(name string) bool {
	for _, s := range w.scope {
		if s == name {
			return true
		}
	}
	return false
}

// scoped walks a statement that may carry a WITH clause. A CTE's body sees the CTEs before
// it (all of them under RECURSIVE); the statement's body sees all of them.
func (w *walker) scoped(with *pg.WithClause, m protoreflect.Message) {
	base := len(w.scope)
	if with != nil {
		w.skip = append(w.skip, with)
		names := make([]string, 0, len(with.Ctes))
		for _, c := range with.Ctes {
			names = append(names, c.GetCommonTableExpr().GetCtename())
		}
		for i, c := range with.Ctes {
			w.scope = w.scope[:base]
			if with.Recursive {
				w.scope = append(w.scope, names...)
			} else {
				w.scope = append(w.scope, names[:i]...)
			}
			w.node(c.GetCommonTableExpr().GetCtequery())
		}
		w.scope = append(w.scope[:base], names...)
	}
	w.children(m)
	w.scope = w.scope[:base]
}

func (w *walker) msg(m protoreflect.Message) {
	x := m.Interface()
	if len(w.skip) > 0 && w.skipped(x) {
		return
	}
	switch x := x.(type) {
	case *pg.Node:
		w.children(m)
	case *pg.A_Const:
		w.constant(x)
	case *pg.RangeVar:
		if x.Schemaname == "" && x.Catalogname == "" && w.inScope(x.Relname) {
			return
		}
		w.st.Reads = addName(w.st.Reads, rvName(x))
	case *pg.ColumnRef:
		w.column(columnName(x.Fields))
	case *pg.FuncCall:
		name := qualifiedName(x.Funcname)
		w.function(name)
		if base(name) == "set_config" {
			w.st.readsLiteral = true
			w.setConfig(x.Args)
		}
		if base(name) == "ts_rewrite" && len(x.Args) == 2 {
			// ts_rewrite(query, 'SELECT ...') runs its second argument as a query.
			w.flag(FlagDynamicSQL)
			w.st.readsLiteral = true
		}
		w.children(m)
	case *pg.ObjectWithArgs:
		w.function(qualifiedName(x.Objname))
		w.children(m)
	case *pg.WithClause:
		// Reached only for WITH clauses outside the statements scoped() knows about.
		w.scoped(nil, m)

	case *pg.SelectStmt:
		w.setKind(KindSelect)
		if x.IntoClause != nil {
			w.setKind(KindDDL)
		}
		w.scoped(x.WithClause, m)
	case *pg.IntoClause:
		w.setKind(KindDDL)
		w.target(x.Rel)
		w.children(m)
	case *pg.InsertStmt:
		w.setKind(KindInsert)
		w.target(x.Relation)
		for _, c := range x.Cols {
			w.column(c.GetResTarget().GetName())
		}
		w.scoped(x.WithClause, m)
	case *pg.UpdateStmt:
		w.setKind(KindUpdate)
		w.target(x.Relation)
		for _, t := range x.TargetList {
			w.column(t.GetResTarget().GetName())
		}
		if w.dry == 0 {
			p := w.pred(dmlScope(x.Relation, x.FromClause, x.WithClause))
			w.touchesAll(&p, !p.effectiveWhere(x.WhereClause))
		}
		w.scoped(x.WithClause, m)
	case *pg.DeleteStmt:
		w.setKind(KindDelete)
		w.target(x.Relation)
		if w.dry == 0 {
			p := w.pred(dmlScope(x.Relation, x.UsingClause, x.WithClause))
			w.touchesAll(&p, !p.effectiveWhere(x.WhereClause))
		}
		w.scoped(x.WithClause, m)
	case *pg.MergeStmt:
		w.setKind(KindMerge)
		w.target(x.Relation)
		if w.dry == 0 {
			p := w.pred(dmlScope(x.Relation, []*pg.Node{x.SourceRelation}, x.WithClause))
			w.touchesAll(&p, p.mergeTouchesAll(x))
		}
		w.scoped(x.WithClause, m)
	case *pg.ExplainStmt:
		if explainAnalyze(x.Options) {
			w.node(x.Query)
		} else {
			w.dry++
			w.node(x.Query)
			w.dry--
		}
	case *pg.CopyStmt:
		w.setKind(KindCopy)
		w.st.readsLiteral = true // the file or program
		w.copyStmt(x)
		w.children(m)
	case *pg.TruncateStmt:
		w.setKind(KindTruncate)
		for _, r := range x.Relations {
			w.target(r.GetRangeVar())
		}
	case *pg.VariableSetStmt:
		// The value (a role name, a path) is a literal the policy may come to care about.
		w.st.readsLiteral = true
		w.variableSet(x)
		w.children(m)
	case *pg.TransactionStmt, *pg.ConstraintsSetStmt:
		w.setKind(KindTxn)
	case *pg.DiscardStmt:
		w.setKind(KindOther)
		if x.Target == pg.DiscardMode_DISCARD_ALL {
			// DISCARD ALL includes SET SESSION AUTHORIZATION DEFAULT and RESET ALL.
			w.variable("all")
		}
	case *pg.DoStmt:
		w.setKind(KindOther)
		w.flag(FlagDynamicSQL)
		w.doStmt(x)
	case *pg.CreateFunctionStmt:
		w.setKind(KindDDL)
		w.flag(FlagCodeDefinition)
		w.function(qualifiedName(x.Funcname))
		w.createFunction(x)
		w.children(m)
	case *pg.CreatePLangStmt:
		w.setKind(KindDDL)
		w.flag(FlagCodeDefinition)
		w.st.Language = strings.ToLower(x.Plname)
		if !x.Pltrusted {
			w.flag(FlagUntrustedLanguage)
		}
		w.children(m)
	case *pg.CreateTrigStmt:
		w.setKind(KindDDL)
		w.flag(FlagCodeDefinition)
		w.function(qualifiedName(x.Funcname))
		w.target(x.Relation)
		w.children(m)
	case *pg.CreateEventTrigStmt:
		w.setKind(KindDDL)
		w.flag(FlagCodeDefinition)
		w.function(qualifiedName(x.Funcname))
		w.children(m)
	case *pg.RuleStmt:
		w.setKind(KindDDL)
		w.flag(FlagCodeDefinition)
		w.target(x.Relation)
		w.children(m)
	case *pg.DefineStmt:
		w.setKind(KindDDL)
		if x.Kind == pg.ObjectType_OBJECT_AGGREGATE || x.Kind == pg.ObjectType_OBJECT_OPERATOR {
			// Operators and aggregates call functions without naming them at the call site.
			w.flag(FlagCodeDefinition)
			for _, d := range x.Definition {
				if de := d.GetDefElem(); de != nil && de.Arg != nil {
					if tn := de.Arg.GetTypeName(); tn != nil {
						w.function(qualifiedName(tn.Names))
					} else if l := de.Arg.GetList(); l != nil {
						w.function(qualifiedName(l.Items))
					}
				}
			}
		}
		w.children(m)
	case *pg.CreateCastStmt, *pg.CreateTransformStmt, *pg.AlterFunctionStmt, *pg.CreateOpClassStmt:
		w.setKind(KindDDL)
		w.flag(FlagCodeDefinition)
		w.children(m)
	case *pg.CreateExtensionStmt:
		w.setKind(KindDDL)
		w.flag(FlagExtension)
		if untrustedLanguageExtension(x.Extname) {
			// CREATE LANGUAGE plperlu is parsed as CREATE EXTENSION plperlu.
			w.flag(FlagUntrustedLanguage | FlagCodeDefinition)
			w.st.Language = strings.ToLower(x.Extname)
		}
		w.children(m)
	case *pg.AlterExtensionStmt, *pg.AlterExtensionContentsStmt:
		w.setKind(KindDDL)
		w.flag(FlagExtension)
		w.children(m)
	case *pg.AlterSystemStmt:
		w.setKind(KindDDL)
		w.flag(FlagServerConfig)
		w.children(m)
	case *pg.LoadStmt:
		// LOAD 'library' maps a shared object from the server's file system.
		w.setKind(KindOther)
		w.flag(FlagServerFileAccess)
	case *pg.CreateForeignServerStmt, *pg.AlterForeignServerStmt, *pg.CreateUserMappingStmt,
		*pg.AlterUserMappingStmt, *pg.ImportForeignSchemaStmt, *pg.CreateSubscriptionStmt,
		*pg.AlterSubscriptionStmt, *pg.CreateFdwStmt, *pg.AlterFdwStmt:
		w.setKind(KindDDL)
		w.flag(FlagRemoteAccess)
		w.children(m)
	case *pg.GrantStmt, *pg.AlterDefaultPrivilegesStmt:
		w.setKind(KindDCL)
		w.flag(FlagPrivilegeChange)
		w.children(m)
	case *pg.AlterOwnerStmt:
		w.setKind(KindDDL)
		w.flag(FlagPrivilegeChange)
		w.children(m)
	case *pg.GrantRoleStmt, *pg.CreateRoleStmt, *pg.AlterRoleStmt, *pg.AlterRoleSetStmt,
		*pg.DropRoleStmt, *pg.ReassignOwnedStmt:
		w.setKind(KindDCL)
		w.flag(FlagRoleChange)
		w.children(m)
	case *pg.DropOwnedStmt:
		w.setKind(KindDDL)
		w.flag(FlagDrop | FlagRoleChange)
		w.children(m)
	case *pg.DropStmt:
		w.setKind(KindDDL)
		w.flag(FlagDrop)
		if tableLike(x.RemoveType) {
			for _, o := range x.Objects {
				if l := o.GetList(); l != nil {
					name := qualifiedNameCase(l.Items)
					w.st.Writes = addName(w.st.Writes, name)
				}
			}
		}
		w.children(m)
	case *pg.AlterTableStmt:
		w.setKind(KindDDL)
		w.target(x.Relation)
		for _, c := range x.Cmds {
			switch cmd := c.GetAlterTableCmd(); cmd.GetSubtype() {
			case pg.AlterTableType_AT_DropColumn:
				w.flag(FlagDropColumn)
				w.column(cmd.Name)
			case pg.AlterTableType_AT_AlterColumnType:
				w.flag(FlagAlterColumnType)
				w.column(cmd.Name)
			case pg.AlterTableType_AT_ChangeOwner:
				w.flag(FlagPrivilegeChange)
			case pg.AlterTableType_AT_DisableTrig, pg.AlterTableType_AT_DisableTrigAll, pg.AlterTableType_AT_DisableTrigUser,
				pg.AlterTableType_AT_EnableReplicaTrig, pg.AlterTableType_AT_EnableAlwaysTrig,
				pg.AlterTableType_AT_DisableRule, pg.AlterTableType_AT_EnableReplicaRule, pg.AlterTableType_AT_EnableAlwaysRule,
				pg.AlterTableType_AT_DisableRowSecurity, pg.AlterTableType_AT_NoForceRowSecurity:
				// Audit triggers, rules and row-level security off for everyone, not only
				// this session: the same escape as session_replication_role. A trigger or
				// rule enabled for replicas only does not fire in ordinary sessions; one
				// enabled ALWAYS fires under session_replication_role = replica too, so
				// which of them fire when is no longer what the audit set up.
				w.flag(FlagSessionEscape)
			}
		}
		w.children(m)
	case *pg.RenameStmt:
		w.setKind(KindDDL)
		if x.RenameType == pg.ObjectType_OBJECT_ROLE {
			w.flag(FlagRoleChange)
		}
		w.target(x.Relation)
		w.children(m)
	case *pg.CreateStmt:
		w.setKind(KindDDL)
		w.target(x.Relation)
		w.children(m)
	case *pg.ViewStmt:
		w.setKind(KindDDL)
		w.target(x.View)
		w.children(m)
	case *pg.IndexStmt:
		w.setKind(KindDDL)
		w.target(x.Relation)
		w.children(m)
	case *pg.CreateTableAsStmt:
		w.setKind(KindDDL)
		w.children(m)
	case *pg.PrepareStmt:
		w.setKind(KindOther)
		w.st.Prepared = x.Name
		w.children(m)
	case *pg.ExecuteStmt:
		w.setKind(KindOther)
		w.st.Prepared = x.Name
		w.flag(FlagUnknownBody)
		w.children(m)
	case *pg.RefreshMatViewStmt:
		w.setKind(KindOther)
		w.target(x.Relation)
	case *pg.DropdbStmt, *pg.DropTableSpaceStmt, *pg.DropSubscriptionStmt, *pg.DropUserMappingStmt:
		w.setKind(KindDDL)
		w.flag(FlagDrop)
		w.children(m)
	default:
		w.children(m)
	}
}

func (w *walker) copyStmt(x *pg.CopyStmt) {
	c := &Copy{Direction: "to", Endpoint: "stdout"}
	if x.IsFrom {
		c.Direction, c.Endpoint = "from", "stdin"
	}
	switch {
	case x.IsProgram:
		c.Endpoint, c.Target = "program", x.Filename
		w.flag(FlagServerProgram)
	case x.Filename != "":
		c.Endpoint, c.Target = "file", x.Filename
		w.flag(FlagServerFileAccess)
	}
	w.st.Copy = c
	if x.Relation != nil {
		if x.IsFrom {
			w.target(x.Relation)
		} else {
			w.skip = append(w.skip, x.Relation)
			w.st.Reads = addName(w.st.Reads, rvName(x.Relation))
		}
	}
	for _, a := range x.Attlist {
		w.column(a.GetString_().GetSval())
	}
}

func (w *walker) variableSet(x *pg.VariableSetStmt) {
	name := strings.ToLower(x.Name)
	switch {
	case x.Kind == pg.VariableSetKind_VAR_RESET_ALL:
		w.setKind(KindSet)
		w.variable("all")
	case name == "transaction" || name == "session characteristics" || name == "transaction_snapshot":
		w.setKind(KindTxn)
		w.variable(name)
	default:
		w.setKind(KindSet)
		w.variable(name)
		if name == "client_encoding" {
			switch x.Kind {
			case pg.VariableSetKind_VAR_SET_DEFAULT, pg.VariableSetKind_VAR_RESET:
				w.st.Encoding = "default"
			case pg.VariableSetKind_VAR_SET_VALUE:
				if len(x.Args) == 1 {
					w.st.Encoding, _ = constString(x.Args[0])
				}
			}
		}
	}
}

// setConfig handles set_config(name, value, is_local): the same as SET name. A name that
// is not a literal could be anything, so it counts as an identity change.
func (w *walker) setConfig(args []*pg.Node) {
	if len(args) == 0 {
		return
	}
	if s, ok := constString(args[0]); ok {
		w.variable(s)
		if strings.EqualFold(s, "client_encoding") && len(args) > 1 {
			w.st.Encoding, _ = constString(args[1])
		}
		return
	}
	w.flag(FlagIdentityChange)
}

func explainAnalyze(opts []*pg.Node) bool {
	for _, o := range opts {
		d := o.GetDefElem()
		if d == nil || strings.ToLower(d.Defname) != "analyze" {
			continue
		}
		if d.Arg == nil {
			return true
		}
		// EXPLAIN (ANALYZE off) and friends do not run the statement; any other value does.
		if b, ok := boolOption(d.Arg); ok {
			return b
		}
		return true
	}
	return false
}

func boolOption(n *pg.Node) (bool, bool) {
	if b := n.GetBoolean(); b != nil {
		return b.Boolval, true
	}
	if i := n.GetInteger(); i != nil {
		return i.Ival != 0, true
	}
	if s := n.GetString_(); s != nil {
		return parseBoolText(s.Sval)
	}
	return false, false
}

// parseBoolText accepts what PostgreSQL's boolean input accepts (parse_bool).
func parseBoolText(s string) (bool, bool) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "t", "tr", "tru", "true", "y", "ye", "yes", "on", "1":
		return true, true
	case "f", "fa", "fal", "fals", "false", "n", "no", "of", "off", "0":
		return false, true
	}
	return false, false
}

func tableLike(t pg.ObjectType) bool {
	switch t {
	case pg.ObjectType_OBJECT_TABLE, pg.ObjectType_OBJECT_VIEW, pg.ObjectType_OBJECT_MATVIEW,
		pg.ObjectType_OBJECT_FOREIGN_TABLE, pg.ObjectType_OBJECT_SEQUENCE, pg.ObjectType_OBJECT_INDEX:
		return true
	}
	return false
}

func rvName(rv *pg.RangeVar) string {
	if rv.Schemaname != "" {
		return rv.Schemaname + "." + rv.Relname
	}
	return rv.Relname
}

// targetNames are the names by which a DML statement's columns of its target can be
// qualified: the alias if there is one, else the relation name.
// dmlScope is what the predicates of an UPDATE, DELETE or MERGE can refer to.
func dmlScope(target *pg.RangeVar, from []*pg.Node, with *pg.WithClause) scope {
	sc := scope{names: targetNames(target), ctes: cteMap(with)}
	if target != nil {
		sc.rel = target.Relname
	}
	if len(from) > 0 && from[0] != nil {
		sc.others = fromNames(from)
	}
	return sc
}

func targetNames(rv *pg.RangeVar) []string {
	if rv == nil {
		return nil
	}
	if rv.Alias != nil && rv.Alias.Aliasname != "" {
		return []string{rv.Alias.Aliasname}
	}
	return []string{rv.Relname}
}

// qualifiedName joins a list of String nodes with "." in lower case (function names).
func qualifiedName(items []*pg.Node) string {
	return strings.ToLower(qualifiedNameCase(items))
}

// qualifiedNameCase joins a list of String nodes with "." as the parser produced them
// (already case-folded where PostgreSQL folds).
func qualifiedNameCase(items []*pg.Node) string {
	var b strings.Builder
	for _, it := range items {
		s := it.GetString_()
		if s == nil {
			continue
		}
		if b.Len() > 0 {
			b.WriteByte('.')
		}
		b.WriteString(s.Sval)
	}
	return b.String()
}

func columnName(fields []*pg.Node) string {
	var b strings.Builder
	for _, f := range fields {
		if b.Len() > 0 {
			b.WriteByte('.')
		}
		if s := f.GetString_(); s != nil {
			b.WriteString(s.Sval)
		} else if f.GetAStar() != nil {
			b.WriteByte('*')
		}
	}
	return b.String()
}

// base is the last dotted part of a name: the function without its schema.
func base(name string) string {
	if i := strings.LastIndexByte(name, '.'); i >= 0 {
		return name[i+1:]
	}
	return name
}

func constString(n *pg.Node) (string, bool) {
	for n != nil {
		if tc := n.GetTypeCast(); tc != nil {
			n = tc.Arg
			continue
		}
		if c := n.GetAConst(); c != nil {
			if s := c.GetSval(); s != nil {
				return s.Sval, true
			}
		}
		return "", false
	}
	return "", false
}

func addName(list []string, name string) []string {
	for _, s := range list {
		if s == name {
			return list
		}
	}
	return append(list, name)
}
