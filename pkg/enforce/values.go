package enforce

import (
	"encoding/binary"
	"math"
	"math/big"
	"strconv"
	"strings"

	"github.com/vigil-db/vigil/pkg/mask"
)

// The value detectors read text. A value in binary format, or a number printed as its type
// prints it (4.111111111111111e+15, $4,111,111,111,111,111.00), does not show them its
// digits: these functions turn such values into the texts the detectors are tried on. A
// binary value is read by its type (numbers, money), by its structure (arrays and records,
// whose elements name their own types, at any depth), and as raw bytes (text inside a value
// of a type the proxy does not know, such as an enum label).

// More type OIDs the binary reading distinguishes.
const (
	oidBool        = 16
	oidFloat4      = 700
	oidFloat8      = 701
	oidMoney       = 790
	oidRecord      = 2249
	oidDate        = 1082
	oidTime        = 1083
	oidTimestamp   = 1114
	oidTimestampTZ = 1184
	oidInterval    = 1186
	oidUUID        = 2950
)

// maxValueDepth bounds the nesting of arrays and records read; deeper values are treated as
// carrying PII (fail closed).
const maxValueDepth = 8

// binaryPII reports whether a binary-format value of type oid carries something the
// detectors recognize.
func binaryPII(m *mask.Masker, s mask.Strategy, oid uint32, v []byte, depth int) bool {
	if depth > maxValueDepth {
		return true
	}
	switch oid {
	case oidInt2, oidInt4, oidInt8:
		var n int64
		switch len(v) {
		case 8:
			n = int64(binary.BigEndian.Uint64(v))
		case 4:
			n = int64(int32(binary.BigEndian.Uint32(v)))
		case 2:
			n = int64(int16(binary.BigEndian.Uint16(v)))
		default:
			return true // not what the type sends: cannot be read, do not pass
		}
		return numberPII(m, strconv.FormatInt(n, 10))
	case oidFloat4, oidFloat8:
		var f float64
		switch len(v) {
		case 8:
			f = math.Float64frombits(binary.BigEndian.Uint64(v))
		case 4:
			f = float64(math.Float32frombits(binary.BigEndian.Uint32(v)))
		default:
			return true
		}
		return numberPII(m, strconv.FormatFloat(f, 'f', -1, 64))
	case oidNumeric:
		t, ok := numericText(v)
		return !ok || numberPII(m, t)
	case oidMoney:
		if len(v) != 8 {
			return true
		}
		// Cents: the detectors see the amount in currency units.
		return numberPII(m, strconv.FormatInt(int64(binary.BigEndian.Uint64(v))/100, 10))
	case oidBool, oidChar, oidDate, oidTime, oidTimestamp, oidTimestampTZ, oidInterval, oidUUID:
		return false // fixed-size values that hold no text and no long digit run
	}
	if textType(oid) {
		_, found := maskEmbedded(m, s, v)
		return found
	}
	// Arrays and records (the named composite types have OIDs of their own, so their
	// structure is what says what they are).
	if found, ok := recordPII(m, s, v, depth); ok && found {
		return true
	}
	if found, ok := arrayPII(m, s, v, depth); ok && found {
		return true
	}
	_, found := maskEmbedded(m, s, v)
	return found
}

// recordPII reads v as a binary record (field count, then type OID and length-prefixed
// value per field); ok is false when v is not one.
func recordPII(m *mask.Masker, s mask.Strategy, v []byte, depth int) (found, ok bool) {
	if len(v) < 4 {
		return false, false
	}
	n := int32(binary.BigEndian.Uint32(v))
	if n < 0 || n > 1664 { // MaxTupleAttributeNumber
		return false, false
	}
	type elem struct {
		oid uint32
		v   []byte
	}
	var elems []elem
	p := 4
	for i := int32(0); i < n; i++ {
		if p+8 > len(v) {
			return false, false
		}
		oid, l := binary.BigEndian.Uint32(v[p:]), int32(binary.BigEndian.Uint32(v[p+4:]))
		p += 8
		if l < 0 {
			continue
		}
		if int(l) > len(v)-p {
			return false, false
		}
		elems = append(elems, elem{oid, v[p : p+int(l)]})
		p += int(l)
	}
	if p != len(v) {
		return false, false
	}
	for _, e := range elems {
		if binaryPII(m, s, e.oid, e.v, depth+1) {
			return true, true
		}
	}
	return false, true
}

