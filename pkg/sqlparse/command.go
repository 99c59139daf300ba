package sqlparse

import (
	"strings"

	pg "github.com/pganalyze/pg_query_go/v6"
)

// command names a top-level statement in PostgreSQL's command-tag style.
func command(n *pg.Node) string {
	switch x := n.Node.(type) {
	case *pg.Node_SelectStmt:
		if x.SelectStmt.IntoClause != nil {
			return "SELECT INTO"
		}
		return "SELECT"
	case *pg.Node_InsertStmt:
		return "INSERT"
	case *pg.Node_UpdateStmt:
		return "UPDATE"
	case *pg.Node_DeleteStmt:
		return "DELETE"
	case *pg.Node_MergeStmt:
		return "MERGE"
	case *pg.Node_ExplainStmt:
		if explainAnalyze(x.ExplainStmt.Options) {
			return "EXPLAIN ANALYZE"
		}
		return "EXPLAIN"
	case *pg.Node_CopyStmt:
		return "COPY"
	case *pg.Node_TruncateStmt:
		return "TRUNCATE"
	case *pg.Node_VariableSetStmt:
		if x.VariableSetStmt.Kind == pg.VariableSetKind_VAR_RESET || x.VariableSetStmt.Kind == pg.VariableSetKind_VAR_RESET_ALL {
			return "RESET"
		}
		return "SET"
	case *pg.Node_VariableShowStmt:
		return "SHOW"
	case *pg.Node_TransactionStmt:
		return strings.TrimPrefix(strings.ReplaceAll(x.TransactionStmt.Kind.String(), "_", " "), "TRANS STMT ")
	case *pg.Node_DropStmt:
		return "DROP " + objectName(x.DropStmt.RemoveType)
	case *pg.Node_AlterTableStmt:
		return "ALTER " + objectName(x.AlterTableStmt.Objtype)
	case *pg.Node_CreateFunctionStmt:
		if x.CreateFunctionStmt.IsProcedure {
			return "CREATE PROCEDURE"
		}
		return "CREATE FUNCTION"
	case *pg.Node_CreateTableAsStmt:
		if x.CreateTableAsStmt.IsSelectInto {
			return "SELECT INTO"
		}
		if x.CreateTableAsStmt.Objtype == pg.ObjectType_OBJECT_MATVIEW {
			return "CREATE MATERIALIZED VIEW"
		}
		return "CREATE TABLE AS"
	case *pg.Node_GrantStmt:
		if x.GrantStmt.IsGrant {
			return "GRANT"
		}
		return "REVOKE"
	case *pg.Node_GrantRoleStmt:
		if x.GrantRoleStmt.IsGrant {
			return "GRANT ROLE"
		}
		return "REVOKE ROLE"
	case *pg.Node_VacuumStmt:
		if x.VacuumStmt.IsVacuumcmd {
			return "VACUUM"
		}
		return "ANALYZE"
	case *pg.Node_DefineStmt:
		return "CREATE " + objectName(x.DefineStmt.Kind)
	case *pg.Node_RenameStmt:
		return "ALTER " + objectName(x.RenameStmt.RenameType)
	}
	return fallbackCommand(string(n.ProtoReflect().WhichOneof(n.ProtoReflect().Descriptor().Oneofs().Get(0)).Message().Name()))
}

// commandNames covers the statements whose message name does not spell their command.
var commandNames = map[string]string{
	"CreateStmt": "CREATE TABLE", "ViewStmt": "CREATE VIEW", "IndexStmt": "CREATE INDEX",
	"CreateTrigStmt": "CREATE TRIGGER", "RuleStmt": "CREATE RULE", "CreatePlangStmt": "CREATE LANGUAGE",
	"CreatedbStmt": "CREATE DATABASE", "DropdbStmt": "DROP DATABASE", "CreateSeqStmt": "CREATE SEQUENCE",
	"AlterSeqStmt": "ALTER SEQUENCE", "CreateEventTrigStmt": "CREATE EVENT TRIGGER",
	"CreateForeignServerStmt": "CREATE SERVER", "CreateFdwStmt": "CREATE FOREIGN DATA WRAPPER",
	"DoStmt": "DO", "CallStmt": "CALL", "PrepareStmt": "PREPARE", "ExecuteStmt": "EXECUTE",
	"DeallocateStmt": "DEALLOCATE", "LockStmt": "LOCK", "DeclareCursorStmt": "DECLARE CURSOR",
	"FetchStmt": "FETCH", "ClosePortalStmt": "CLOSE", "ListenStmt": "LISTEN", "NotifyStmt": "NOTIFY",
	"UnlistenStmt": "UNLISTEN", "CheckPointStmt": "CHECKPOINT", "DiscardStmt": "DISCARD",
	"LoadStmt": "LOAD", "ConstraintsSetStmt": "SET CONSTRAINTS", "RefreshMatViewStmt": "REFRESH MATERIALIZED VIEW",
	"ReindexStmt": "REINDEX", "ClusterStmt": "CLUSTER", "CommentStmt": "COMMENT", "SecLabelStmt": "SECURITY LABEL",
	"AlterSystemStmt": "ALTER SYSTEM", "DropOwnedStmt": "DROP OWNED", "ReassignOwnedStmt": "REASSIGN OWNED",
	"AlterRoleSetStmt": "ALTER ROLE", "AlterDatabaseSetStmt": "ALTER DATABASE", "AlterOwnerStmt": "ALTER OWNER",
	"AlterObjectSchemaStmt": "ALTER SET SCHEMA", "CreateUserMappingStmt": "CREATE USER MAPPING",
	"AlterDefaultPrivilegesStmt": "ALTER DEFAULT PRIVILEGES", "CompositeTypeStmt": "CREATE TYPE",
	"CreateEnumStmt": "CREATE TYPE", "CreateRangeStmt": "CREATE TYPE", "CreateOpClassStmt": "CREATE OPERATOR CLASS",
	"CreateCastStmt": "CREATE CAST", "ImportForeignSchemaStmt": "IMPORT FOREIGN SCHEMA",
}

// fallbackCommand turns a message name such as "CreateExtensionStmt" into "CREATE EXTENSION".
func fallbackCommand(msg string) string {
	if c, ok := commandNames[msg]; ok {
		return c
	}
	msg = strings.TrimSuffix(msg, "Stmt")
	var b strings.Builder
	for i, r := range msg {
		if i > 0 && r >= 'A' && r <= 'Z' {
			b.WriteByte(' ')
		}
		b.WriteRune(r)
	}
	return strings.ToUpper(b.String())
}

func objectName(t pg.ObjectType) string {
	return strings.ReplaceAll(strings.TrimPrefix(t.String(), "OBJECT_"), "_", " ")
}
