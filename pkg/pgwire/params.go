// Package pgwire holds the pure PostgreSQL wire-protocol helpers that both capture's decoder
// (pkg/capture/postgres) and the enforcement proxy (pkg/enforce) need, so that the same
// statement leaves the same event fields whichever of them recorded it: bind parameters
// rendered as text, row counts read from command tags, and which statement of a
// multi-statement Query an error position points into. It imports neither of them.
package pgwire

import (
	"encoding/hex"
	"math"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5/pgtype"
)

// paramTypes decodes binary parameters. One Map is shared by every caller, on any
// goroutine: it is only read (TypeForOID), and the codecs of the types renderBinary accepts
// never register or memoize anything in it (unlike arrays, composites or encode plans).
var paramTypes = pgtype.NewMap()

// FormatParams renders parameters as text: text-format values as they are (when valid
// UTF-8); binary ones as PostgreSQL would print them when oids gives their type (see
// renderBinary); anything else, and invalid text, as \x-hex; NULL as NULL. oids[i] is the
// type of parameter i, 0 or missing when unknown.
func FormatParams(values [][]byte, formats []int16, oids []uint32) []string {
	out := make([]string, len(values))
	for i, v := range values {
		f := int16(0)
		switch {
		case len(formats) == 1:
			f = formats[0]
		case i < len(formats):
			f = formats[i]
		}
		switch {
		case v == nil:
			out[i] = "NULL"
			continue
		case f == pgtype.TextFormatCode && utf8.Valid(v):
			out[i] = string(v)
			continue
		case f == pgtype.BinaryFormatCode && i < len(oids):
			if s, ok := renderBinary(oids[i], v); ok {
				out[i] = s
				continue
			}
		}
		out[i] = `\x` + hex.EncodeToString(v)
	}
	return out
}

// renderBinary decodes a binary value of type oid and prints it the way PostgreSQL's
// output functions do, for the scalar types whose printed form is unambiguous; ok is false
// for any other type, and for bytes that are not a valid value of the type, which the
// caller then records as hex rather than guessing. Exceptions, for an auditor reading
// events across time zones and tools: timestamps are RFC 3339 (timestamptz in UTC, plain
// timestamp without an offset, since it has none), and floats never use exponents. bytea
// is not decoded: its text form is the \x-hex the caller prints anyway.
func renderBinary(oid uint32, v []byte) (string, bool) {
	switch oid {
	case pgtype.BoolOID, pgtype.Int2OID, pgtype.Int4OID, pgtype.Int8OID, pgtype.OIDOID,
		pgtype.Float4OID, pgtype.Float8OID, pgtype.NumericOID,
		pgtype.TextOID, pgtype.VarcharOID, pgtype.BPCharOID, pgtype.NameOID,
		pgtype.UUIDOID, pgtype.DateOID, pgtype.TimestampOID, pgtype.TimestamptzOID:
	default:
		return "", false
	}
	t, ok := paramTypes.TypeForOID(oid)
	if !ok {
		return "", false
	}
	val, err := t.Codec.DecodeValue(paramTypes, oid, pgtype.BinaryFormatCode, v)
	if err != nil {
		return "", false
	}
	switch x := val.(type) {
	case bool:
		return strconv.FormatBool(x), true
	case int16:
		return strconv.FormatInt(int64(x), 10), true
	case int32:
		return strconv.FormatInt(int64(x), 10), true
	case int64:
		return strconv.FormatInt(x, 10), true
	case uint32:
		return strconv.FormatUint(uint64(x), 10), true
	case float32:
		return formatFloat(float64(x), 32), true
	case float64:
		return formatFloat(x, 64), true
	case pgtype.Numeric:
		s, err := x.Value() // the decimal text, digits and scale as sent
		if str, isStr := s.(string); err == nil && isStr {
			return str, true
		}
	case string:
		if utf8.ValidString(x) {
			return x, true
		}
	case [16]byte:
		return pgtype.UUID{Bytes: x, Valid: true}.String(), true
	case pgtype.InfinityModifier:
		return x.String(), true // "infinity" or "-infinity", as PostgreSQL prints them
	case time.Time:
		switch oid {
		case pgtype.DateOID:
			return x.Format(time.DateOnly), true
		case pgtype.TimestampOID:
			return x.Format("2006-01-02T15:04:05.999999999"), true
		case pgtype.TimestamptzOID:
			return x.UTC().Format(time.RFC3339Nano), true
		}
	}
	return "", false
}

// formatFloat prints a float exactly, without exponent, and its special values with
// PostgreSQL's spelling.
func formatFloat(f float64, bits int) string {
	switch {
	case math.IsNaN(f):
		return "NaN"
	case math.IsInf(f, 1):
		return "Infinity"
	case math.IsInf(f, -1):
		return "-Infinity"
	}
	return strconv.FormatFloat(f, 'f', -1, bits)
}

// ParamTypeOIDs returns the types a Parse declared for its parameters, or nil when it
// declared none (zeros leave the type to the server, which its ParameterDescription then
// tells).
func ParamTypeOIDs(oids []uint32) []uint32 {
	for _, o := range oids {
		if o != 0 {
			return oids
		}
	}
	return nil
}
