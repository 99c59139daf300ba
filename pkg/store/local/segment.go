package local

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/vigil-db/vigil/pkg/event"
)

// Segments are named by the seq of their first event, zero-padded so that the lexical order
// of the names is the seq order.
const (
	segmentSuffix = ".jsonl"
	segmentDigits = 20
)

// segment is one file of the store. last is the seq of its last complete event (0 while it
// holds none).
type segment struct {
	first uint64
	last  uint64
	path  string
	size  int64
	// index is a sparse seq index (writer only), kept while appending and built on the
	// first seek into a segment written before this process opened the store; indexed
	// says it covers the segment from its start.
	index   []indexEntry
	indexed bool
}

func segmentName(first uint64) string {
	return fmt.Sprintf("%0*d%s", segmentDigits, first, segmentSuffix)
}

// parseSegmentName returns the first seq a segment file name encodes.
func parseSegmentName(name string) (uint64, bool) {
	digits, ok := strings.CutSuffix(name, segmentSuffix)
	if !ok || len(digits) != segmentDigits {
		return 0, false
	}
	n, err := strconv.ParseUint(digits, 10, 64)
	return n, err == nil
}

// listSegments returns the segment files in dir in seq order, with their current sizes.
// Other files (the lock, anything an operator left) are ignored.
func listSegments(dir string) ([]segment, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("listing segments: %w", err)
	}
	var segs []segment
	for _, ent := range entries {
		first, ok := parseSegmentName(ent.Name())
		if !ok || !ent.Type().IsRegular() {
			continue
		}
		info, err := ent.Info()
		if errors.Is(err, os.ErrNotExist) {
			continue // deleted by the writer's retention since ReadDir
		}
		if err != nil {
			return nil, fmt.Errorf("listing segments: %w", err)
		}
		segs = append(segs, segment{first: first, path: filepath.Join(dir, ent.Name()), size: info.Size()})
	}
	slices.SortFunc(segs, func(a, b segment) int {
		switch {
		case a.first < b.first:
			return -1
		case a.first > b.first:
			return 1
		}
		return 0
	})
	return segs, nil
}

var seqKey = []byte(`"seq":`)

// lineSeq reads the seq of an encoded event without decoding it. It is exact because the
// encoding is deterministic: "seq" is a top-level field that comes after only plain string
// fields, in which a quote is always escaped, so its first occurrence is the real one.
func lineSeq(line []byte) (uint64, bool) {
	i := bytes.Index(line, seqKey)
	if i < 0 {
		return 0, false
	}
	rest := line[i+len(seqKey):]
	n := 0
	for n < len(rest) && rest[n] >= '0' && rest[n] <= '9' {
		n++
	}
	seq, err := strconv.ParseUint(string(rest[:n]), 10, 64)
	return seq, err == nil
}

// lineReader yields the lines of one segment, tolerating lines longer than its buffer.
type lineReader struct {
	r    *bufio.Reader
	buf  []byte
	off  int64 // offset of the line last returned
	next int64 // offset of the line after it
}

// newLineReader reads lines from r, whose first byte is at offset start of the segment.
func newLineReader(r io.Reader, start int64) *lineReader {
	return &lineReader{r: bufio.NewReaderSize(r, 256<<10), next: start}
}

// line returns the next line without its newline. complete is false for a final line
// that has no newline (a write in progress, or torn). At the end it returns io.EOF.
func (lr *lineReader) line() (line []byte, complete bool, err error) {
	lr.buf = lr.buf[:0]
	for {
		chunk, err := lr.r.ReadSlice('\n')
		switch {
		case err == nil:
			if len(lr.buf) > 0 {
				chunk = append(lr.buf, chunk...)
				lr.buf = chunk
			}
			lr.off, lr.next = lr.next, lr.next+int64(len(chunk))
			return chunk[:len(chunk)-1], true, nil
		case errors.Is(err, bufio.ErrBufferFull):
			lr.buf = append(lr.buf, chunk...)
		case errors.Is(err, io.EOF):
			lr.buf = append(lr.buf, chunk...)
			if len(lr.buf) == 0 {
				return nil, false, io.EOF
			}
			lr.off, lr.next = lr.next, lr.next+int64(len(lr.buf))
			return lr.buf, false, nil
		default:
			return nil, false, err
		}
	}
}

