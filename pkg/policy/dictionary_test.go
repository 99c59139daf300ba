package policy

import (
	"strings"
	"testing"

	"github.com/vigil-db/vigil/pkg/mask"
)

func TestDictionary(t *testing.T) {
	tests := []struct {
		column   string
		category string // "" : not PII
	}{
		{"email", "email"},
		{"Email", "email"},
		{"email_address", "email"},
		{"contact_email", "email"},
		{"emailAddress", "email"},
		{"phone", "phone"},
		{"home_phone", "phone"},
		{"phoneNumber", "phone"},
		{"mobile", "phone"},
		{"msisdn", "phone"},
		{"ssn", "ssn"},
		{"national_id", "ssn"},
		{"NIN", "ssn"},
		{"card_number", "card"},
		{"pan", "card"},
		{"cc", "card"},
		{"creditCardNumber", "card"},
		{"iban", "iban"},
		{"account_number", "iban"},
		{"dob", "dob"},
		{"birth_date", "dob"},
		{"date_of_birth", "dob"},
		{"DateOfBirth", "dob"},
		{"address", "address"},
		{"billing_address_line1", "address"},
		{"street", "address"},
		{"postcode", "address"},
		{"zip", "address"},
		{"zip_code", "address"},
		{"passport_number", "passport"},
		{"tax_id", "tax_id"},
		{"password", "secret"},
		{"password_hash", "secret"},
		{"api_key", "secret"},
		{"APIKey", "secret"},
		{"refresh_token", "secret"},
		{"client_secret", "secret"},
		// Columns about the value, not the value.
		{"address_id", ""},
		{"email_verified", ""},
		{"email_sent_at", ""},
		{"is_email", ""},
		{"has_phone", ""},
		{"phone_count", ""},
		{"num_cards", ""},
		{"card_type", ""},
		{"card_brand", ""},
		{"token_expires_at", ""},
		{"password_changed_at", ""},
		{"ip_address", ""},
		{"mac_address", ""},
		// Words, not substrings.
		{"cardinality", ""},
		{"passwordless", ""},
		{"tokenizer", ""},
		{"addressee_count", ""},
		{"description", ""},
		{"note", ""},
		{"id", ""},
		{"panel", ""},
		{"zipper", ""},
		{"", ""},
	}
	e, err := NewEngine(Default())
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range tests {
		t.Run(tc.column, func(t *testing.T) {
			s, ok := e.ColumnSensitivity("public", "t", tc.column)
			if tc.category == "" {
				if ok {
					t.Fatalf("%q matched %+v, want no match", tc.column, s)
				}
				return
			}
			if !ok || s.Source != SourceName || s.Category != tc.category {
				t.Fatalf("%q: got %+v (%v), want category %s", tc.column, s, ok, tc.category)
			}
		})
	}
}

func TestDictionaryConfig(t *testing.T) {
	tests := []struct {
		name, yaml, column string
		want               string // source, or "" for no match
		strategy           string
	}{
		{"default on", "", "phone", SourceName, "full"},
		{"off", "dictionary: {enabled: false}", "phone", "", ""},
		{"off, policy columns replace it", "dictionary: {enabled: false}\n  columns: [{columns: [msisdn_raw]}]", "msisdn_raw", SourcePolicy, "full"},
		{"category disabled", "dictionary: {disable: [address]}", "street", "", ""},
		{"other category still on", "dictionary: {disable: [address]}", "email", SourceName, "full"},
		{"except", "dictionary: {except: [\"zip*\"]}", "zip_code", "", ""},
		{"category strategy", "dictionary: {strategies: {card: {kind: partial, keep_last: 4}}}", "card_number", SourceName, "partial:4"},
		{"policy column first", "columns: [{columns: [email], strategy: {kind: token}}]", "email", SourcePolicy, "token"},
		{"extended", "columns: [{tables: [orders], columns: [\"*_ref\"]}]", "customer_ref", SourcePolicy, "full"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, err := Parse([]byte("version: 1\nsensitive:\n  "+tc.yaml+"\n"), "test")
			if err != nil {
				t.Fatal(err)
			}
			e, err := NewEngine(p, WithTokenKey([]byte("k")))
			if err != nil {
				t.Fatal(err)
			}
			s, ok := e.ColumnSensitivity("public", "orders", tc.column)
			if tc.want == "" {
				if ok {
					t.Fatalf("matched %+v", s)
				}
				return
			}
			if !ok || s.Source != tc.want || s.Strategy.String() != tc.strategy {
				t.Fatalf("got %+v (%v), want %s %s", s, ok, tc.want, tc.strategy)
			}
		})
	}
}

func TestDictionaryValidation(t *testing.T) {
	for _, tc := range []struct{ yaml, want string }{
		{"dictionary: {disable: [phones]}", `unknown category "phones"`},
		{"dictionary: {strategies: {card: {kind: partial}}}", "keep_last"},
		{"discovery: {min_share: 2}", "between 0 and 1"},
		{"discovery: {sample_rows: 100000}", "between 1 and 10000"},
	} {
		_, err := Parse([]byte("version: 1\nsensitive:\n  "+tc.yaml+"\n"), "test")
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want %q", tc.yaml, err, tc.want)
		}
	}
	if got := Default().Sensitive.Discovery.withDefaults(); got.SampleRows != DefaultSampleRows || !*got.Enabled {
		t.Errorf("discovery defaults: %+v", got)
	}
	e, _ := NewEngine(Default())
	if s := e.CategoryStrategy(mask.DetectGitHubToken); s.Kind != mask.Full {
		t.Errorf("detector strategy: %v", s)
	}
}
