package pgwire

import (
	"bytes"
	"strconv"
	"strings"
)

// TagRows reads the row count of the command tags that carry one (a CommandComplete body,
// its NUL included or not); ok is false for tags without a count, whose rows are the
// DataRows the statement returned.
func TagRows(tag []byte) (int64, bool) {
	tag = bytes.TrimRight(tag, "\x00")
	sp := bytes.IndexByte(tag, ' ')
	if sp < 0 {
		return 0, false
	}
	switch string(tag[:sp]) {
	case "SELECT", "INSERT", "UPDATE", "DELETE", "COPY", "MERGE", "FETCH", "MOVE":
	default:
		return 0, false
	}
	n, err := strconv.ParseInt(string(tag[bytes.LastIndexByte(tag, ' ')+1:]), 10, 64)
	if err != nil {
		return 0, false
	}
	return n, true
}

// StatementAt returns which of parts (the trimmed statements SplitPostgres cut text into, in
// order) an ErrorResponse's position (characters from 1) points into, or -1 when it has
// none: PostgreSQL parses a whole Query string before running any of it, so a syntax error
// in a later statement fails the Query before the first one runs, and only the position
// says which statement it is in. A position between two statements belongs to the next.
func StatementAt(text string, parts []string, position int32) int {
	if position <= 0 {
		return -1
	}
	off, chars := len(text), int32(0)
	for i := range text {
		if chars++; chars == position {
			off = i
			break
		}
	}
	from := 0
	for i, p := range parts {
		k := strings.Index(text[from:], p)
		if k < 0 {
			return -1
		}
		from += k + len(p)
		if off < from {
			return i
		}
	}
	return len(parts) - 1
}
