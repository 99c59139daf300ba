package ebpf

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
)

// AttachPostgresTLS captures TLS plaintext of the watched PostgreSQL servers (WatchProcess)
// running binPath (for Debian, /usr/lib/postgresql/15/bin/postgres; a container's binary
// through /proc/PID/root/...). It needs the exported be_tls_read and be_tls_write. On failure
// nothing of this binary stays attached, the error (for example a server built without
// OpenSSL: the symbol is missing) is returned for the caller to log, and Hooks lists it.
// Attaching a binary twice is a no-op.
func (t *Tracer) AttachPostgresTLS(binPath string) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return errClosed
	}
	if hooks, ok := t.tls[binPath]; ok && hooks[0].status.Attached {
		return nil
	} else if ok {
		t.removeHooks(hooks)
		delete(t.tls, binPath)
	}
	probes := []struct {
		symbol string
		ret    bool
		prog   *ebpf.Program
	}{
		{"be_tls_read", false, t.objs.PgTlsReadEnter},
		{"be_tls_read", true, t.objs.PgTlsReadExit},
		{"be_tls_write", false, t.objs.PgTlsWriteEnter},
		{"be_tls_write", true, t.objs.PgTlsWriteExit},
	}
	var hooks []*hook
	var failed error
	ex, err := link.OpenExecutable(binPath)
	if err != nil {
		failed = fmt.Errorf("opening PostgreSQL binary %s: %w", binPath, err)
	}
	for _, p := range probes {
		kind := "uprobe"
		if p.ret {
			kind = "uretprobe"
		}
		hk := &hook{status: HookStatus{Name: fmt.Sprintf("%s/%s:%s", kind, binPath, p.symbol)}}
		hooks = append(hooks, hk)
		if failed != nil {
			hk.setErr(failed)
			continue
		}
		if p.ret {
			hk.link, err = ex.Uretprobe(p.symbol, p.prog, nil)
		} else {
			hk.link, err = ex.Uprobe(p.symbol, p.prog, nil)
		}
		if err != nil {
			if errors.Is(err, link.ErrNoSymbol) {
				err = fmt.Errorf("%s does not export %s (not a PostgreSQL server built with OpenSSL?): %w", binPath, p.symbol, err)
			}
			failed = fmt.Errorf("attaching %s to %s:%s: %w", kind, binPath, p.symbol, err)
			hk.setErr(failed)
			continue
		}
		hk.status.Attached = true
	}
	if failed != nil {
		// All or nothing: half of a read/write pair would produce nothing but confusion.
		for _, hk := range hooks {
			if hk.link != nil {
				_ = hk.link.Close()
				hk.link = nil
			}
			hk.setErr(failed)
		}
	}
	t.tls[binPath] = hooks
	t.hooks = append(t.hooks, hooks...)
	if failed != nil {
		return failed
	}
	t.log.Info("ebpf TLS capture attached", "binary", binPath)
	return nil
}
