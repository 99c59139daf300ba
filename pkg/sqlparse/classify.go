package sqlparse

import (
	"fmt"
	"strings"

	pg "github.com/pganalyze/pg_query_go/v6"
)

// Classify parses sql as the given protocol's server would and says what it does. The
// result is cached by (protocol, text): a statement seen before costs a map lookup. A
// PostgreSQL text that differs from one seen before only in its literals is served from the
// template cache when its classification provably does not depend on them (template.go).
// The returned Info is shared: do not modify it.
//
// Text that does not parse yields Parsed=false, Kind OTHER and FlagUnparseable. A protocol
// without a classifier (MySQL, for now) yields Parsed=false with FlagUnsupportedProtocol
// as well: nothing is guessed.
func Classify(protocol, sql string) *Info { return classifyText(protocol, sql, false) }

// ClassifyShape is Classify for callers that read no statement text (Stmt.Text): a text
// the template cache serves gets the classification shared by every text of its template,
// whose Statements[i].Text is another text's. Everything else in it holds for sql. It
// saves copying the classification per statement. The result is shared: never modify it.
func ClassifyShape(protocol, sql string) *Info { return classifyText(protocol, sql, true) }

// classifyText is Classify, or ClassifyShape when shared is set.
func classifyText(protocol, sql string, shared bool) *Info {
	if info, ok := defaultCache.get(protocol, sql); ok {
		return info
	}
	if protocol == ProtocolPostgres {
		if tpl, ok := scanTemplate(sql); ok {
			return classifyTemplate(sql, tpl, shared)
		}
	}
	info := classify(protocol, sql)
	defaultCache.put(protocol, sql, info)
	return info
}

func classify(protocol, sql string) *Info {
	switch protocol {
	case ProtocolPostgres:
		return classifyPostgres(sql, nil, nil)
	default:
		return &Info{
			Protocol:   protocol,
			Kind:       KindOther,
			ParseError: fmt.Sprintf("no SQL classifier for protocol %q", protocol),
			Flags:      FlagUnparseable | FlagUnsupportedProtocol,
		}
	}
}

// ClassifyBound classifies a PostgreSQL statement prepared with parameters as it runs with
// the values of one Bind: a parameter bound to NULL or to a pattern that matches every
// value leaves the target unrestricted, one bound to a value may restrict it. It is not
// cached (the values differ from Bind to Bind). The proxy calls it for a prepared
// statement whose Info.BindDependent says its verdict rests on its parameters.
func ClassifyBound(sql string, params []Param) *Info {
	if params == nil {
		params = []Param{}
	}
	return classifyPostgres(sql, nil, params)
}

// classifyPostgres classifies a PostgreSQL text; consts, when set, receives the location of
// every constant of the parse tree (for the template cache); params, when not nil, are the
// values bound to its parameters.
func classifyPostgres(sql string, consts *[]int32, params []Param) *Info {
	info := &Info{Protocol: ProtocolPostgres, Kind: KindOther}
	if strings.IndexByte(sql, 0) >= 0 {
		// The parser reads a C string and would stop at the NUL, seeing less than was sent;
		// the server rejects such a message. Either way, nothing after it may be judged
		// by what comes before it.
		info.ParseError = "statement text contains a NUL byte"
		info.Flags = FlagUnparseable
		return info
	}
	tree, err := pg.Parse(sql)
	if err != nil {
		info.ParseError = err.Error()
		info.Flags = FlagUnparseable
		return info
	}
	if len(tree.Stmts) == 0 {
		// Only comments or whitespace: the server answers EmptyQueryResponse.
		info.Parsed = true
		info.Kind = KindOther
		return info
	}
	info.Parsed = true
	if fp, err := pg.Fingerprint(sql); err == nil {
		info.Fingerprint = fp
	}
	rank := -1
	for _, rs := range tree.Stmts {
		st := classifyStmt(sql, rs, consts, params)
		if r := kindRank[st.Kind]; r > rank {
			rank, info.Kind = r, st.Kind
		}
		info.Flags |= st.Flags
		for _, t := range st.Reads {
			info.Tables = addName(info.Tables, t)
		}
		for _, t := range st.Writes {
			info.Tables = addName(info.Tables, t)
		}
		info.Statements = append(info.Statements, st)
	}
	return info
}

func classifyStmt(sql string, rs *pg.RawStmt, consts *[]int32, params []Param) Stmt {
	st := Stmt{Command: command(rs.Stmt)}
	st.start, st.end = stmtBounds(sql, rs)
	st.Text = trimSpace(sql[st.start:st.end])
	w := &walker{st: &st, kind: KindTxn, consts: consts, params: params, bound: params != nil}
	w.node(rs.Stmt)
	st.Kind = w.kind
	if st.Kind == KindTxn && !isTxn(rs.Stmt) {
		st.Kind = KindOther
	}
	st.NoEffectiveWhere = st.Flags.Has(FlagNoEffectiveWhere)
	return st
}

func isTxn(n *pg.Node) bool {
	switch n.Node.(type) {
	case *pg.Node_TransactionStmt, *pg.Node_ConstraintsSetStmt, *pg.Node_VariableSetStmt:
		return true
	}
	return false
}

// stmtBounds locates one statement of a multi-statement text (by byte offsets, which is
// what the parser reports); its Text is that slice, trimmed.
func stmtBounds(sql string, rs *pg.RawStmt) (start, end int) {
	start = int(rs.StmtLocation)
	if start < 0 || start > len(sql) {
		return 0, len(sql)
	}
	end = len(sql)
	if rs.StmtLen > 0 && start+int(rs.StmtLen) <= len(sql) {
		end = start + int(rs.StmtLen)
	}
	return start, end
}
