// Package ebpf loads Vigil's kernel capture programs (bpf/) and delivers what they see:
// plaintext TCP segments of database ports (TCX), TLS plaintext from PostgreSQL's
// be_tls_read/be_tls_write (uprobes), Unix-socket data of watched server processes (syscall
// tracepoints, switchable at runtime because they tax every syscall on the host), and the
// local process behind each connection to a database port (sock:inet_sock_set_state).
//
// Records arrive through one ring buffer with batched wakeups and are handed, in order, to a
// Handler on the goroutine that calls Run. Nothing is lost silently: records the kernel could
// not write are counted per hook (Stats), TCP sequence numbers show which bytes of a flow are
// missing, and TLS/Unix records carry a per-stream byte offset for the same purpose.
//
// Regenerate the kernel objects with `go generate ./pkg/capture/ebpf` (see gen.go).
package ebpf
