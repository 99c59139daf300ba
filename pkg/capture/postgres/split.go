package postgres

import "unicode/utf8"

// cut returns text cut to at most max bytes on a UTF-8 boundary, and whether it was cut.
func cut(text []byte, max int) ([]byte, bool) {
	if len(text) <= max {
		return text, false
	}
	text = text[:max]
	// Back up to the start of the last character and drop it if the cut went through it,
	// so that valid UTF-8 stays valid.
	i := len(text) - 1
	for j := 0; j < utf8.UTFMax-1 && i > 0 && !utf8.RuneStart(text[i]); j++ {
		i--
	}
	if i >= 0 && !utf8.FullRune(text[i:]) {
		text = text[:i]
	}
	return text, true
}
