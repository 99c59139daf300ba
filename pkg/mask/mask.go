package mask

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
	"unicode/utf8"
)

// Strategy kinds.
const (
	// Full replaces the value with Placeholder.
	Full = "full"
	// Partial keeps the last KeepLast characters and replaces the others with '*'.
	Partial = "partial"
	// Token replaces the value with TokenPrefix and a keyed HMAC-SHA256 of it: equal values
	// give equal tokens, so joins and GROUP BY on masked output still work, and without the
	// key a token cannot be reversed by hashing guesses.
	Token = "token"
	// Null replaces the value with SQL NULL (Apply returns nil).
	Null = "null"
)

// Placeholder is what Full masking leaves.
const Placeholder = "****"

// TokenPrefix starts every token.
const TokenPrefix = "tok_"

// tokenHexLen: 96 bits of the HMAC are plenty to keep distinct values distinct.
const tokenHexLen = 24

// Strategy is how one value is masked.
type Strategy struct {
	Kind     string `json:"kind" yaml:"kind"`
	KeepLast int    `json:"keep_last,omitempty" yaml:"keep_last"`
}

// Validate checks the strategy's kind and parameters.
func (s Strategy) Validate() error {
	switch s.Kind {
	case Full, Token, Null:
		if s.KeepLast != 0 {
			return fmt.Errorf("keep_last only applies to the %q strategy, not %q", Partial, s.Kind)
		}
	case Partial:
		if s.KeepLast < 1 || s.KeepLast > 64 {
			return fmt.Errorf("partial masking needs keep_last between 1 and 64, got %d", s.KeepLast)
		}
	case "":
		return fmt.Errorf("masking strategy kind missing (to mask with NULL write \"null\" in quotes: a bare null is YAML's null)")
	default:
		return fmt.Errorf("unknown masking strategy %q (want %s, %s, %s or %s)", s.Kind, Full, Partial, Token, Null)
	}
	return nil
}

// String is "full", "partial:4", ...
func (s Strategy) String() string {
	if s.Kind == Partial {
		return fmt.Sprintf("%s:%d", Partial, s.KeepLast)
	}
	return s.Kind
}

// Config configures a Masker.
type Config struct {
	// Key is the HMAC key of the token strategy. Empty means a random key for this process:
	// tokens are then stable only until restart.
	Key []byte
	// Detectors enables detectors by name; nil enables all of them.
	Detectors []string
}

// Masker applies strategies and runs the enabled detectors. It is safe for concurrent use.
type Masker struct {
	key     []byte
	enabled uint32
}

// New returns a Masker for cfg.
func New(cfg Config) (*Masker, error) {
	m := &Masker{key: cfg.Key, enabled: allDetectors}
	if len(m.key) == 0 {
		m.key = make([]byte, 32)
		if _, err := rand.Read(m.key); err != nil {
			return nil, fmt.Errorf("generating a masking token key: %w", err)
		}
	}
	if cfg.Detectors != nil {
		m.enabled = 0
		for _, name := range cfg.Detectors {
			i := detectorIndex(name)
			if i < 0 {
				return nil, fmt.Errorf("unknown detector %q (known: %s)", name, strings.Join(DetectorNames(), ", "))
			}
			m.enabled |= 1 << i
		}
	}
	return m, nil
}

func detectorIndex(name string) int {
	for i, d := range detectors {
		if d.name == name {
			return i
		}
	}
	return -1
}

// Detect is the package Detect restricted to the enabled detectors.
func (m *Masker) Detect(value []byte) (string, bool) {
	if m.enabled == 0 {
		return "", false
	}
	return detect(value, m.enabled)
}

// Apply masks value with s. A nil result means SQL NULL. An invalid strategy masks fully:
// a configuration mistake must not let the value through.
func (m *Masker) Apply(s Strategy, value []byte) []byte {
	switch s.Kind {
	case Null:
		return nil
	case Token:
		mac := hmac.New(sha256.New, m.key)
		mac.Write(value)
		sum := mac.Sum(nil)
		out := make([]byte, len(TokenPrefix)+tokenHexLen)
		copy(out, TokenPrefix)
		hex.Encode(out[len(TokenPrefix):], sum[:tokenHexLen/2])
		return out
	case Partial:
		n := utf8.RuneCount(value)
		if s.KeepLast < 1 || n <= s.KeepLast {
			// Keeping the last N of a value no longer than N would keep all of it.
			return []byte(Placeholder)
		}
		cut := len(value)
		for i := 0; i < s.KeepLast; i++ {
			_, size := utf8.DecodeLastRune(value[:cut])
			cut -= size
		}
		out := make([]byte, 0, n-s.KeepLast+len(value)-cut)
		for i := 0; i < n-s.KeepLast; i++ {
			out = append(out, '*')
		}
		return append(out, value[cut:]...)
	default:
		return []byte(Placeholder)
	}
}