// indexEvery is the spacing of a segment's sparse seq index: a read after a seq starts
// at most this many bytes before it instead of at the segment's start.
const indexEvery = 256 << 10

// indexEntry says that the line at off holds seq.
type indexEntry struct {
	seq uint64
	off int64
}

// seekOffset returns where to start reading sg for the events after seq: the last
// indexed line at or before seq+1.
func seekOffset(index []indexEntry, seq uint64) int64 {
	i, _ := slices.BinarySearchFunc(index, seq+2, func(e indexEntry, target uint64) int {
		return cmpUint(e.seq, target)
	})
	if i == 0 {
		return 0
	}
	return index[i-1].off
}

func cmpUint(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// extendIndex adds an entry for the line at off if it lies far enough past the last.
func extendIndex(index []indexEntry, seq uint64, off int64) []indexEntry {
	last := int64(0)
	if len(index) > 0 {
		last = index[len(index)-1].off
	}
	if off-last >= indexEvery {
		index = append(index, indexEntry{seq, off})
	}
	return index
}

// buildIndex scans the first size bytes of a segment for its sparse index.
func buildIndex(path string, size int64) ([]indexEntry, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var index []indexEntry
	lr := newLineReader(io.LimitReader(f, size), 0)
	for {
		line, complete, err := lr.line()
		if errors.Is(err, io.EOF) || err == nil && !complete {
			return index, nil
		}
		if err != nil {
			return nil, err
		}
		if seq, ok := lineSeq(line); ok {
			index = extendIndex(index, seq, lr.off)
		}
	}
}

// tail describes the end of a segment as recovery sees it.
type tail struct {
	// end is the offset after the last complete, decodable line: what the segment keeps.
	end int64
	// last is the last event before end; nil when the segment holds none.
	last *event.Event
	// cut lists what lies beyond end, last first: a torn final line and any complete lines
	// at the end that do not decode (an unsynced write that a crash left half on disk).
	cut []cutLine
}

type cutLine struct {
	offset int64
	bytes  int64
	torn   bool // no newline: the write did not finish
	err    error
}

// scanTail finds the last complete, decodable line of f (size bytes long) by reading
// backwards from the end, so that recovery costs the size of the last line, not of the
// segment.
func scanTail(f *os.File, size int64) (tail, error) {
	t := tail{end: size}
	for t.end > 0 {
		// Find the newline that ends the kept region and the one before it.
		nl, err := lastNewline(f, t.end)
		if err != nil {
			return t, err
		}
		if nl+1 < t.end {
			// Bytes after the last newline: a final line that never got its newline.
			t.cut = append(t.cut, cutLine{offset: nl + 1, bytes: t.end - nl - 1, torn: true})
			t.end = nl + 1
			continue
		}
		start, err := lastNewline(f, nl)
		if err != nil {
			return t, err
		}
		start++ // -1 (none) becomes 0
		line := make([]byte, nl-start)
		if _, err := f.ReadAt(line, start); err != nil {
			return t, fmt.Errorf("reading last line at offset %d: %w", start, err)
		}
		e, err := decodeLine(line)
		if err != nil {
			t.cut = append(t.cut, cutLine{offset: start, bytes: nl + 1 - start, err: err})
			t.end = start
			continue
		}
		t.last = e
		return t, nil
	}
	return t, nil
}

// lastNewline returns the offset of the last '\n' before offset end, or -1.
func lastNewline(f *os.File, end int64) (int64, error) {
	buf := make([]byte, 64<<10)
	for end > 0 {
		n := int64(len(buf))
		if n > end {
			n = end
		}
		start := end - n
		if _, err := f.ReadAt(buf[:n], start); err != nil {
			return 0, fmt.Errorf("reading at offset %d: %w", start, err)
		}
		if i := bytes.LastIndexByte(buf[:n], '\n'); i >= 0 {
			return start + int64(i), nil
		}
		end = start
	}
	return -1, nil
}

// lineNumber returns the 1-based number of the line that starts at offset, for messages
// that must name file and line. Only error paths pay for the scan.
func lineNumber(f *os.File, offset int64) int {
	r := bufio.NewReader(io.NewSectionReader(f, 0, offset))
	n := 1
	buf := make([]byte, 64<<10)
	for {
		k, err := r.Read(buf)
		n += bytes.Count(buf[:k], []byte{'\n'})
		if err != nil {
			return n
		}
	}
}
