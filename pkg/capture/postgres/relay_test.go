package postgres

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/vigil-db/vigil/pkg/capture/decode"
	"github.com/vigil-db/vigil/pkg/event"
)

// chunk is one read by the recording relay: what a capture hook would see.
type chunk struct {
	conn       int
	fromClient bool
	data       []byte
	at         time.Time
}

// relay is a recording TCP proxy between test clients and a real server. Each read is
// logged before it is forwarded, so a response is always logged after its request.
type relay struct {
	ln       net.Listener
	upstream string
	mu       sync.Mutex
	chunks   []chunk
	nconn    int
	wg       sync.WaitGroup
}

func startRelay(t testing.TB, upstream string) *relay {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("relay listen: %v", err)
	}
	r := &relay{ln: ln, upstream: upstream}
	go r.serve()
	t.Cleanup(func() { ln.Close() })
	return r
}

func (r *relay) port() int { return r.ln.Addr().(*net.TCPAddr).Port }

func (r *relay) serve() {
	for {
		c, err := r.ln.Accept()
		if err != nil {
			return
		}
		u, err := net.Dial("tcp", r.upstream)
		if err != nil {
			c.Close()
			continue
		}
		r.mu.Lock()
		id := r.nconn
		r.nconn++
		r.mu.Unlock()
		r.wg.Add(2)
		go r.pipe(id, true, c, u)
		go r.pipe(id, false, u, c)
	}
}

func (r *relay) pipe(id int, fromClient bool, src, dst net.Conn) {
	defer r.wg.Done()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			r.mu.Lock()
			r.chunks = append(r.chunks, chunk{id, fromClient, append([]byte(nil), buf[:n]...), time.Now()})
			r.mu.Unlock()
			if _, werr := dst.Write(buf[:n]); werr != nil {
				break
			}
		}
		if err != nil {
			break
		}
	}
	// Pass the close on, so that the other direction ends too.
	if tc, ok := dst.(*net.TCPConn); ok {
		tc.CloseWrite()
	}
	src.Close()
}

// recording waits for every relayed connection to end and returns what was seen.
func (r *relay) recording() []chunk {
	r.wg.Wait()
	r.mu.Lock()
	defer r.mu.Unlock()
	out := r.chunks
	r.chunks = nil
	return out
}

// decode feeds a recording into one Session per connection and returns each connection's
// events.
func decodeRecording(cfg Config, rec []chunk) (map[int][]*event.Event, decode.Stats) {
	out := map[int][]*event.Event{}
	sessions := map[int]*Session{}
	var last time.Time
	for _, c := range rec {
		s := sessions[c.conn]
		if s == nil {
			id := c.conn
			s = NewSession(cfg, func(e *event.Event) { out[id] = append(out[id], e) })
			sessions[c.conn] = s
		}
		s.Feed(c.fromClient, c.data, c.at)
		last = c.at
	}
	var st decode.Stats
	for _, s := range sessions {
		s.Close(last)
		st.Add(s.Stats())
	}
	return out, st
}

// Recordings are stored as records of: direction (1 = client), connection (uint16),
// time (unix ns, uint64), length (uint32), bytes.

func writeRecording(path string, rec []chunk) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(f)
	for _, c := range rec {
		var h [15]byte
		if c.fromClient {
			h[0] = 1
		}
		binary.BigEndian.PutUint16(h[1:], uint16(c.conn))
		binary.BigEndian.PutUint64(h[3:], uint64(c.at.UnixNano()))
		binary.BigEndian.PutUint32(h[11:], uint32(len(c.data)))
		w.Write(h[:])
		w.Write(c.data)
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func readRecording(path string) ([]chunk, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	r := bufio.NewReader(f)
	var out []chunk
	for {
		var h [15]byte
		if _, err := io.ReadFull(r, h[:]); err != nil {
			if errors.Is(err, io.EOF) {
				return out, nil
			}
			return nil, fmt.Errorf("reading %s: %w", path, err)
		}
		c := chunk{fromClient: h[0] == 1, conn: int(binary.BigEndian.Uint16(h[1:])),
			at: time.Unix(0, int64(binary.BigEndian.Uint64(h[3:]))), data: make([]byte, binary.BigEndian.Uint32(h[11:]))}
		if _, err := io.ReadFull(r, c.data); err != nil {
			return nil, fmt.Errorf("reading %s: %w", path, err)
		}
		out = append(out, c)
	}
}
