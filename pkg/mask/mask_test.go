package mask

import (
	"strings"
	"testing"
)

func TestDetect(t *testing.T) {
	for _, tc := range []struct {
		value string
		want  string // "" = not sensitive
	}{
		{"ann@example.com", DetectEmail},
		{"first.last+tag@sub.example.co.uk", DetectEmail},
		{"  bob@example.org  ", DetectEmail},
		{"not an email", ""},
		{"a@b", ""},
		{"a@@b.com", ""},
		{"a@b..com", ""},
		{"@example.com", ""},
		{"+14155552671", DetectPhone},
		{"(415) 555-2671", DetectPhone},
		{"+44 20 7946 0958", DetectPhone},
		{"415.555.2671", DetectPhone},
		{"4155552671", ""}, // bare digits: an id as likely as a phone
		{"1700000000", ""},
		{"555-2671", ""},
		{"4111 1111 1111 1111", DetectCard},
		{"4111111111111111", DetectCard},
		{"5500-0000-0000-0004", DetectCard},
		{"378282246310005", DetectCard},
		{"6011111111111117", DetectCard},
		{"4111111111111112", ""}, // Luhn fails
		{"1234567812345670", ""}, // Luhn passes, no card network
		{"078-05-1120", DetectSSN},
		{"123-45-6789", DetectSSN},
		{"000-12-3456", ""},
		{"666-12-3456", ""},
		{"900-12-3456", ""},
		{"123-00-6789", ""},
		{"123456789", ""},
		{"AKIAIOSFODNN7EXAMPLE", DetectAWSKey},
		{"AKIAIOSFODNN7EXAMPL", ""},
		{"ghp_" + strings.Repeat("a1B2", 9), DetectGitHubToken},
		{"github_pat_11ABCDEFG0" + strings.Repeat("x", 60), DetectGitHubToken},
		{"glpat-" + strings.Repeat("Ab3_", 5), DetectGitLabToken},
		{"xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx", DetectSlackToken},
		{"sk_live_" + strings.Repeat("4eC39HqLyjWDarjtT1zdp7dc", 1), DetectStripeKey},
		{"eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U", DetectJWT},
		{"eyJhbGciOiJIUzI1NiJ9.only-two", ""},
		{"-----BEGIN RSA PRIVATE KEY-----\nMIIEow...\n-----END RSA PRIVATE KEY-----", DetectPrivateKey},
		{"-----BEGIN OPENSSH PRIVATE KEY-----\nb3Blbn...", DetectPrivateKey},
		{"-----BEGIN CERTIFICATE-----\nMIIB...", ""},
		{"Bearer abcdefghijklmnopqrstuvwxyz0123", DetectBearerToken},
		{"Zr8aQ3vN1xK7mB2pL9wE4tY6uI0oP5sD", DetectSecret},
		{"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", ""}, // sha256 hex
		{"550e8400-e29b-41d4-a716-446655440000", ""},
		{"The quick brown fox jumps over the lazy dog", ""},
		{"hello", ""},
		{"", ""},
		{"2024-01-01 12:00:00", ""},
		{"123.45", ""},
	} {
		name, ok := Detect([]byte(tc.value))
		if ok != (tc.want != "") || name != tc.want {
			t.Errorf("Detect(%q) = %q, %v; want %q", tc.value, name, ok, tc.want)
		}
	}
}

func TestEnabledDetectors(t *testing.T) {
	m, err := New(Config{Key: []byte("k"), Detectors: []string{DetectCard}})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := m.Detect([]byte("ann@example.com")); ok {
		t.Error("email detected with only the card detector enabled")
	}
	if name, ok := m.Detect([]byte("4111111111111111")); !ok || name != DetectCard {
		t.Errorf("card: %q %v", name, ok)
	}
	off, err := New(Config{Key: []byte("k"), Detectors: []string{}})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := off.Detect([]byte("4111111111111111")); ok {
		t.Error("detected with no detectors enabled")
	}
	if _, err := New(Config{Detectors: []string{"iban"}}); err == nil {
		t.Error("unknown detector accepted")
	}
}

func TestApply(t *testing.T) {
	m, err := New(Config{Key: []byte("secret-key")})
	if err != nil {
		t.Fatal(err)
	}
	tok := func(v string) string { return string(m.Apply(Strategy{Kind: Token}, []byte(v))) }
	for _, tc := range []struct {
		s    Strategy
		in   string
		want string
	}{
		{Strategy{Kind: Full}, "ann@example.com", Placeholder},
		{Strategy{Kind: Partial, KeepLast: 4}, "4111111111111111", "************1111"},
		{Strategy{Kind: Partial, KeepLast: 2}, "héllo", "***lo"},
		{Strategy{Kind: Partial, KeepLast: 3}, "ñçé", Placeholder}, // short values are not kept whole
		{Strategy{Kind: Partial, KeepLast: 4}, "123", Placeholder},
		{Strategy{Kind: "bogus"}, "ann@example.com", Placeholder},
	} {
		if got := string(m.Apply(tc.s, []byte(tc.in))); got != tc.want {
			t.Errorf("Apply(%s, %q) = %q, want %q", tc.s, tc.in, got, tc.want)
		}
	}
	if m.Apply(Strategy{Kind: Null}, []byte("x")) != nil {
		t.Error("null strategy returned a value")
	}
	a, b := tok("ann@example.com"), tok("bob@example.com")
	if a != tok("ann@example.com") || a == b || !strings.HasPrefix(a, TokenPrefix) || len(a) != len(TokenPrefix)+tokenHexLen {
		t.Errorf("tokens %q %q", a, b)
	}
	other, _ := New(Config{Key: []byte("other-key")})
	if string(other.Apply(Strategy{Kind: Token}, []byte("ann@example.com"))) == a {
		t.Error("token does not depend on the key")
	}
}

func TestStrategyValidate(t *testing.T) {
	for _, tc := range []struct {
		s  Strategy
		ok bool
	}{
		{Strategy{Kind: Full}, true},
		{Strategy{Kind: Token}, true},
		{Strategy{Kind: Null}, true},
		{Strategy{Kind: Partial, KeepLast: 4}, true},
		{Strategy{Kind: Partial}, false},
		{Strategy{Kind: Partial, KeepLast: 100}, false},
		{Strategy{Kind: Full, KeepLast: 2}, false},
		{Strategy{Kind: ""}, false},
		{Strategy{Kind: "hash"}, false},
	} {
		if err := tc.s.Validate(); (err == nil) != tc.ok {
			t.Errorf("Validate(%+v) = %v", tc.s, err)
		}
	}
}

var benchValues = [][]byte{
	[]byte("42"), []byte("ann@example.com"), []byte("The quick brown fox jumps over"),
	[]byte("2024-01-01 12:00:00+00"), []byte("4111 1111 1111 1111"), []byte("550e8400-e29b-41d4-a716-446655440000"),
	[]byte("Zr8aQ3vN1xK7mB2pL9wE4tY6uI0oP5sD"), []byte("Springfield"),
}

// BenchmarkDetect runs every detector over a mix of typical column values (per value).
func BenchmarkDetect(b *testing.B) {
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		Detect(benchValues[i%len(benchValues)])
		i++
	}
}

func BenchmarkApplyToken(b *testing.B) {
	m, _ := New(Config{Key: []byte("k")})
	v := []byte("ann@example.com")
	b.ReportAllocs()
	for b.Loop() {
		m.Apply(Strategy{Kind: Token}, v)
	}
}
