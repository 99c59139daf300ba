// Package sqlparse classifies SQL with the servers' own grammars (pg_query_go for
// PostgreSQL): statement kind, tables, columns, functions, fingerprint, and the facts the
// policy needs (effective WHERE, DML hidden in CTEs or EXPLAIN ANALYZE). Text that does not
// parse is reported as such, never guessed at.
package sqlparse
