package enforce

import (
	"encoding/binary"
	"testing"

	"github.com/vigil-db/vigil/pkg/mask"
)

func numericBinary(weight, sign, dscale int16, digits ...uint16) []byte {
	v := binary.BigEndian.AppendUint16(nil, uint16(len(digits)))
	v = binary.BigEndian.AppendUint16(v, uint16(weight))
	v = binary.BigEndian.AppendUint16(v, uint16(sign))
	v = binary.BigEndian.AppendUint16(v, uint16(dscale))
	for _, d := range digits {
		v = binary.BigEndian.AppendUint16(v, d)
	}
	return v
}

func TestNumericText(t *testing.T) {
	for _, tc := range []struct {
		v    []byte
		want string
	}{
		{numericBinary(3, 0, 0, 4111, 1111, 1111, 1111), "4111111111111111"},
		{numericBinary(3, 0x4000, 2, 4111, 1111, 1111, 1111, 5000), "-4111111111111111.5000"},
		{numericBinary(2, 0, 0, 1), "100000000"},
		{numericBinary(-1, 0, 1, 5000), "0.5000"},
		{numericBinary(0, 0, 0), "0"},
		{numericBinary(0, int16(-0x4000), 0), ""}, // NaN
	} {
		got, ok := numericText(tc.v)
		if !ok || got != tc.want {
			t.Errorf("numericText(%x) = %q, %v; want %q", tc.v, got, ok, tc.want)
		}
	}
	if _, ok := numericText([]byte{0, 5, 0, 0}); ok {
		t.Errorf("a truncated numeric was read")
	}
}

func TestTextNumberPII(t *testing.T) {
	m, err := mask.New(mask.Config{Key: []byte("k")})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		v    string
		want bool
	}{
		{"4.111111111111111e+15", true},
		{"$4,111,111,111,111,111.00", true},
		{"{4.111111111111111e+15,5}", true},
		{"(work,4111111111111111.00,1)", true},
		{"4111111111111112", false}, // fails the Luhn check
		{"1.5e+20", false},
		{"$1,234.56", false},
		{"{1,2,3}", false},
	} {
		if got := textNumberPII(m, []byte(tc.v)); got != tc.want {
			t.Errorf("textNumberPII(%q) = %v, want %v", tc.v, got, tc.want)
		}
	}
}
