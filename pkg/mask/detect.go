// Package mask recognizes sensitive values (email addresses, phone numbers, payment cards,
// US SSNs, API keys and tokens) and masks them (fixed placeholder, last characters kept,
// keyed deterministic token, NULL). It knows nothing of SQL or policy: the policy decides
// which columns and detectors apply, the proxy calls it per result value.
package mask

import (
	"bytes"
	"math"
)

// Detector names, as policy files list them.
const (
	DetectEmail       = "email"
	DetectPhone       = "phone"
	DetectCard        = "card"
	DetectSSN         = "ssn"
	DetectAWSKey      = "aws_access_key"
	DetectGitHubToken = "github_token"
	DetectGitLabToken = "gitlab_token"
	DetectSlackToken  = "slack_token"
	DetectStripeKey   = "stripe_key"
	DetectJWT         = "jwt"
	DetectPrivateKey  = "private_key"
	DetectBearerToken = "bearer_token"
	DetectSecret      = "secret"
)

// detectors in the order they are tried: specific shapes before the generic secret test.
var detectors = []struct {
	name string
	fn   func([]byte) bool
}{
	{DetectPrivateKey, isPrivateKey},
	{DetectEmail, isEmail},
	{DetectSSN, isSSN},
	{DetectCard, isCard},
	{DetectPhone, isPhone},
	{DetectAWSKey, isAWSKey},
	{DetectGitHubToken, isGitHubToken},
	{DetectGitLabToken, isGitLabToken},
	{DetectSlackToken, isSlackToken},
	{DetectStripeKey, isStripeKey},
	{DetectJWT, isJWT},
	{DetectBearerToken, isBearer},
	{DetectSecret, isSecret},
}

// DetectorNames lists every detector.
func DetectorNames() []string {
	out := make([]string, len(detectors))
	for i, d := range detectors {
		out[i] = d.name
	}
	return out
}

// maxDetectLen: longer values are documents, not identifiers; only the private-key test,
// which looks for a PEM header, runs on them.
const maxDetectLen = 4096

// Detect reports which detector, if any, recognizes the whole value. Values are matched
// whole (a column value that is an email address), not searched for embedded matches.
func Detect(value []byte) (name string, ok bool) {
	return detect(value, allDetectors)
}

var allDetectors = uint32(1)<<len(detectors) - 1

func detect(value []byte, enabled uint32) (string, bool) {
	v := bytes.TrimSpace(value)
	if len(v) < 6 {
		return "", false
	}
	for i, d := range detectors {
		if enabled&(1<<i) == 0 {
			continue
		}
		if len(v) > maxDetectLen && d.name != DetectPrivateKey {
			continue
		}
		if d.fn(v) {
			return d.name, true
		}
	}
	return "", false
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }
func isUpper(c byte) bool { return c >= 'A' && c <= 'Z' }
func isLower(c byte) bool { return c >= 'a' && c <= 'z' }
func isAlnum(c byte) bool { return isDigit(c) || isUpper(c) || isLower(c) }

func isEmail(v []byte) bool {
	at := bytes.IndexByte(v, '@')
	if at < 1 || at > 64 || bytes.IndexByte(v[at+1:], '@') >= 0 {
		return false
	}
	for _, c := range v[:at] {
		if !isAlnum(c) && bytes.IndexByte([]byte(".!#$%&'*+/=?^_`{|}~-"), c) < 0 {
			return false
		}
	}
	dom := v[at+1:]
	dot := bytes.LastIndexByte(dom, '.')
	if dot < 1 || len(dom)-dot-1 < 2 {
		return false
	}
	prev := byte('.')
	for _, c := range dom {
		switch {
		case isAlnum(c), c >= 0x80:
		case c == '-':
		case c == '.':
			if prev == '.' || prev == '-' {
				return false
			}
		default:
			return false
		}
		prev = c
	}
	for _, c := range dom[dot+1:] {
		if !isLower(c) && !isUpper(c) && c < 0x80 {
			return false
		}
	}
	return prev != '.' && prev != '-'
}

// isPhone accepts formatted phone numbers: 10 to 15 digits with a leading '+' or some
// separators. A bare run of digits is not a phone number here: it is far more often an
// id, an amount or a timestamp.
func isPhone(v []byte) bool {
	digits, seps := 0, 0
	for i, c := range v {
		switch {
		case isDigit(c):
			digits++
		case c == '+' && i == 0:
			seps++
		case c == ' ' || c == '-' || c == '.' || c == '(' || c == ')':
			seps++
		default:
			return false
		}
	}
	return digits >= 10 && digits <= 15 && seps > 0 && (v[0] == '+' || v[0] == '(' || isDigit(v[0]))
}

// isCard accepts 13-19 digits, optionally grouped by spaces or dashes, with a Luhn check
// digit and the prefix of a card network.
func isCard(v []byte) bool {
	var d [19]byte
	n := 0
	for _, c := range v {
		switch {
		case isDigit(c):
			if n == len(d) {
				return false
			}
			d[n] = c - '0'
			n++
		case c == ' ' || c == '-':
		default:
			return false
		}
	}
	if n < 13 || !isDigit(v[0]) || !isDigit(v[len(v)-1]) {
		return false
	}
	p2 := int(d[0])*10 + int(d[1])
	p4 := p2*100 + int(d[2])*10 + int(d[3])
	switch {
	case d[0] == 4: // Visa
	case p2 >= 51 && p2 <= 55, p4 >= 2221 && p4 <= 2720: // Mastercard
	case p2 == 34 || p2 == 37: // American Express
	case p4 == 6011, p2 == 65, p4/10 >= 644 && p4/10 <= 649: // Discover
	case p2 == 35: // JCB
	case p2 == 36 || p2 == 38 || p2 == 30: // Diners Club
	case p2 == 62: // UnionPay
	default:
		return false
	}
	return luhn(d[:n])
}

