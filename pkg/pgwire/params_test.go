package pgwire

import (
	"math"
	"math/big"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgtype"
)

func TestRenderBinary(t *testing.T) {
	// Inputs are encoded by pgtype, as pgx encodes them on the wire; a Map of the test's
	// own, since encoding memoizes plans in it.
	m := pgtype.NewMap()
	paris := time.FixedZone("CET", 3600)
	for _, tc := range []struct {
		name  string
		oid   uint32
		value any    // encoded with pgtype...
		raw   []byte // ... unless raw is set
		want  string // "" wants ok false
	}{
		{"int2", pgtype.Int2OID, int16(-7), nil, "-7"},
		{"int4", pgtype.Int4OID, int32(1), nil, "1"},
		{"int8", pgtype.Int8OID, int64(1) << 40, nil, "1099511627776"},
		{"oid", pgtype.OIDOID, uint32(16384), nil, "16384"},
		{"float4", pgtype.Float4OID, float32(1.5), nil, "1.5"},
		{"float8 shortest", pgtype.Float8OID, 0.1, nil, "0.1"},
		{"float8 without exponent", pgtype.Float8OID, 1e20, nil, "100000000000000000000"},
		{"float8 NaN", pgtype.Float8OID, math.NaN(), nil, "NaN"},
		{"float8 -infinity", pgtype.Float8OID, math.Inf(-1), nil, "-Infinity"},
		{"bool", pgtype.BoolOID, true, nil, "true"},
		{"text", pgtype.TextOID, "héllo; DROP", nil, "héllo; DROP"},
		{"varchar", pgtype.VarcharOID, "v", nil, "v"},
		{"numeric keeps its scale", pgtype.NumericOID, pgtype.Numeric{Int: big.NewInt(123450), Exp: -3, Valid: true}, nil, "123.450"},
		{"numeric large", pgtype.NumericOID, pgtype.Numeric{Int: big.NewInt(-12), Exp: 20, Valid: true}, nil, "-1200000000000000000000"},
		{"numeric NaN", pgtype.NumericOID, pgtype.Numeric{NaN: true, Valid: true}, nil, "NaN"},
		{"uuid", pgtype.UUIDOID, pgtype.UUID{Bytes: [16]byte{0xa0, 0xee, 0xbc, 0x99, 0x9c, 0x0b, 0x4e, 0xf8, 0xbb, 0x6d, 0x6b, 0xb9, 0xbd, 0x38, 0x0a, 0x11}, Valid: true}, nil, "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"},
		{"date", pgtype.DateOID, time.Date(2026, 2, 3, 0, 0, 0, 0, time.UTC), nil, "2026-02-03"},
		{"timestamp has no offset", pgtype.TimestampOID, time.Date(2026, 2, 3, 4, 5, 6, 7000, time.UTC), nil, "2026-02-03T04:05:06.000007"},
		{"timestamptz in UTC", pgtype.TimestamptzOID, time.Date(2026, 2, 3, 4, 5, 6, 0, paris), nil, "2026-02-03T03:05:06Z"},
		{"timestamptz infinity", pgtype.TimestamptzOID, pgtype.Timestamptz{InfinityModifier: pgtype.Infinity, Valid: true}, nil, "infinity"},
		{"bytea is the caller's hex", pgtype.ByteaOID, []byte{1, 2}, nil, ""},
		{"jsonb is not decoded", pgtype.JSONBOID, map[string]any{"a": 1}, nil, ""},
		{"int4 array is not decoded", pgtype.Int4ArrayOID, []int32{1, 2}, nil, ""},
		{"unknown type", 0, nil, []byte{0, 0, 0, 1}, ""},
		{"user-defined type", 16400, nil, []byte{0, 0, 0, 1}, ""},
		{"int4 of the wrong length", pgtype.Int4OID, nil, []byte{0, 1}, ""},
		{"uuid of the wrong length", pgtype.UUIDOID, nil, []byte{1, 2, 3}, ""},
		{"text that is not UTF-8", pgtype.TextOID, nil, []byte{0xff, 0xfe}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			raw := tc.raw
			if raw == nil {
				var err error
				if raw, err = m.Encode(tc.oid, pgtype.BinaryFormatCode, tc.value, nil); err != nil {
					t.Fatalf("encoding %v: %v", tc.value, err)
				}
			}
			got, ok := renderBinary(tc.oid, raw)
			if ok != (tc.want != "") || got != tc.want {
				t.Errorf("renderBinary(%d, %x) = %q, %v; want %q", tc.oid, raw, got, ok, tc.want)
			}
		})
	}
}

func TestFormatParams(t *testing.T) {
	for _, tc := range []struct {
		name    string
		values  [][]byte
		formats []int16
		oids    []uint32
		want    []string
	}{
		{"no format codes: all text", [][]byte{[]byte("1"), nil}, nil, []uint32{23, 23}, []string{"1", "NULL"}},
		{"one code for all", [][]byte{{0, 0, 0, 1}, {0, 0, 0, 2}}, []int16{1}, []uint32{23, 23}, []string{"1", "2"}},
		{"a code each", [][]byte{{0, 0, 0, 1}, []byte("2")}, []int16{1, 0}, []uint32{23, 23}, []string{"1", "2"}},
		{"fewer types than parameters", [][]byte{{0, 0, 0, 1}, {0, 0, 0, 2}}, []int16{1}, []uint32{23}, []string{"1", `\x00000002`}},
		{"no types", [][]byte{{0, 0, 0, 1}}, []int16{1}, nil, []string{`\x00000001`}},
		{"text not UTF-8", [][]byte{{0xff}}, nil, []uint32{25}, []string{`\xff`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := FormatParams(tc.values, tc.formats, tc.oids)
			if len(got) != len(tc.want) {
				t.Fatalf("FormatParams = %q, want %q", got, tc.want)
			}
			for i := range got {
				if got[i] != tc.want[i] {
					t.Errorf("FormatParams = %q, want %q", got, tc.want)
				}
			}
		})
	}
}
