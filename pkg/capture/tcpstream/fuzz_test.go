package tcpstream

import (
	"testing"
	"time"
)

// source is the byte at stream offset p: any delivered byte can be checked against it.
func source(p uint32) byte { return byte(p*7 + p>>8 + 3) }

// FuzzStream feeds chunks of a known stream at arbitrary offsets, sizes, flags and times
// (out of order, duplicated, overlapping, wrapping). Every byte delivered must be the
// source byte at its position, gaps must account for the rest, and memory must stay bounded.
func FuzzStream(f *testing.F) {
	f.Add(uint32(1000), []byte{0, 10, 0, 20, 10, 5, 5, 5, 3, 40, 1})
	f.Add(uint32(0xfffffff0), []byte{8, 30, 0, 8, 0xff, 2, 40, 40})
	f.Add(uint32(7), []byte{0x80, 4, 0x40, 2, 0x20, 200, 1, 1})
	f.Fuzz(func(t *testing.T, isn uint32, script []byte) {
		const maxBuf = 64
		var pos uint32 // next stream offset the consumer expects
		started := false
		var bad string
		s := NewStream(Config{MaxBuffered: maxBuf, HoleTimeout: time.Millisecond},
			func(b []byte, _ time.Time) {
				for _, c := range b {
					if c != source(pos) && bad == "" {
						bad = "wrong byte delivered"
					}
					pos++
				}
			},
			func(n int, _ time.Time) { pos += uint32(n) })
		ts := time.Unix(0, 0)
		for i := 0; i+1 < len(script); i += 2 {
			a, b := script[i], script[i+1]
			off := uint32(a&0x3f) * 3 // stream offset of the chunk
			n := uint32(b)
			var flags Flags
			switch a >> 6 {
			case 1:
				flags = FIN
			case 2:
				ts = ts.Add(2 * time.Millisecond)
			case 3:
				if i == 0 {
					flags = SYN
				}
			}
			payload := make([]byte, n)
			for j := range payload {
				payload[j] = source(off + uint32(j))
			}
			if !started && (n > 0 || flags != 0) {
				// The consumer's offset starts where the stream starts: at the first chunk
				// when joined mid-stream.
				started = true
				pos = off
				if flags&SYN != 0 {
					pos = 0
					off = 0
					for j := range payload {
						payload[j] = source(uint32(j))
					}
					s.Add(isn-1, SYN, payload, ts)
					continue
				}
			}
			s.Add(isn+off, flags, payload, ts)
			if s.Buffered() > maxBuf {
				t.Fatalf("holding %d bytes, bound %d", s.Buffered(), maxBuf)
			}
		}
		if bad != "" {
			t.Fatal(bad)
		}
	})
}