func luhn(d []byte) bool {
	sum := 0
	for i := len(d) - 1; i >= 0; i-- {
		x := int(d[i])
		if (len(d)-1-i)%2 == 1 {
			x *= 2
			if x > 9 {
				x -= 9
			}
		}
		sum += x
	}
	return sum%10 == 0
}

// isSSN accepts AAA-GG-SSSS with the ranges the SSA never issues excluded.
func isSSN(v []byte) bool {
	if len(v) != 11 || v[3] != '-' || v[6] != '-' {
		return false
	}
	for i, c := range v {
		if i != 3 && i != 6 && !isDigit(c) {
			return false
		}
	}
	area := string(v[0:3])
	return area != "000" && area != "666" && v[0] != '9' && string(v[4:6]) != "00" && string(v[7:11]) != "0000"
}

func isAWSKey(v []byte) bool {
	if len(v) != 20 {
		return false
	}
	switch string(v[:4]) {
	case "AKIA", "ASIA", "AGPA", "AIDA", "AROA", "ANPA", "ANVA", "AIPA", "ABIA", "ACCA":
	default:
		return false
	}
	for _, c := range v[4:] {
		if !isUpper(c) && !isDigit(c) {
			return false
		}
	}
	return true
}

func allIn(v []byte, extra string) bool {
	for _, c := range v {
		if !isAlnum(c) && (extra == "" || bytes.IndexByte([]byte(extra), c) < 0) {
			return false
		}
	}
	return true
}

func isGitHubToken(v []byte) bool {
	if bytes.HasPrefix(v, []byte("github_pat_")) {
		return len(v) >= 60 && allIn(v[11:], "_")
	}
	if len(v) != 40 || v[0] != 'g' || v[1] != 'h' || v[3] != '_' {
		return false
	}
	switch v[2] {
	case 'p', 'o', 'u', 's', 'r':
		return allIn(v[4:], "")
	}
	return false
}

func isGitLabToken(v []byte) bool {
	for _, p := range []string{"glpat-", "gldt-", "glrt-", "glptt-", "glsoat-"} {
		if bytes.HasPrefix(v, []byte(p)) {
			rest := v[len(p):]
			return len(rest) >= 20 && allIn(rest, "_-.")
		}
	}
	return false
}

func isSlackToken(v []byte) bool {
	if len(v) < 20 || v[0] != 'x' {
		return false
	}
	for _, p := range []string{"xoxb-", "xoxp-", "xoxa-", "xoxr-", "xoxs-", "xoxe-", "xapp-"} {
		if bytes.HasPrefix(v, []byte(p)) {
			return allIn(v[5:], "-")
		}
	}
	return false
}

func isStripeKey(v []byte) bool {
	for _, p := range []string{"sk_live_", "rk_live_", "sk_test_", "rk_test_", "whsec_"} {
		if bytes.HasPrefix(v, []byte(p)) {
			rest := v[len(p):]
			return len(rest) >= 16 && allIn(rest, "")
		}
	}
	return false
}

// isJWT accepts header.payload.signature in base64url whose header is a JSON object
// (base64 of '{"' begins "eyJ").
func isJWT(v []byte) bool {
	if len(v) < 30 || !bytes.HasPrefix(v, []byte("eyJ")) {
		return false
	}
	dots := 0
	seg := 0
	for _, c := range v {
		switch {
		case c == '.':
			if seg == 0 {
				return false
			}
			dots++
			seg = 0
		case isAlnum(c) || c == '-' || c == '_' || c == '=':
			seg++
		default:
			return false
		}
	}
	return dots == 2
}

func isPrivateKey(v []byte) bool {
	i := bytes.Index(v, []byte("-----BEGIN "))
	if i < 0 {
		return false
	}
	end := bytes.IndexByte(v[i+11:], '\n')
	hdr := v[i+11:]
	if end >= 0 {
		hdr = hdr[:end]
	}
	return bytes.Contains(hdr, []byte("PRIVATE KEY-----"))
}

func isBearer(v []byte) bool {
	if len(v) < 27 {
		return false
	}
	p := v[:7]
	if !bytes.EqualFold(p, []byte("bearer ")) && !bytes.EqualFold(v[:6], []byte("token ")) {
		return false
	}
	rest := bytes.TrimSpace(v[bytes.IndexByte(v, ' '):])
	return len(rest) >= 20 && allIn(rest, "-._~+/=")
}

// isSecret is the generic test for keys without a known prefix: 32 to 512 characters of a
// token alphabet, upper and lower case letters and digits all present, and high entropy.
// Hex digests and UUIDs (one case only) do not pass.
func isSecret(v []byte) bool {
	if len(v) < 32 || len(v) > 512 {
		return false
	}
	var up, lo, dg bool
	var counts [128]int
	for _, c := range v {
		switch {
		case isUpper(c):
			up = true
		case isLower(c):
			lo = true
		case isDigit(c):
			dg = true
		case c == '-' || c == '_' || c == '+' || c == '/' || c == '=':
		default:
			return false
		}
		counts[c]++
	}
	if !up || !lo || !dg {
		return false
	}
	h := 0.0
	n := float64(len(v))
	for _, k := range counts {
		if k > 0 {
			p := float64(k) / n
			h -= p * math.Log2(p)
		}
	}
	return h >= 4.0
}
