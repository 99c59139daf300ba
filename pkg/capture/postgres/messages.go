package postgres

import (
	"bytes"
	"encoding/binary"

	"github.com/jackc/pgx/v5/pgproto3"
)

// Limits the server itself enforces (PostgreSQL 15, src/backend/tcop/postgres.c and
// postmaster.c): messages of the "small" kinds longer than this are refused, so a header
// claiming more is not a header.
const (
	smallMessageLimit = 10000     // PQ_SMALL_MESSAGE_LIMIT
	largeMessageLimit = 1<<30 - 1 // PQ_LARGE_MESSAGE_LIMIT (MaxAllocSize - 1)
	maxStartupLength  = 10000     // MAX_STARTUP_PACKET_LENGTH
)

// Request codes of the untyped startup-phase messages.
const (
	codeCancel   = 80877102
	codeSSL      = 80877103
	codeGSSEnc   = 80877104
	proto30      = pgproto3.ProtocolVersion30
	proto32      = pgproto3.ProtocolVersion32
	tlsHandshake = 0x16 // first byte of a TLS record carrying a handshake (direct SSL)
)

// lengthBounds gives the message length (including the length field itself) a type may
// have in a direction; ok is false for types that direction never sends.
func lengthBounds(fromClient bool, typ byte) (lo, hi int, ok bool) {
	if fromClient {
		switch typ {
		case 'Q', 'P', 'B', 'F', 'd', 'p':
			return 4, largeMessageLimit, true
		case 'S', 'H', 'X', 'c':
			return 4, 4, true
		case 'E':
			return 9, smallMessageLimit, true
		case 'D', 'C':
			return 6, smallMessageLimit, true
		case 'f':
			return 5, smallMessageLimit, true
		}
		return 0, 0, false
	}
	switch typ {
	case '1', '2', '3', 'n', 'I', 's', 'c':
		return 4, 4, true
	case 'Z':
		return 5, 5, true
	case 'K':
		return 12, 4 + 4 + 256, true // protocol 3.2 allows secret keys up to 256 bytes
	case 'R':
		return 8, largeMessageLimit, true
	case 'C', 'E', 'N', 'S', 'A', 'v':
		return 5, largeMessageLimit, true
	case 'T', 'D', 't':
		return 6, largeMessageLimit, true
	case 'G', 'H', 'W':
		return 7, largeMessageLimit, true
	case 'V':
		return 8, largeMessageLimit, true
	case 'd':
		return 4, largeMessageLimit, true
	}
	return 0, 0, false
}

// plausibleHeader reports whether typ and length could start a message in this direction.
func plausibleHeader(fromClient bool, typ byte, length uint32) bool {
	lo, hi, ok := lengthBounds(fromClient, typ)
	return ok && int64(length) >= int64(lo) && int64(length) <= int64(hi)
}

// strongBody reports whether a complete body is a well-formed message of its type, and
// whether that check alone is strong enough to trust a boundary found while resyncing with
// nothing after it to confirm it (a CopyData body, say, can be anything).
func strongBody(fromClient bool, typ byte, body []byte) (valid, strong bool) {
	if fromClient {
		switch typ {
		case 'Q':
			return bytes.IndexByte(body, 0) == len(body)-1, true
		case 'P':
			var m pgproto3.Parse
			return m.Decode(body) == nil && len(body) == parseLen(&m), true
		case 'B':
			var m pgproto3.Bind
			return m.Decode(body) == nil, true
		case 'E':
			i := bytes.IndexByte(body, 0)
			return i >= 0 && len(body) == i+5, true
		case 'D', 'C':
			return (body[0] == 'S' || body[0] == 'P') && bytes.IndexByte(body[1:], 0) == len(body)-2, true
		case 'S', 'H', 'X', 'c':
			return true, true
		case 'f':
			return bytes.IndexByte(body, 0) == len(body)-1, true
		case 'F':
			var m pgproto3.FunctionCall
			return m.Decode(body) == nil, true
		}
		return true, false // 'd', 'p'
	}
	switch typ {
	case 'Z':
		return body[0] == 'I' || body[0] == 'T' || body[0] == 'E', true
	case 'C':
		return validTag(body), true
	case '1', '2', '3', 'n', 'I', 's', 'c':
		return true, true
	case 'E', 'N':
		return validFields(body), true
	case 'S':
		i := bytes.IndexByte(body, 0)
		return i >= 0 && bytes.IndexByte(body[i+1:], 0) == len(body)-i-2, true
	case 'K':
		return true, true
	case 'D':
		var m pgproto3.DataRow
		return m.Decode(body) == nil && dataRowLen(body) == len(body), len(body) > 2
	case 'T':
		var m pgproto3.RowDescription
		return m.Decode(body) == nil, true
	case 't':
		n := int(binary.BigEndian.Uint16(body))
		return len(body) == 2+4*n, true
	case 'G', 'H', 'W':
		n := int(binary.BigEndian.Uint16(body[1:]))
		return body[0] <= 1 && len(body) == 3+2*n, true
	case 'R':
		code := binary.BigEndian.Uint32(body)
		return code <= 12, true
	}
	return true, false // 'd', 'A', 'V', 'v'
}

func parseLen(m *pgproto3.Parse) int {
	return len(m.Name) + 1 + len(m.Query) + 1 + 2 + 4*len(m.ParameterOIDs)
}

// dataRowLen is the length a DataRow body must have given its own field lengths.
func dataRowLen(body []byte) int {
	n := int(binary.BigEndian.Uint16(body))
	p := 2
	for range n {
		if len(body) < p+4 {
			return -1
		}
		l := int(int32(binary.BigEndian.Uint32(body[p:])))
		p += 4
		if l > 0 {
			p += l
		}
	}
	return p
}

// validTag: a command tag is upper-case words and numbers, NUL-terminated.
func validTag(body []byte) bool {
	if len(body) < 2 || body[len(body)-1] != 0 {
		return false
	}
	for _, c := range body[:len(body)-1] {
		if !(c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == ' ' || c == '_') {
			return false
		}
	}
	return true
}

// validFields: ErrorResponse/NoticeResponse fields, each a code byte and a string, then 0.
func validFields(body []byte) bool {
	for p := 0; p < len(body); {
		if body[p] == 0 {
			return p == len(body)-1
		}
		i := bytes.IndexByte(body[p+1:], 0)
		if i < 0 {
			return false
		}
		p += i + 2
	}
	return false
}
