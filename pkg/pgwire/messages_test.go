package pgwire

import "testing"

func TestTagRows(t *testing.T) {
	for tag, want := range map[string]int64{"SELECT 5": 5, "INSERT 0 3": 3, "UPDATE 0": 0, "DELETE 9": 9, "COPY 12": 12,
		"MERGE 2": 2, "FETCH 1": 1, "MOVE 4": 4, "CREATE TABLE": -1, "SHOW": -1, "SELECT x": -1} {
		n, ok := TagRows([]byte(tag))
		if !ok {
			n = -1
		}
		if n != want {
			t.Errorf("TagRows(%q) = %d, want %d", tag, n, want)
		}
	}
}

func TestStatementAt(t *testing.T) {
	const text = "SELECT 1; SELECT é/0 ;\n SELEC 3"
	parts := []string{"SELECT 1", "SELECT é/0", "SELEC 3"}
	for _, tc := range []struct {
		position int32
		want     int
	}{
		{0, -1},  // no position
		{1, 0},   // the first statement's first character
		{9, 1},   // its semicolon belongs to the next
		{18, 1},  // "/" after a two-byte character: positions count characters
		{26, 2},  // the syntax error in the third
		{999, 2}, // past the end: the last
	} {
		if got := StatementAt(text, parts, tc.position); got != tc.want {
			t.Errorf("StatementAt(position %d) = %d, want %d", tc.position, got, tc.want)
		}
	}
}
