package sqlparse

import (
	"slices"
	"testing"
)

// FuzzClassify feeds arbitrary text to the classifier. It must never panic, and what it
// says must hang together: parsed or flagged unparseable, a known kind, the message's kind
// the worst of its statements', every table belonging to a statement.
func FuzzClassify(f *testing.F) {
	for _, tc := range corpus {
		f.Add(tc.sql)
	}
	for _, sql := range []string{"DELETE FROM t WHERE id = coalesce($1, id)", "DELETE FROM t WHERE id = $1 OR $2", "DELETE FROM t WHERE name LIKE $1 AND id = coalesce($2, 1)"} {
		f.Add(sql)
	}
	f.Fuzz(func(t *testing.T, sql string) {
		info := classify(ProtocolPostgres, sql)
		if info.Parsed == info.Flags.Has(FlagUnparseable) {
			t.Fatalf("%q: parsed=%v but flags %s", sql, info.Parsed, info.Flags)
		}
		if _, ok := kindRank[info.Kind]; !ok {
			t.Fatalf("%q: unknown kind %q", sql, info.Kind)
		}
		var flags Flag
		for _, st := range info.Statements {
			if _, ok := kindRank[st.Kind]; !ok || worseKind(st.Kind, info.Kind) {
				t.Fatalf("%q: statement kind %q vs message kind %q", sql, st.Kind, info.Kind)
			}
			if st.Command == "" {
				t.Fatalf("%q: statement without a command", sql)
			}
			flags |= st.Flags
		}
		if info.Parsed && flags != info.Flags {
			t.Fatalf("%q: message flags %s, statements' %s", sql, info.Flags, flags)
		}
		for _, tbl := range info.Tables {
			found := false
			for _, st := range info.Statements {
				if slices.Contains(st.Reads, tbl) || slices.Contains(st.Writes, tbl) {
					found = true
				}
			}
			if !found {
				t.Fatalf("%q: table %q in no statement", sql, tbl)
			}
		}
		if info.Flags&secretFlags != 0 && !containsAnyFold(sql, secretFirst) {
			t.Fatalf("%q: flags %s but none of the secret words: RedactSecrets would skip it", sql, info.Flags)
		}
		// The proxy judges a Bind again only when the Parse verdict was no_effective_where
		// and rests on a parameter: whatever is bound must never make it worse.
		if info.Parsed && !info.Flags.Has(FlagNoEffectiveWhere) {
			for _, ps := range [][]Param{{{Null: true}, {Null: true}}, {{Known: true, Text: "%"}, {Known: true, Text: "true"}}, {{}, {}}} {
				if ClassifyBound(sql, ps).Flags.Has(FlagNoEffectiveWhere) {
					t.Fatalf("%q: no effective WHERE once bound to %+v, but not at Parse", sql, ps)
				}
			}
		}
		_ = NormalizePostgres(sql)
	})
}
