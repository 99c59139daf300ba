package sqlparse

import "strings"

// secretFlags mark statements that may carry credentials as literals: CREATE/ALTER ROLE …
// PASSWORD, user mappings and subscriptions with a password in their options or conninfo,
// dblink_connect('… password=…').
const secretFlags = FlagRoleChange | FlagRemoteAccess

// RedactSecrets returns sql with every literal replaced by a placeholder when the statement
// may carry a credential, and sql itself otherwise, so that passwords never reach the audit
// trail while ordinary statements keep their text. Text that does not parse but mentions a
// password is redacted too: what cannot be read cannot be shown to be harmless.
func RedactSecrets(sql string) string {
	info := Classify("postgres", sql)
	if info.Flags&secretFlags != 0 || (!info.Parsed && strings.Contains(strings.ToLower(sql), "password")) {
		return NormalizePostgres(sql)
	}
	return sql
}