// arrayPII reads v as a binary array (dimensions, flags, element type, bounds, then
// length-prefixed elements); ok is false when v is not one.
func arrayPII(m *mask.Masker, s mask.Strategy, v []byte, depth int) (found, ok bool) {
	if len(v) < 12 {
		return false, false
	}
	ndim := int32(binary.BigEndian.Uint32(v))
	flags := binary.BigEndian.Uint32(v[4:])
	elemOID := binary.BigEndian.Uint32(v[8:])
	if ndim < 0 || ndim > 6 || flags > 1 { // MAXDIM
		return false, false
	}
	p := 12
	count := int64(1)
	if ndim == 0 {
		count = 0
	}
	for i := int32(0); i < ndim; i++ {
		if p+8 > len(v) {
			return false, false
		}
		d := int32(binary.BigEndian.Uint32(v[p:]))
		if d < 0 {
			return false, false
		}
		count *= int64(d)
		if count > int64(len(v)) { // every element takes at least 4 bytes
			return false, false
		}
		p += 8
	}
	var elems [][]byte
	for i := int64(0); i < count; i++ {
		if p+4 > len(v) {
			return false, false
		}
		l := int32(binary.BigEndian.Uint32(v[p:]))
		p += 4
		if l < 0 {
			continue
		}
		if int(l) > len(v)-p {
			return false, false
		}
		elems = append(elems, v[p:p+int(l)])
		p += int(l)
	}
	if p != len(v) {
		return false, false
	}
	for _, e := range elems {
		if binaryPII(m, s, elemOID, e, depth+1) {
			return true, true
		}
	}
	return false, true
}

// numericText prints a binary numeric (digit count, weight, sign, display scale, then
// base-10000 digits) in decimal, its fraction in whole groups of four digits rather than to
// the display scale. NaN and infinities print as nothing.
func numericText(v []byte) (string, bool) {
	if len(v) < 8 {
		return "", false
	}
	ndigits := int(int16(binary.BigEndian.Uint16(v)))
	weight := int(int16(binary.BigEndian.Uint16(v[2:])))
	sign := binary.BigEndian.Uint16(v[4:])
	if ndigits < 0 || len(v) != 8+2*ndigits {
		return "", false
	}
	if sign != 0 && sign != 0x4000 {
		return "", true // NaN, +Inf, -Inf
	}
	var b strings.Builder
	if sign == 0x4000 {
		b.WriteByte('-')
	}
	digit := func(i int) int {
		if i < 0 || i >= ndigits {
			return 0
		}
		return int(binary.BigEndian.Uint16(v[8+2*i:]))
	}
	if weight < 0 {
		b.WriteByte('0')
	}
	for i := 0; i <= weight; i++ {
		d := digit(i)
		if i == 0 {
			b.WriteString(strconv.Itoa(d))
		} else {
			b.WriteString(strconv.Itoa(10000 + d)[1:])
		}
	}
	if ndigits > weight+1 {
		b.WriteByte('.')
		for i := weight + 1; i < ndigits; i++ {
			b.WriteString(strconv.Itoa(10000 + digit(i))[1:])
		}
	}
	return b.String(), true
}

// numberPII reports whether a printed number is, or has as its integer part, something the
// detectors recognize (a card number stored as numeric(20,2) prints with ".00").
func numberPII(m *mask.Masker, t string) bool {
	if _, ok := m.Detect([]byte(t)); ok {
		return true
	}
	t = strings.TrimLeft(t, "+-")
	if i := strings.IndexByte(t, '.'); i >= 0 {
		t = t[:i]
	}
	_, ok := m.Detect([]byte(t))
	return ok
}

// textNumberPII finds numbers in the text form of a non-text value (a number, money, an
// array or record of them) that the detectors recognize once written as plain digits:
// exponent notation and currency formatting are undone.
func textNumberPII(m *mask.Masker, v []byte) bool {
	isNum := func(c byte) bool {
		return c >= '0' && c <= '9' || c == '.' || c == ',' || c == '$' || c == 'e' || c == 'E' || c == '+' || c == '-'
	}
	for i := 0; i < len(v); {
		for i < len(v) && !isNum(v[i]) {
			i++
		}
		j := i
		for j < len(v) && isNum(v[j]) {
			j++
		}
		if j > i && numberTokenPII(m, string(v[i:j])) {
			return true
		}
		i = j
	}
	return false
}

func numberTokenPII(m *mask.Masker, tok string) bool {
	digits := 0
	for i := 0; i < len(tok); i++ {
		if tok[i] >= '0' && tok[i] <= '9' {
			digits++
		}
	}
	if digits < 9 {
		return false // shorter than any number the detectors recognize
	}
	if strings.ContainsAny(tok, "eE") {
		// Exponent notation, alone or in a list ({4.111111111111111e+15,5}).
		for _, part := range strings.Split(tok, ",") {
			f, _, err := big.ParseFloat(part, 10, 256, big.ToNearestEven)
			if err == nil && numberPII(m, f.Text('f', -1)) {
				return true
			}
		}
		return false
	}
	// Group separators inside a money or formatted amount ($4,111,111,111,111,111.00).
	return numberPII(m, strings.NewReplacer("$", "", ",", "").Replace(tok))
}
