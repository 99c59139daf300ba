package policy

import (
	"sort"
	"strings"
	"time"
	"unicode"

	"github.com/vigil-db/vigil/pkg/mask"
)

// The name dictionary: column names that hold PII whatever their type (a phone stored as
// bigint, an SSN as int). A name is cut into lower-case words (at _, -, spaces, digits and
// camelCase boundaries) and matches a category when one of the category's word sequences
// occurs in it, unless the words around the match say the column describes the value
// rather than holds it: `address_id`, `email_verified`, `phone_count`, `token_expires_at`,
// `is_email`, `num_cards` are not PII; `home_phone`, `phoneNumber`, `card_number`,
// `billing_address_line1` are. Words, not substrings: `cardinality`, `passwordless`,
// `tokenizer` match nothing.

// Sources say why a column is sensitive.
const (
	SourcePolicy     = "policy"     // the policy's sensitive.columns
	SourceName       = "name"       // the name dictionary
	SourceComment    = "comment"    // a tag in the column's COMMENT
	SourceLabel      = "label"      // a SECURITY LABEL on the column
	SourceDiscovered = "discovered" // sampled values matched a detector
)

// Sensitivity says that a column is PII, why, and how it is masked.
type Sensitivity struct {
	Source string `json:"source"`
	// Category is the dictionary category or detector that matched ("" for policy columns
	// and catalog tags).
	Category string        `json:"category,omitempty"`
	Strategy mask.Strategy `json:"strategy"`
	// Detail explains the match: the dictionary words, the tag, the share of values.
	Detail string `json:"detail,omitempty"`
}

// Dictionary configures the shipped name dictionary (sensitive.dictionary).
type Dictionary struct {
	// Enabled turns the dictionary on (default true). false with sensitive.columns replaces
	// it with the policy's own list.
	Enabled *bool `yaml:"enabled"`
	// Disable turns single categories off (DictionaryCategories).
	Disable []string `yaml:"disable"`
	// Except are column names or globs the dictionary never matches (a false positive).
	Except []string `yaml:"except"`
	// Strategies mask a category's columns (and the values discovery finds for it)
	// otherwise than sensitive.strategy.
	Strategies map[string]mask.Strategy `yaml:"strategies"`
}

// Discovery configures sampling of table values to find PII columns that neither their
// name nor the catalog give away (sensitive.discovery).
type Discovery struct {
	// Enabled runs discovery in the proxy, per database, on the catalog connection (default
	// true). `vigil pii scan` runs regardless.
	Enabled *bool `yaml:"enabled"`
	// Interval between runs per database (default 1h); the findings are kept until the
	// next run.
	Interval time.Duration `yaml:"interval"`
	// SampleRows per table (default 100).
	SampleRows int `yaml:"sample_rows"`
	// MaxTables per run (default 200): the largest tables by pg_class.reltuples first.
	MaxTables int `yaml:"max_tables"`
	// Timeout bounds one run (default 30s) and each table's sample (a tenth of it).
	Timeout time.Duration `yaml:"timeout"`
	// MinShare of a column's sampled non-NULL values that one detector must recognize
	// (default 0.5), out of at least MinValues values (default 3).
	MinShare  float64 `yaml:"min_share"`
	MinValues int     `yaml:"min_values"`
}

// Discovery defaults.
const (
	DefaultDiscoveryInterval = time.Hour
	DefaultSampleRows        = 100
	DefaultMaxTables         = 200
	DefaultDiscoveryTimeout  = 30 * time.Second
	DefaultMinShare          = 0.5
	DefaultMinValues         = 3
)

// withDefaults fills the zero fields.
func (d Discovery) withDefaults() Discovery {
	if d.Enabled == nil {
		t := true
		d.Enabled = &t
	}
	if d.Interval <= 0 {
		d.Interval = DefaultDiscoveryInterval
	}
	if d.SampleRows <= 0 {
		d.SampleRows = DefaultSampleRows
	}
	if d.MaxTables <= 0 {
		d.MaxTables = DefaultMaxTables
	}
	if d.Timeout <= 0 {
		d.Timeout = DefaultDiscoveryTimeout
	}
	if d.MinShare <= 0 {
		d.MinShare = DefaultMinShare
	}
	if d.MinValues <= 0 {
		d.MinValues = DefaultMinValues
	}
	return d
}

