package sqlparse

import (
	"encoding/json"
	"strings"

	pg "github.com/pganalyze/pg_query_go/v6"
)

// Functions whose call is itself a fact the policy cares about, by name without schema:
// a function with one of these names in any schema is flagged, because an unqualified call
// resolves through search_path and a qualified one may name pg_catalog.
var functionFacts = map[string]Flag{
	// Server files (core, adminpack and large objects).
	"pg_read_file": FlagServerFileAccess, "pg_read_binary_file": FlagServerFileAccess,
	"pg_ls_dir": FlagServerFileAccess, "pg_stat_file": FlagServerFileAccess,
	"pg_ls_logdir": FlagServerFileAccess, "pg_ls_waldir": FlagServerFileAccess,
	"pg_ls_tmpdir": FlagServerFileAccess, "pg_ls_archive_statusdir": FlagServerFileAccess,
	"pg_ls_logicalsnapdir": FlagServerFileAccess, "pg_ls_logicalmapdir": FlagServerFileAccess,
	"pg_ls_replslotdir": FlagServerFileAccess, "pg_file_write": FlagServerFileAccess,
	"pg_file_sync": FlagServerFileAccess, "pg_file_rename": FlagServerFileAccess,
	"pg_file_unlink": FlagServerFileAccess, "pg_logdir_ls": FlagServerFileAccess,
	"pg_file_read": FlagServerFileAccess, "pg_file_length": FlagServerFileAccess,
	"lo_import": FlagServerFileAccess, "lo_export": FlagServerFileAccess,
	// Server processes and configuration.
	"pg_terminate_backend": FlagBackendControl, "pg_cancel_backend": FlagBackendControl,
	"pg_reload_conf": FlagBackendControl | FlagServerConfig, "pg_rotate_logfile": FlagBackendControl,
	"pg_promote": FlagBackendControl, "pg_switch_wal": FlagBackendControl,
	"pg_wal_replay_pause": FlagBackendControl, "pg_wal_replay_resume": FlagBackendControl,
	"pg_log_backend_memory_contexts": FlagBackendControl,
	// Functions that run a query given as a string: the statement is invisible here.
	"query_to_xml": FlagDynamicSQL, "query_to_xmlschema": FlagDynamicSQL,
	"query_to_xml_and_xmlschema": FlagDynamicSQL, "ts_stat": FlagDynamicSQL,
}

// functionFlags says what calling (or naming) function name implies.
func functionFlags(name string) Flag {
	b := base(name)
	if strings.HasPrefix(b, "dblink") {
		// dblink, dblink_exec, dblink_connect(_u), dblink_open, dblink_send_query, ...: the
		// server connects elsewhere, and the remote statement is a string.
		return FlagRemoteAccess | FlagDynamicSQL
	}
	return functionFacts[b]
}

// variableFlags says what changing run-time setting name implies.
func variableFlags(name string) Flag {
	switch name {
	case "role", "session_authorization", "all":
		// RESET ALL (and DISCARD ALL) reset role as well.
		return FlagIdentityChange
	case "session_replication_role", "log_statement", "log_min_duration_statement",
		"log_duration", "log_min_error_statement", "log_min_messages":
		return FlagSessionEscape
	}
	if strings.HasPrefix(name, "pgaudit.") {
		return FlagSessionEscape
	}
	return 0
}

// trustedLanguages are the procedural languages PostgreSQL (or the usual extensions) run
// in a sandbox. Everything else — plpython3u, plperlu, pltclu, c, internal, plsh, unknown
// names — can reach the server's operating system.
var trustedLanguages = map[string]bool{
	"sql": true, "plpgsql": true, "plperl": true, "pltcl": true, "plv8": true,
	"pljava": true, "java": true, "plrust": true,
}

// untrustedLanguageExtension recognizes the extensions that install an untrusted
// procedural language (plpython3u, plperlu, pltclu, ...).
func untrustedLanguageExtension(name string) bool {
	name = strings.ToLower(name)
	return strings.HasPrefix(name, "pl") && strings.HasSuffix(name, "u") && !trustedLanguages[name]
}

