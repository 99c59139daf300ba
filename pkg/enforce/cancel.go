package enforce

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"sync"

	"github.com/jackc/pgx/v5/pgproto3"
)

// The proxy hands each client its own BackendKeyData instead of the server's: the key then says
// which upstream (and which real backend key) a CancelRequest is for, and a client can only
// cancel its own session's statements.

// cancelTarget is where a proxied key's CancelRequest goes.
type cancelTarget struct {
	upstream  string
	pid       uint32
	secretKey []byte
}

// proxyKey is the key the client sees.
type proxyKey struct {
	pid    uint32
	secret uint32
}

type cancelKeys struct {
	mu   sync.Mutex
	keys map[proxyKey]cancelTarget
}

func newCancelKeys() *cancelKeys { return &cancelKeys{keys: make(map[proxyKey]cancelTarget)} }

// register stores t under a fresh random key and returns it.
func (k *cancelKeys) register(t cancelTarget) (proxyKey, error) {
	var b [8]byte
	k.mu.Lock()
	defer k.mu.Unlock()
	for {
		if _, err := rand.Read(b[:]); err != nil {
			return proxyKey{}, fmt.Errorf("generating a cancel key: %w", err)
		}
		// A positive pid: some clients print or store it as a signed int.
		key := proxyKey{pid: binary.BigEndian.Uint32(b[:4]) & 0x7fffffff, secret: binary.BigEndian.Uint32(b[4:])}
		if key.pid == 0 {
			continue
		}
		if _, taken := k.keys[key]; !taken {
			k.keys[key] = t
			return key, nil
		}
	}
}

func (k *cancelKeys) remove(key proxyKey) {
	k.mu.Lock()
	delete(k.keys, key)
	k.mu.Unlock()
}

func (k *cancelKeys) lookup(key proxyKey) (cancelTarget, bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	t, ok := k.keys[key]
	return t, ok
}

// forwardCancel sends the real CancelRequest for a client's key to its upstream. As on a
// PostgreSQL server, the client gets no answer either way.
func (s *Server) forwardCancel(ctx context.Context, req *pgproto3.CancelRequest) {
	if len(req.SecretKey) != 4 {
		s.m.cancels.WithLabelValues("unknown_key").Inc()
		return
	}
	key := proxyKey{pid: req.ProcessID, secret: binary.BigEndian.Uint32(req.SecretKey)}
	t, ok := s.keys.lookup(key)
	if !ok {
		s.m.cancels.WithLabelValues("unknown_key").Inc()
		s.log.Info("cancel request with an unknown key ignored")
		return
	}
	if withdraw, ok := s.holds.Load(key); ok {
		// The statement the client waits for is held here, not running on the server.
		withdraw.(context.CancelCauseFunc)(errClientCancel)
		s.m.cancels.WithLabelValues("withdrew_approval").Inc()
		return
	}
	if err := s.sendCancel(ctx, t); err != nil {
		s.m.cancels.WithLabelValues("failed").Inc()
		s.log.Warn("forwarding cancel request", "upstream", t.upstream, "backend_pid", t.pid, "err", err)
		return
	}
	s.m.cancels.WithLabelValues("forwarded").Inc()
}

func (s *Server) sendCancel(ctx context.Context, t cancelTarget) error {
	c, err := s.dialUpstream(ctx, t.upstream)
	if err != nil {
		return err
	}
	defer c.Close()
	if s.cfg.UpstreamTLS != nil {
		if c, err = s.upstreamTLS(c, t.upstream); err != nil {
			return err
		}
	}
	msg, err := encode(nil, &pgproto3.CancelRequest{ProcessID: t.pid, SecretKey: t.secretKey})
	if err != nil {
		return err
	}
	if _, err := c.Write(msg); err != nil {
		return fmt.Errorf("sending cancel request: %w", err)
	}
	// Wait for the server to close: returning earlier could let the client's next statement
	// overtake the cancel.
	var one [1]byte
	_, _ = c.Read(one[:])
	return nil
}
