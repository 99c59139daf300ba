package enforce

import (
	"reflect"
	"strings"
	"testing"

	"github.com/vigil-db/vigil/pkg/mask"
)

func TestStartupSettings(t *testing.T) {
	for _, tc := range []struct {
		params map[string]string
		want   [][2]string
		err    bool
	}{
		{map[string]string{"user": "u", "database": "d", "application_name": "a"}, nil, false},
		{map[string]string{"user": "u", "options": "-c role=admin"}, [][2]string{{"role", "admin"}}, false},
		{map[string]string{"options": "-csearch_path=a\\ b --statement-timeout=5"}, [][2]string{{"search_path", "a b"}, {"statement_timeout", "5"}}, false},
		{map[string]string{"options": "-c"}, nil, true},
		{map[string]string{"options": "-d 5"}, nil, true},
		{map[string]string{"options": "-c x\\"}, nil, true},
		{map[string]string{"options": "-c novalue"}, nil, true},
		{map[string]string{"session_replication_role": "replica"}, [][2]string{{"session_replication_role", "replica"}}, false},
		{map[string]string{"_pq_.x": "1"}, nil, false},
	} {
		got, err := startupSettings(tc.params)
		if (err != nil) != tc.err || (!tc.err && !reflect.DeepEqual(got, tc.want)) {
			t.Errorf("%v: got %v, %v; want %v (err %v)", tc.params, got, err, tc.want, tc.err)
		}
	}
}

func TestUnsafeClientEncoding(t *testing.T) {
	for v, want := range map[string]bool{"UTF8": false, "SJIS": true, "Shift_JIS": true, "gbk": true, "LATIN1": false, "big-5": true, "EUC_JP": false} {
		if got := isUnsafeClientEncoding("client_encoding", v); got != want {
			t.Errorf("%s: %v", v, got)
		}
	}
}

func TestQuoting(t *testing.T) {
	for in, want := range map[string]string{`a`: `'a'`, `it's`: `'it''s'`, `a\b`: `E'a\\b'`} {
		if got := quoteLiteral(in); got != want {
			t.Errorf("quoteLiteral(%q) = %s", in, got)
		}
	}
	if got := quoteIdent(`we"ird`); got != `"we""ird"` {
		t.Errorf("quoteIdent: %s", got)
	}
}

func TestMaskEmbedded(t *testing.T) {
	m, err := mask.New(mask.Config{Key: []byte("k")})
	if err != nil {
		t.Fatal(err)
	}
	full := mask.Strategy{Kind: mask.Full}
	for in, want := range map[string]string{
		"alice@example.com":                 "****",
		"mail <alice@example.com>, thanks":  "mail <****>, thanks",
		"card 4111 1111 1111 1111 ok":       "card **** ok",
		"nothing here":                      "",
		"\x00\x00\x00\x11alice@example.com": "\x00\x00\x00\x11****",
	} {
		out, ok := maskEmbedded(m, full, []byte(in))
		if got := string(out); (want == "") == ok || (ok && got != want) {
			t.Errorf("%q: %q %v", in, got, ok)
		}
	}
}

func TestRedactText(t *testing.T) {
	m, _ := mask.New(mask.Config{Key: []byte("k")})
	for _, tc := range []struct {
		code  string
		field byte
		in    string
		want  string
	}{
		{"22P02", 'M', `invalid input syntax for type integer: "Alice"`, `invalid input syntax for type integer: "****"`},
		{"23505", 'M', `duplicate key value violates unique constraint "customers_email_key"`, `duplicate key value violates unique constraint "****"`},
		{"23505", 'D', `Key (email)=(x@y.org) already exists.`, redactedField},
		{"22P02", 'W', `JSON data, line 1: Alice...`, redactedField},
		{"42P01", 'M', `relation "nope" does not exist`, `relation "nope" does not exist`},
		{"42P01", 'M', `relation "Nope" does not exist`, `relation "Nope" does not exist`},
		{"42P01", 'M', `relation "liddell" does not exist`, `relation "****" does not exist`},
		{"42601", 'W', `invalid type name "Alice Liddell"`, `invalid type name "****"`},
		{"42P01", 'M', `mail bob@example.org here`, `mail **** here`},
		{"42P01", 'D', `Key (email)=(x)`, `Key (****)`},
		{"42P01", 'M', `unterminated "quote`, `unterminated "****`},
	} {
		if got := redactText(m, tc.code, tc.field, tc.in, "SELECT * FROM nope JOIN x ON true"); got != tc.want {
			t.Errorf("%s %c %q: %q", tc.code, tc.field, tc.in, got)
		}
	}
}

func TestCopySplit(t *testing.T) {
	for _, tc := range []struct {
		format copyFormat
		delim  byte
		row    string
		want   []string
	}{
		{copyText, '\t', "1\ta\\tb\tc", []string{"1", "a\\tb", "c"}},
		{copyCSV, ',', `1,"a,b",c`, []string{"1", `"a,b"`, "c"}},
		{copyCSV, ',', `"x""y",`, []string{`"x""y"`, ""}},
	} {
		cp := &copyPlan{format: tc.format, delim: tc.delim, quote: '"', escape: '"'}
		var got []string
		for _, f := range cp.split([]byte(tc.row)) {
			got = append(got, tc.row[f.start:f.end])
		}
		if strings.Join(got, "|") != strings.Join(tc.want, "|") {
			t.Errorf("%q: %q", tc.row, got)
		}
	}
}