// dictionary lists, per category, the word sequences that make a column name PII.
// Compounds written as one word ("phonenumber") are listed as such.
var dictionary = map[string][]string{
	"email":    {"email", "emails", "e mail", "emailaddress", "mail address"},
	"phone":    {"phone", "phones", "mobile", "msisdn", "telephone", "tel", "fax", "phonenumber", "cellphone", "mobilenumber"},
	"ssn":      {"ssn", "national id", "nationalid", "nin", "nino", "social security", "insurance number", "personal number", "personnummer"},
	"card":     {"card", "cards", "pan", "cc", "cc number", "ccnum", "cardnumber", "creditcard", "credit card", "debit card", "cvv", "cvc", "cvv2"},
	"iban":     {"iban", "account number", "accountnumber", "acct number", "acct no", "account no", "bank account", "routing number", "sort code", "bic", "swift"},
	"dob":      {"dob", "birth date", "birthdate", "date of birth", "dateofbirth", "birthday", "birth day"},
	"address":  {"address", "addr", "street", "postcode", "post code", "zip", "zipcode", "zip code", "postal code", "postalcode", "house number"},
	"passport": {"passport", "passport number", "passportnumber", "passport no"},
	"tax_id":   {"tax id", "taxid", "tin", "itin", "ein", "vat number", "vat id", "tax number"},
	"secret": {"token", "tokens", "secret", "secrets", "password", "passwd", "pwd", "passphrase", "api key", "apikey",
		"access key", "private key", "secret key", "client secret", "refresh token", "access token", "auth token",
		"session token", "accesstoken", "refreshtoken", "otp", "totp", "pin", "mfa secret", "recovery code", "recovery codes"},
}

// describing words after a match make the column about the value, not the value (the last
// word decides: email_sent_at ends in "at").
var describing = wordSet("id ids uuid guid type types kind kinds count counts cnt total len length size verified " +
	"confirmed valid validated validity enabled disabled status flag flags at on ts time timestamp expires expiry " +
	"expiration expired changed updated created sent format regex pattern policy provider required hint label " +
	"template version prefix file path url domain optin optout consent ref mask masked hash_algorithm algorithm " +
	"rotated used attempts retries lookup source brand network issuer month year exp")

// leading words before a match make the column a flag or a measure (is_email, num_phones).
var leading = wordSet("is has have can should allow allowed needs need num n no max min use uses")

// notAddress words before "address" name a machine's address, not a person's.
var notAddress = wordSet("ip mac host server web url net network bind listen remote local broadcast gateway " +
	"contract wallet memory mem base")

func wordSet(s string) map[string]bool {
	m := map[string]bool{}
	for _, w := range strings.Fields(s) {
		m[w] = true
	}
	return m
}

// DictionaryCategories lists the dictionary's categories.
func DictionaryCategories() []string {
	out := make([]string, 0, len(dictionary))
	for c := range dictionary {
		out = append(out, c)
	}
	sort.Strings(out)
	return out
}

// words cuts a column name into lower-case words at non-letters and camelCase boundaries
// ("billingAddressLine1" → billing address line 1, "APIKey" → api key).
func words(name string) []string {
	var out []string
	rs := []rune(name)
	var cur []rune
	flush := func() {
		if len(cur) > 0 {
			out = append(out, strings.ToLower(string(cur)))
			cur = cur[:0]
		}
	}
	for i, r := range rs {
		switch {
		case unicode.IsLetter(r):
			if len(cur) > 0 {
				prev := cur[len(cur)-1]
				switch {
				case unicode.IsDigit(prev):
					flush()
				case unicode.IsUpper(r) && unicode.IsLower(prev):
					flush()
				case unicode.IsUpper(r) && unicode.IsUpper(prev) && i+1 < len(rs) && unicode.IsLower(rs[i+1]):
					flush() // "APIKey": the K starts a word
				}
			}
			cur = append(cur, r)
		case unicode.IsDigit(r):
			if len(cur) > 0 && !unicode.IsDigit(cur[len(cur)-1]) {
				flush()
			}
			cur = append(cur, r)
		default:
			flush()
		}
	}
	flush()
	return out
}

// matchDictionary returns the category a column name falls in and the words that matched:
// the earliest match in the name wins (email_address is an email, not an address), the
// longest entry at that position.
func matchDictionary(name string, disabled map[string]bool) (category, matched string, ok bool) {
	ws := words(name)
	for i := range ws {
		best, bestLen := "", 0
		for _, cat := range DictionaryCategories() {
			if disabled[cat] {
				continue
			}
			for _, entry := range dictionary[cat] {
				seq := strings.Fields(entry)
				if len(seq) <= bestLen || i+len(seq) > len(ws) || !equalWords(ws[i:i+len(seq)], seq) {
					continue
				}
				if i+len(seq) < len(ws) && describing[ws[len(ws)-1]] {
					continue
				}
				if i > 0 && leading[ws[0]] {
					continue
				}
				if cat == "address" && i > 0 && notAddress[ws[i-1]] {
					continue
				}
				category, matched, best, bestLen = cat, entry, cat, len(seq)
			}
		}
		if best != "" {
			return category, matched, true
		}
	}
	return "", "", false
}

func equalWords(a, b []string) bool {
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// categoryOfDetector maps a value detector to the dictionary category whose strategy masks
// what it finds.
func categoryOfDetector(detector string) string {
	switch detector {
	case mask.DetectEmail, mask.DetectPhone, mask.DetectSSN, mask.DetectCard:
		return detector
	}
	return "secret"
}
