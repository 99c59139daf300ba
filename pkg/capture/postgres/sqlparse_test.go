package postgres

import "github.com/vigil-db/vigil/pkg/sqlparse"

func sqlparseSplit(text string) []string { return sqlparse.SplitPostgres(text) }
