package sqlparse

import (
	"encoding/json"
	"strings"
)

// Protocols Classify understands (the same names as event.ProtocolPostgres / ProtocolMySQL;
// repeated here so this package stays a leaf).
const (
	ProtocolPostgres = "postgres"
	ProtocolMySQL    = "mysql"
)

// Statement kinds, as listed in docs/events.md. Kind says what a statement really does: a SELECT
// that wraps a DELETE in a CTE is a DELETE, EXPLAIN ANALYZE UPDATE is an UPDATE.
const (
	KindSelect   = "SELECT"
	KindInsert   = "INSERT"
	KindUpdate   = "UPDATE"
	KindDelete   = "DELETE"
	KindMerge    = "MERGE"
	KindDDL      = "DDL"
	KindDCL      = "DCL"
	KindTruncate = "TRUNCATE"
	KindCopy     = "COPY"
	KindTxn      = "TXN"
	KindSet      = "SET"
	KindOther    = "OTHER"
)

// kindRank orders kinds by consequence, so that a multi-statement text reports its worst
// statement: schema and privilege changes first, then data destruction, then writes.
var kindRank = map[string]int{
	KindOther: 1, KindTxn: 0, KindSelect: 2, KindSet: 3, KindCopy: 4, KindInsert: 5,
	KindMerge: 6, KindUpdate: 7, KindDelete: 8, KindTruncate: 9, KindDCL: 10, KindDDL: 11,
}

// worseKind reports whether kind a is more consequential than b.
func worseKind(a, b string) bool { return kindRank[a] > kindRank[b] }

// Flag is a fact about a statement that a policy may act on. Flags are facts about what the
// server would do, not judgements: the policy decides what they are worth.
type Flag uint32

// The flags. Their names (String) are what policy files use.
const (
	// FlagUnparseable: the text did not parse (or the protocol has no classifier yet).
	FlagUnparseable Flag = 1 << iota
	// FlagUnsupportedProtocol: no classifier for this protocol; nothing else is known.
	FlagUnsupportedProtocol
	// FlagNoEffectiveWhere: an UPDATE, DELETE or MERGE that touches every row (no WHERE, a
	// tautology, or a predicate that does not depend on the row).
	FlagNoEffectiveWhere
	// FlagServerFileAccess: reads or writes files on the database server (COPY to/from a
	// server file, pg_read_file and friends, lo_import/lo_export, LOAD).
	FlagServerFileAccess
	// FlagServerProgram: runs a program on the database server (COPY ... PROGRAM).
	FlagServerProgram
	// FlagRemoteAccess: opens connections from the server to elsewhere (dblink, foreign
	// servers, subscriptions).
	FlagRemoteAccess
	// FlagBackendControl: signals or controls server processes (pg_terminate_backend,
	// pg_cancel_backend, pg_reload_conf, ...).
	FlagBackendControl
	// FlagServerConfig: changes the server's configuration (ALTER SYSTEM).
	FlagServerConfig
	// FlagIdentityChange: changes who the session acts as (SET/RESET ROLE, SET SESSION
	// AUTHORIZATION, set_config('role', ...), RESET ALL, DISCARD ALL).
	FlagIdentityChange
	// FlagSessionEscape: turns off triggers, rules, row-level security, auditing or
	// statement logging (session_replication_role, pgaudit.*, log_statement, ALTER TABLE
	// … DISABLE TRIGGER / DISABLE ROW LEVEL SECURITY ...).
	FlagSessionEscape
	// FlagDynamicSQL: runs SQL that the parser cannot see (DO blocks, EXECUTE of strings in
	// functions, functions that run query strings such as query_to_xml).
	FlagDynamicSQL
	// FlagUnknownBody: EXECUTE of a prepared statement whose body this text does not show.
	FlagUnknownBody
	// FlagUntrustedLanguage: defines code in an untrusted language (plpython3u, plperlu, C).
	FlagUntrustedLanguage
	// FlagExtension: CREATE/ALTER EXTENSION.
	FlagExtension
	// FlagCodeDefinition: defines server-side code that runs later (functions, procedures,
	// triggers, rules, operators, aggregates, casts, languages).
	FlagCodeDefinition
	// FlagPrivilegeChange: GRANT, REVOKE, ALTER DEFAULT PRIVILEGES.
	FlagPrivilegeChange
	// FlagRoleChange: CREATE/ALTER/DROP ROLE (USER, GROUP), role membership, REASSIGN OWNED.
	FlagRoleChange
	// FlagDropColumn: ALTER TABLE ... DROP COLUMN.
	FlagDropColumn
	// FlagAlterColumnType: ALTER TABLE ... ALTER COLUMN ... TYPE.
	FlagAlterColumnType
	// FlagDrop: DROP of any object (including DROP OWNED, DROP DATABASE).
	FlagDrop

	flagEnd
)

var flagNames = map[Flag]string{
	FlagUnparseable:         "unparseable",
	FlagUnsupportedProtocol: "unsupported_protocol",
	FlagNoEffectiveWhere:    "no_effective_where",
	FlagServerFileAccess:    "server_file_access",
	FlagServerProgram:       "server_program",
	FlagRemoteAccess:        "remote_access",
	FlagBackendControl:      "backend_control",
	FlagServerConfig:        "server_config",
	FlagIdentityChange:      "identity_change",
	FlagSessionEscape:       "session_escape",
	FlagDynamicSQL:          "dynamic_sql",
	FlagUnknownBody:         "unknown_body",
	FlagUntrustedLanguage:   "untrusted_language",
	FlagExtension:           "extension",
	FlagCodeDefinition:      "code_definition",
	FlagPrivilegeChange:     "privilege_change",
	FlagRoleChange:          "role_change",
	FlagDropColumn:          "drop_column",
	FlagAlterColumnType:     "alter_column_type",
	FlagDrop:                "drop",
}

