package sqlparse

import "strings"

// secretFlags mark statements that may carry credentials as literals: CREATE/ALTER ROLE …
// PASSWORD, user mappings and subscriptions with a password in their options or conninfo,
// dblink_connect('… password=…').
const secretFlags = FlagRoleChange | FlagRemoteAccess

// secretWords: every statement Classify flags with secretFlags, and every unparseable text
// RedactSecrets redacts, contains one of these (ASCII case-insensitively). The flags come
// from statement keywords, which PostgreSQL never reads inside quotes or escapes — ROLE,
// USER, GROUP (CREATE/ALTER/DROP/rename), GRANT and REVOKE (role membership), OWNED
// (REASSIGN/DROP OWNED), SERVER, MAPPING, FOREIGN, SUBSCRIPTION, WRAPPER — and from dblink
// function names, which can only hide their letters in a U& identifier. Texts without any of
// them skip the classification: the trail redacts every event, and a second parse per
// statement was an eighth of the agent's CPU under pgbench.
var secretWords = []string{
	"password", "role", "user", "group", "grant", "revoke", "owned", "server", "mapping",
	"foreign", "subscription", "wrapper", "dblink", "u&",
}

// secretFirst lists the secret words by first byte, in both cases.
var secretFirst = wordsByFirstByte(secretWords)

func wordsByFirstByte(words []string) *[256][]string {
	var t [256][]string
	for _, w := range words {
		t[w[0]] = append(t[w[0]], w)
		t[w[0]-'a'+'A'] = append(t[w[0]-'a'+'A'], w)
	}
	return &t
}

// RedactSecrets returns sql with every constant replaced by a placeholder when the statement
// may carry a credential, and sql itself otherwise, so that passwords never reach the audit
// trail while ordinary statements keep their text. Text that does not parse but mentions a
// password is redacted too: what cannot be read cannot be shown to be harmless.
func RedactSecrets(sql string) string {
	if !containsAnyFold(sql, secretFirst) {
		return sql
	}
	info := Classify("postgres", sql)
	if info.Flags&secretFlags != 0 || (!info.Parsed && strings.Contains(strings.ToLower(sql), "password")) {
		return replaceConstants(sql)
	}
	return sql
}

// MayCarryCredentials reports whether the classified text may hold a credential that
// RedactSecrets would remove. When it is false, RedactSecrets returns the text unchanged, so
// a caller holding the text's classification can tell the audit trail to skip that work.
func (i *Info) MayCarryCredentials() bool {
	return !i.Parsed || i.Flags&secretFlags != 0
}

// containsAnyFold reports whether s contains one of the words (lower-case ASCII, listed by
// first byte), ignoring ASCII case, without allocating a lower-cased copy of s.
func containsAnyFold(s string, byFirst *[256][]string) bool {
	for i := 0; i < len(s); i++ {
		for _, w := range byFirst[s[i]] {
			if len(s)-i >= len(w) && hasPrefixFold(s[i:], w) {
				return true
			}
		}
	}
	return false
}

// hasPrefixFold: s starts with w (lower-case ASCII letters and '&'), ignoring ASCII case.
func hasPrefixFold(s, w string) bool {
	for j := 0; j < len(w); j++ {
		c := s[j]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != w[j] {
			return false
		}
	}
	return true
}
