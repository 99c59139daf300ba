// Package health serves the agent's operational endpoints: Prometheus metrics on /metrics
// and readiness on /readyz, which answers 200 only when every component that must be up
// (capture hooks, proxy listeners, the store) says so, and lists each component's state
// and the hooks that attached, so an operator sees at a glance what degraded.
package health

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Component is one thing readiness depends on.
type Component struct {
	// Ready: the component does its job. Required components that are not ready make
	// /readyz answer 503.
	Ready bool `json:"ready"`
	// Required: the agent is not ready without it.
	Required bool `json:"required"`
	// Detail says what degraded, or what is attached.
	Detail string `json:"detail,omitempty"`
	// Items lists sub-parts, e.g. the hooks with their state.
	Items []Item `json:"items,omitempty"`
}

// Item is a sub-part of a component (a hook, a listener).
type Item struct {
	Name  string `json:"name"`
	OK    bool   `json:"ok"`
	Error string `json:"error,omitempty"`
}

// Status collects component states. Safe for concurrent use.
type Status struct {
	mu         sync.Mutex
	components map[string]Component
}

// NewStatus returns an empty status.
func NewStatus() *Status { return &Status{components: map[string]Component{}} }

// Set records a component's state.
func (s *Status) Set(name string, c Component) {
	s.mu.Lock()
	s.components[name] = c
	s.mu.Unlock()
}

// Snapshot returns whether every required component is ready, and all components.
func (s *Status) Snapshot() (bool, map[string]Component) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ready := len(s.components) > 0
	out := make(map[string]Component, len(s.components))
	for n, c := range s.components {
		out[n] = c
		if c.Required && !c.Ready {
			ready = false
		}
	}
	return ready, out
}

// Server serves /metrics and /readyz.
type Server struct {
	srv *http.Server
	ln  net.Listener
	log *slog.Logger
}

// Option configures the server.
type Option func(*http.ServeMux)

// WithPprof serves Go's profiler under /debug/pprof/, for finding where the agent's CPU
// goes on a live host. Off by default: profiles reveal internals and cost CPU.
func WithPprof() Option {
	return func(mux *http.ServeMux) {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
}

// Listen binds addr now, so that a busy port is a start-up error, not a log line later.
func Listen(addr string, gatherer prometheus.Gatherer, status *Status, log *slog.Logger, opts ...Option) (*Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics listener on %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(gatherer, promhttp.HandlerOpts{ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}))
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) {
		ready, comps := status.Snapshot()
		names := make([]string, 0, len(comps))
		for n := range comps {
			names = append(names, n)
		}
		sort.Strings(names)
		w.Header().Set("Content-Type", "application/json")
		if !ready {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		_ = json.NewEncoder(w).Encode(struct {
			Ready      bool                 `json:"ready"`
			Components map[string]Component `json:"components"`
		}{ready, comps})
	})
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	for _, o := range opts {
		o(mux)
	}
	return &Server{srv: &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}, ln: ln, log: log}, nil
}

// Addr is the bound address.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Close releases the listener of a server that will not Serve (a start-up that failed).
func (s *Server) Close() error { return s.ln.Close() }

// Serve serves until ctx is done.
func (s *Server) Serve(ctx context.Context) error {
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = s.srv.Shutdown(sctx)
	}()
	if err := s.srv.Serve(s.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("metrics server: %w", err)
	}
	return nil
}