// String is the flag's policy-file name; for a set of flags, the names joined by ",".
func (f Flag) String() string { return strings.Join(f.Names(), ",") }

// Has reports whether all flags in g are set in f.
func (f Flag) Has(g Flag) bool { return f&g == g }

// Any reports whether any flag in g is set in f.
func (f Flag) Any(g Flag) bool { return f&g != 0 }

// Names lists the set flags by name, in declaration order.
func (f Flag) Names() []string {
	var out []string
	for b := Flag(1); b < flagEnd; b <<= 1 {
		if f&b != 0 {
			out = append(out, flagNames[b])
		}
	}
	return out
}

// MarshalJSON encodes the flags as a list of names.
func (f Flag) MarshalJSON() ([]byte, error) {
	n := f.Names()
	if n == nil {
		n = []string{}
	}
	return json.Marshal(n)
}

// ParseFlag returns the flag with the given policy-file name.
func ParseFlag(name string) (Flag, bool) {
	for f, n := range flagNames {
		if n == name {
			return f, true
		}
	}
	return 0, false
}

// FlagNames lists every flag name, for error messages and documentation.
func FlagNames() []string { return (flagEnd - 1).Names() }

// Info is what Classify learned about a statement text. An Info returned by Classify may be
// shared with other callers through the cache: treat it as read-only.
type Info struct {
	Protocol string `json:"protocol"`
	// Parsed is false when the text did not parse or the protocol has no classifier;
	// ParseError then says why, Kind is OTHER and Flags has FlagUnparseable.
	Parsed     bool   `json:"parsed"`
	ParseError string `json:"parse_error,omitempty"`
	// Fingerprint is pg_query's fingerprint (hex) of the whole text: the same for
	// statements that differ only in literals, comments and whitespace.
	Fingerprint string `json:"fingerprint,omitempty"`
	// Kind is the most consequential kind among the statements.
	Kind string `json:"kind"`
	// Tables are all tables read or written by any statement, deduplicated, in order of
	// first appearance.
	Tables []string `json:"tables,omitempty"`
	// Flags is the union of the statements' flags.
	Flags      Flag   `json:"flags"`
	Statements []Stmt `json:"statements,omitempty"`
}

// BindDependent reports whether some statement's no_effective_where verdict depends on the
// values bound to its parameters: ClassifyBound judges it again with them.
func (i *Info) BindDependent() bool {
	for k := range i.Statements {
		if i.Statements[k].BindDependent {
			return true
		}
	}
	return false
}

// Stmt is one statement of a text.
type Stmt struct {
	// Text is this statement's slice of the original text.
	Text string `json:"text"`
	Kind string `json:"kind"`
	// Command is a finer tag in PostgreSQL's style: "DROP TABLE", "ALTER TABLE",
	// "CREATE FUNCTION", "EXPLAIN ANALYZE", "PREPARE", "SELECT INTO", ...
	Command string `json:"command"`
	// Reads and Writes are table names as the server resolves them: unquoted identifiers
	// folded to lower case, quoted ones kept, "schema.table" when qualified.
	Reads  []string `json:"reads,omitempty"`
	Writes []string `json:"writes,omitempty"`
	// Columns are column references as written ("email", "u.email", "*"), plus the
	// columns an INSERT or UPDATE assigns.
	Columns []string `json:"columns,omitempty"`
	// Functions are the functions called or named, lower case, schema-qualified when the
	// text qualifies them ("pg_catalog.pg_read_file").
	Functions []string `json:"functions,omitempty"`
	Flags     Flag     `json:"flags"`
	// NoEffectiveWhere repeats FlagNoEffectiveWhere for readability.
	NoEffectiveWhere bool `json:"no_effective_where,omitempty"`
	// BindDependent: NoEffectiveWhere rests on a parameter that may be NULL or match
	// everything (id = coalesce($1, id), name LIKE $1): judged again with the values bound
	// (ClassifyBound), the statement may restrict its target after all.
	BindDependent bool `json:"bind_dependent,omitempty"`
	// Variables are the run-time settings a SET, RESET, set_config() or SET clause of a
	// function/role changes, lower case ("role", "session_authorization", "all").
	Variables []string `json:"variables,omitempty"`
	// Encoding is the client_encoding a SET, SET NAMES or set_config() asks for, as written;
	// "default" for RESET and SET … TO DEFAULT; empty when the value is not a literal. The
	// proxy must know it before the server switches: the encoding decides how the server
	// reads every later statement.
	Encoding string `json:"encoding,omitempty"`
	// Language is the language of a CREATE FUNCTION/PROCEDURE or DO block.
	Language string `json:"language,omitempty"`
	// Copy describes a COPY statement.
	Copy *Copy `json:"copy,omitempty"`
	// Prepared is the name a PREPARE defines or an EXECUTE runs.
	Prepared string `json:"prepared,omitempty"`

	// start and end delimit the statement in the text (before trimming): the template cache
	// maps them onto a text with other literals.
	start, end int
	// readsLiteral: the classification looked at a literal's value (a tautology check, a
	// set_config name, a flagged function's call), so it holds only for these literals.
	readsLiteral bool
}

// Copy is what a COPY statement moves and where.
type Copy struct {
	// Direction is "from" (into the table) or "to" (out of it).
	Direction string `json:"direction"`
	// Endpoint is "stdin", "stdout", "file" (a file on the server) or "program" (a command
	// run on the server).
	Endpoint string `json:"endpoint"`
	// Target is the file name or command for "file" and "program".
	Target string `json:"target,omitempty"`
}
