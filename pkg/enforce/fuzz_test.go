package enforce

import (
	"encoding/binary"
	"io"
	"net"
	"os"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
)

// startupBytes is a StartupMessage for user postgres, database postgres.
func startupBytes(t testing.TB) []byte {
	b, err := (&pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersionNumber,
		Parameters: map[string]string{"user": "postgres", "database": "postgres"}}).Encode(nil)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// readUntilReady reads server messages until ReadyForQuery.
func readUntilReady(c net.Conn) error {
	var hdr [5]byte
	for {
		if _, err := io.ReadFull(c, hdr[:]); err != nil {
			return err
		}
		body := make([]byte, binary.BigEndian.Uint32(hdr[1:])-4)
		if _, err := io.ReadFull(c, body); err != nil {
			return err
		}
		if hdr[0] == 'Z' {
			return nil
		}
	}
}

// keepFuzzPipesFromChildren marks every file descriptor above stderr close-on-exec. A fuzz
// worker talks to its coordinator over pipes it inherited (fds 3 and up, not close-on-exec),
// and PostgreSQL, started by pg_ctl from this process, inherited them as well. Whenever the
// coordinator stops a worker (at the end of -fuzztime, when minimizing an input runs out of
// time, after a crash) it reads the worker's pipe to EOF, which never came while the server
// held it open: the whole run hung instead of ending or reporting the crash.
func keepFuzzPipesFromChildren(tb testing.TB) {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		tb.Fatal(err)
	}
	for _, e := range ents {
		if fd, err := strconv.Atoi(e.Name()); err == nil && fd > 2 {
			syscall.CloseOnExec(fd)
		}
	}
}

// FuzzClientStream sends arbitrary bytes from a logged-in client. Whatever they are, the
// proxy must close (or keep) that one connection and go on serving others.
func FuzzClientStream(f *testing.F) {
	f.Add([]byte("Q\x00\x00\x00\x0dSELECT 1\x00"))
	f.Add([]byte("Q\x00\x00\x00\x04"))
	f.Add([]byte("P\x00\x00\x00\x10\x00SELECT 1\x00\x00\x01S\x00\x00\x00\x04"))
	f.Add([]byte("Z\xff\xff\xff\xff"))
	f.Add([]byte("d\x00\x00\x00\x08abcdc\x00\x00\x00\x04"))
	f.Add([]byte("F\x00\x00\x00\x0e\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00"))
	f.Add([]byte("E\x00\x00\x00\x09\x00\x00\x00\x00\x00S\x00\x00\x00\x04"))
	f.Add([]byte("P\x00\x00\x00\x15\x00SELECT $1\x00\x00\x01\x00\x00\x00\x17" +
		"B\x00\x00\x00\x14\x00\x00\x00\x01\x00\x01\x00\x01\x00\x00\x00\x04\x00\x00\x00\x07" +
		"E\x00\x00\x00\x09\x00\x00\x00\x00\x00S\x00\x00\x00\x04"))
	keepFuzzPipesFromChildren(f)
	pg := startPG(f)
	h := startOn(f, pg, recordParams) // as the agent runs it by default (audit.record_params)
	start := startupBytes(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := net.Dial("tcp", h.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Write(start); err != nil {
			t.Fatal(err)
		}
		if err := readUntilReady(c); err != nil {
			t.Fatalf("login: %v", err)
		}
		c.Write(data)
		c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		io.Copy(io.Discard, c)
		// The proxy still serves a new session.
		c2, err := net.Dial("tcp", h.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c2.Close()
		c2.SetDeadline(time.Now().Add(5 * time.Second))
		c2.Write(start)
		if err := readUntilReady(c2); err != nil {
			t.Fatalf("proxy no longer serves after %q: %v", data, err)
		}
	})
}

// FuzzServerStream puts a hostile upstream behind the proxy: it answers the startup with
// arbitrary bytes. The client's connection ends with an error; the proxy goes on.
func FuzzServerStream(f *testing.F) {
	f.Add([]byte("R\x00\x00\x00\x08\x00\x00\x00\x00Z\x00\x00\x00\x05I"))
	f.Add([]byte("R\x00\x00\x00\x08\x00\x00\x00\x00Z\x00\x00\x00\x05ID\x00\x00\x00\x06\x00\x01"))
	f.Add([]byte("R\x00\x00\x00\x08\x00\x00\x00\x00Z\x00\x00\x00\x05IT\xff\xff\xff\xff"))
	f.Add([]byte("R\x00\x00\x00\x0c\x00\x00\x00\x0aXX\x00\x00"))
	f.Add([]byte("K\x00\x00\x00\x04"))
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		f.Fatal(err)
	}
	defer l.Close()
	payload := make(chan []byte, 1)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			data := <-payload
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(2 * time.Second))
				var hdr [4]byte
				if _, err := io.ReadFull(c, hdr[:]); err != nil {
					return
				}
				io.CopyN(io.Discard, c, int64(binary.BigEndian.Uint32(hdr[:]))-4)
				c.Write(data)
				// Answer whatever the proxy sends next (a query) with the same bytes.
				buf := make([]byte, 4096)
				c.Read(buf)
				c.Write(data)
			}()
		}
	}()
	h := startOnAddr(f, l.Addr().String())
	start := startupBytes(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		payload <- data
		c, err := net.Dial("tcp", h.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		c.Write(start)
		c.Write([]byte("Q\x00\x00\x00\x0dSELECT 1\x00"))
		c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		io.Copy(io.Discard, c)
		select {
		case <-h.srv.Ready():
		default:
			t.Fatal("server gone")
		}
	})
}
