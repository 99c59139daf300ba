package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"

	"github.com/vigil-db/vigil/pkg/config"
	"github.com/vigil-db/vigil/pkg/steer"
)

// steering is the agent's use of pkg/steer: the configured selectors flag workloads, and
// each proxy's upstream routes into its listener once that listener accepts.
type steering struct {
	s     *steer.Steerer
	log   *slog.Logger
	names map[uint32]string // selector id → its name in the config

	mu     sync.Mutex
	routes []netip.AddrPort // servers routed so far, for the log
}

// startSteering loads the steering programs and flags what cfg.Steer selects; nothing is
// steered until addRoutes. Nil when no selector is configured.
func startSteering(cfg *config.Config, log *slog.Logger) (*steering, error) {
	if len(cfg.Steer) == 0 {
		return nil, nil
	}
	if len(cfg.Proxies) == 0 {
		return nil, errors.New("steering moves connections into a proxy, and none is configured (proxies in the config, or --proxy LISTEN=UPSTREAM)")
	}
	s, err := steer.Load(steer.Config{}, log)
	if err != nil {
		return nil, err
	}
	st := &steering{s: s, log: log, names: map[uint32]string{}}
	for i, sel := range cfg.Steer {
		id := uint32(i + 1)
		st.names[id] = sel.Name
		switch {
		case sel.Cgroup != "":
			err = s.FlagCgroup(sel.Cgroup, id)
		case sel.Exe != "":
			err = s.FlagExe(sel.Exe, id)
		case sel.UID != nil:
			err = s.FlagUID(*sel.UID, id)
		}
		if err != nil {
			s.Close()
			return nil, fmt.Errorf("steer[%d] (%s): %w", i, sel.Name, err)
		}
	}
	return st, nil
}

// addRoutes steers flagged connections to px's upstream into its listener at listen (the
// address it is bound to). Clients that reach the same server through another of the
// host's addresses are not steered: list that address as an upstream of its own.
func (st *steering) addRoutes(ctx context.Context, px config.Proxy, listen net.Addr) error {
	la, ok := addrPort(listen)
	if !ok {
		return fmt.Errorf("proxy %s: not a TCP listener", px.Listen)
	}
	host, port, err := net.SplitHostPort(px.Upstream)
	if err != nil {
		return fmt.Errorf("proxy upstream %q: %w", px.Upstream, err)
	}
	addrs, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return fmt.Errorf("proxy upstream %q: %w", px.Upstream, err)
	}
	var p uint16
	if _, err := fmt.Sscan(port, &p); err != nil {
		return fmt.Errorf("proxy upstream %q: port: %w", px.Upstream, err)
	}
	for _, a := range addrs {
		a = a.Unmap()
		proxy := la
		if la.Addr().IsUnspecified() {
			// A listener on every address: steer to the loopback of the server's family.
			lo := netip.IPv6Loopback()
			if a.Is4() {
				lo = netip.AddrFrom4([4]byte{127, 0, 0, 1})
			}
			proxy = netip.AddrPortFrom(lo, la.Port())
		}
		server := netip.AddrPortFrom(a, p)
		if err := st.s.AddRoute(server, proxy); err != nil {
			return err
		}
		st.mu.Lock()
		st.routes = append(st.routes, server)
		st.mu.Unlock()
		st.log.Info("steering flagged connections", "server", server.String(), "proxy", proxy.String())
	}
	return nil
}

// origin says whether a connection the proxy accepted was steered, and if so what the
// kernel recorded about its client and which selector steered it.
func (st *steering) origin(c net.Conn) (steer.Origin, string, bool) {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return steer.Origin{}, "", false
	}
	o, ok, err := st.s.Origin(tc)
	if err != nil {
		st.log.Warn("reading a steered connection's origin", "client", c.RemoteAddr().String(), "err", err)
		return steer.Origin{}, "", false
	}
	if !ok {
		return steer.Origin{}, "", false
	}
	return o, st.names[o.Selector], true
}

// close stops steering: from here on, connections go where their clients dial.
func (st *steering) close() {
	if err := st.s.Close(); err != nil {
		st.log.Warn("detaching the steering programs", "err", err)
	}
}