func (w *walker) language(lang string) {
	lang = strings.ToLower(lang)
	w.st.Language = lang
	if !trustedLanguages[lang] {
		w.flag(FlagUntrustedLanguage)
	}
}

func (w *walker) createFunction(x *pg.CreateFunctionStmt) {
	lang := ""
	var body []string
	for _, o := range x.Options {
		d := o.GetDefElem()
		switch d.GetDefname() {
		case "language":
			lang = d.GetArg().GetString_().GetSval()
		case "as":
			for _, it := range d.GetArg().GetList().GetItems() {
				body = append(body, it.GetString_().GetSval())
			}
		}
	}
	if lang == "" {
		// Only a SQL-standard body (BEGIN ATOMIC / RETURN) may omit LANGUAGE: it is SQL.
		lang = "sql"
	}
	w.language(lang)
	switch strings.ToLower(lang) {
	case "sql":
		if len(body) == 1 {
			w.inner(body[0])
		}
	case "plpgsql":
		if len(body) == 1 {
			w.plpgsql(body[0])
		}
	}
}

func (w *walker) doStmt(x *pg.DoStmt) {
	lang, body := "plpgsql", ""
	for _, a := range x.Args {
		d := a.GetDefElem()
		switch d.GetDefname() {
		case "language":
			lang = d.GetArg().GetString_().GetSval()
		case "as":
			body = d.GetArg().GetString_().GetSval()
		}
	}
	w.language(lang)
	if strings.ToLower(lang) == "plpgsql" {
		w.plpgsql(body)
	}
}

// maxInnerDepth bounds recursion into function bodies that contain function definitions.
const maxInnerDepth = 4

// inner classifies SQL text embedded in a statement (a SQL function body, a statement of a
// PL/pgSQL body) and folds its tables, functions and flags into this statement: defining
// code that reads server files is as dangerous as reading them.
func (w *walker) inner(sql string) bool {
	if w.depth >= maxInnerDepth {
		w.flag(FlagDynamicSQL)
		return true
	}
	tree, err := pg.Parse(sql)
	if err != nil {
		return false
	}
	sub := &walker{st: w.st, kind: KindOther, depth: w.depth + 1}
	for _, rs := range tree.Stmts {
		sub.node(rs.Stmt)
	}
	return true
}

// plpgsql reads a PL/pgSQL body with PostgreSQL's own PL/pgSQL parser. EXECUTE of a string
// (and FOR ... IN EXECUTE, OPEN ... FOR EXECUTE) is dynamic SQL; the static statements and
// expressions are classified like any SQL. A body that does not parse is opaque.
func (w *walker) plpgsql(body string) {
	tag := "$vigil$"
	for strings.Contains(body, tag) {
		tag = "$vigil" + tag[1:]
	}
	js, err := pg.ParsePlPgSqlToJSON("CREATE FUNCTION vigil_body() RETURNS void LANGUAGE plpgsql AS " + tag + body + tag)
	if err != nil {
		w.flag(FlagDynamicSQL)
		return
	}
	var tree any
	if err := json.Unmarshal([]byte(js), &tree); err != nil {
		w.flag(FlagDynamicSQL)
		return
	}
	w.plpgsqlNode(tree)
}

func (w *walker) plpgsqlNode(n any) {
	switch v := n.(type) {
	case []any:
		for _, e := range v {
			w.plpgsqlNode(e)
		}
	case map[string]any:
		for k, e := range v {
			switch k {
			case "PLpgSQL_stmt_dynexecute", "PLpgSQL_stmt_dynfors", "dynquery":
				w.flag(FlagDynamicSQL)
			case "query":
				if q, ok := e.(string); ok {
					w.plpgsqlQuery(q)
					continue
				}
			}
			w.plpgsqlNode(e)
		}
	}
}

// plpgsqlQuery classifies one PL/pgSQL query or expression. Expressions are stored without
// their SELECT, assignments as "target := expression".
func (w *walker) plpgsqlQuery(q string) {
	if w.inner(q) || w.inner("SELECT "+q) {
		return
	}
	if i := strings.Index(q, ":="); i >= 0 && w.inner("SELECT "+q[i+2:]) {
		return
	}
}
