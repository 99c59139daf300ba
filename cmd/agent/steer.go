package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/vigil-db/vigil/pkg/bpffs"
	"github.com/vigil-db/vigil/pkg/capture"
	"github.com/vigil-db/vigil/pkg/config"
	"github.com/vigil-db/vigil/pkg/event"
	"github.com/vigil-db/vigil/pkg/identity"
	"github.com/vigil-db/vigil/pkg/policy"
	"github.com/vigil-db/vigil/pkg/steer"
)

// steering is the agent's use of pkg/steer: the configured selectors flag workloads, and
// each proxy's upstream routes into its listener once that listener accepts.
type steering struct {
	s     *steer.Steerer
	flags *steer.Flags
	log   *slog.Logger
	sink  event.Sink

	mu     sync.Mutex
	routes []netip.AddrPort // servers routed so far, for the log
}

// flagsFile holds, in the state directory, the flags set at run time (vigil flags add),
// so that they outlive a restart until they expire.
const flagsFile = "flags.json"

// startSteering loads the steering programs and flags what cfg.Steer selects and what the
// state directory's flags file holds; nothing is steered until addRoutes. Every flag that
// is added, removed or expires becomes an event on sink. Steering needs a proxy: nil
// without one. With proxies but no configured selector it is loaded for the flags that
// operators set at run time, and failing to load it is a warning, not fatal.
func startSteering(cfg *config.Config, sink event.Sink, log *slog.Logger, prev *capture.PreviousRun) (*steering, error) {
	explicit := len(cfg.Steer) > 0
	if len(cfg.Proxies) == 0 {
		if explicit {
			return nil, errors.New("steering moves connections into a proxy, and none is configured (proxies in the config, or --proxy LISTEN=UPSTREAM)")
		}
		return nil, nil
	}
	pins, err := steerPinDirFor(cfg.StateDir)
	if err != nil {
		return nil, err
	}
	sc := steer.Config{}
	if cfg.SteerFail == config.SteerFailClosed {
		sc.PinDir = pins
	} else if _, err := os.Stat(pins); err == nil {
		// An earlier agent failed closed; this one fails open, so its hooks must go.
		if err := bpffs.Unpin(pins); err != nil {
			log.Error("removing the steering an earlier agent left pinned: its hooks may still send flagged workloads to a dead port", "pin_dir", pins, "err", err)
		} else {
			log.Info("removed the steering an earlier agent left pinned (steer_fail is open)", "pin_dir", pins)
		}
	}
	s, err := steer.Load(sc, log)
	if err != nil {
		if explicit {
			return nil, err
		}
		log.Warn("steering is unavailable: workloads cannot be flagged at run time", "err", err)
		return nil, nil
	}
	path := filepath.Join(cfg.StateDir, flagsFile)
	st := &steering{s: s, log: log, sink: sink}
	st.flags = steer.NewFlags(s, path, st.record)
	for i, sel := range cfg.Steer {
		if !sel.Workload.IsZero() {
			continue // followWorkloads flags the containers it selects as they come and go
		}
		f := steer.Flag{Name: sel.Name, Origin: steer.OriginConfig, By: "config",
			Selector: steer.Selector{Cgroup: sel.Cgroup, Exe: sel.Exe, UID: sel.UID, Source: sel.Source}}
		if _, err := st.flags.Add(f); err != nil {
			s.Close()
			return nil, fmt.Errorf("steer[%d] (%s): %w", i, sel.Name, err)
		}
	}
	if err := st.flags.Load(); err != nil {
		// A flag that cannot be restored (its cgroup is gone) must not stop the others.
		log.Error("restoring flags set at run time", "file", path, "err", err)
	}
	st.recordDowntime(prev, cfg.SteerFail, time.Now())
	return st, nil
}

// recordDowntime writes into the trail what flagged workloads met while no agent ran
// after one that did not stop cleanly: their connections went direct, unenforced (fail
// open), or were refused at the dead proxy's port (fail closed). A clean stop is an
// operator's decision, already visible as the agent's own stop.
func (st *steering) recordDowntime(prev *capture.PreviousRun, fail string, now time.Time) {
	flags := st.flags.List()
	if prev == nil || prev.Clean || len(flags) == 0 {
		return
	}
	names := make([]string, len(flags))
	for i, f := range flags {
		names[i] = f.Name
	}
	met := "their connections to governed servers went directly to the servers, unenforced (steer_fail: open); capture, if it was kept across the restart, recorded them"
	if fail == config.SteerFailClosed {
		met = "their connections to governed servers were refused at the proxy's port (steer_fail: closed)"
	}
	st.sink.Emit(&event.Event{Time: now, Type: event.TypeFlag, Detail: fmt.Sprintf(
		"no agent ran from %s to %s (the previous agent, pid %d, exited without a clean stop); while flagged (%s), %s",
		prev.Alive.UTC().Format(time.RFC3339Nano), now.UTC().Format(time.RFC3339Nano), prev.PID, strings.Join(names, ", "), met)})
}

// record writes a flag's change into the trail: who, what, why, until when.
func (st *steering) record(c steer.Change, f steer.Flag, by string) {
	var b strings.Builder
	fmt.Fprintf(&b, "flag %s %s: %s", f.Name, c, f.Selector)
	if by != "" {
		fmt.Fprintf(&b, ", by %s", by)
	}
	if f.Reason != "" {
		fmt.Fprintf(&b, ", reason: %s", f.Reason)
	}
	if c == steer.Added && !f.Until.IsZero() {
		fmt.Fprintf(&b, ", until %s", f.Until.UTC().Format(time.RFC3339))
	}
	st.log.Info("steering flag "+string(c), "flag", f.Name, "selector", f.Selector.String(), "by", by, "until", f.Until)
	st.sink.Emit(&event.Event{Time: time.Now(), Type: event.TypeFlag, Rule: f.Name, Detail: b.String()})
}

// expire removes expired flags until ctx ends.
func (st *steering) expire(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := st.flags.Expire(); err != nil {
				st.log.Error("expiring flags", "err", err)
			}
		}
	}
}

// addRoutes steers flagged connections to px's upstream into its listener l. Local clients
// that reach the same server through another of the host's addresses are not steered: list
// that address as an upstream of its own. Remote clients from flagged sources are, on any of
// the host's addresses, when the upstream is on this host.
func (st *steering) addRoutes(ctx context.Context, px config.Proxy, l net.Listener) error {
	listen := l.Addr()
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
	if tl, ok := l.(*net.TCPListener); ok && len(addrs) > 0 && isLocal(addrs[0].Unmap()) {
		if err := st.s.AddRemoteRoute(p, tl); err != nil {
			return err
		}
		st.log.Info("steering flagged remote clients", "port", p, "proxy", listen.String())
	}
	return nil
}

// isLocal says whether a is one of this host's addresses (loopback included).
func isLocal(a netip.Addr) bool {
	if a.IsLoopback() {
		return true
	}
	ifaddrs, err := net.InterfaceAddrs()
	if err != nil {
		return false
	}
	for _, ia := range ifaddrs {
		if n, ok := ia.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(n.IP); ok && ip.Unmap() == a {
				return true
			}
		}
	}
	return false
}

// remoteOrigin says whether a connection the proxy accepted came from a flagged source on
// another host, and names the flag.
func (st *steering) remoteOrigin(c net.Conn) (string, bool) {
	ra, ok := addrPort(c.RemoteAddr())
	if !ok {
		return "", false
	}
	sel, ok := st.s.RemoteOrigin(ra)
	if !ok {
		return "", false
	}
	return st.flags.Name(sel), true
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
	return o, st.flags.Name(o.Selector), true
}

// policyScanInterval is how often the host's processes are matched against the policy's
// enforce section.
const policyScanInterval = 2 * time.Second

// workloadRule selects running processes to flag: the policy's enforce section, or a
// steer selector of the configuration on what a container is.
type workloadRule struct {
	origin string // steer.OriginPolicy or steer.OriginConfig
	by     string // who set the flag, for the trail
	name   string // the config selector's name; "" for the policy
	match  func(*event.Process) bool
	// containersOnly: the rule is about containers, so a process outside one is not
	// flagged by its pid.
	containersOnly bool
}

// workloadRules are the rules followWorkloads applies: the policy's enforce section and
// the configuration's workload selectors.
func workloadRules(cfg *config.Config, engine *policy.Engine) []workloadRule {
	var rules []workloadRule
	if engine.EnforcesWorkloads() {
		rules = append(rules, workloadRule{origin: steer.OriginPolicy, by: "policy enforce section",
			match: func(p *event.Process) bool { return engine.Enforced(&policy.Request{Process: p}) }})
	}
	for _, sel := range cfg.Steer {
		if sel.Workload.IsZero() {
			continue
		}
		w := policy.Workload{Namespace: sel.Workload.Namespace, Pod: sel.Workload.Pod,
			ServiceAccount: sel.Workload.ServiceAccount, Labels: sel.Workload.Labels,
			ContainerID: sel.Workload.ContainerID, Image: sel.Workload.Image}
		rules = append(rules, workloadRule{origin: steer.OriginConfig, by: "config steer " + sel.Name, name: sel.Name,
			match: w.Matches, containersOnly: true})
	}
	return rules
}

// followWorkloads flags, until ctx ends, the running processes that rules select, and
// unflags them when they are gone: a process in a container by its container's cgroup
// (every process of the workload), any other by its pid (with the children it forks). A
// workload is steered from the first scan that sees it: a process that connects within its
// first policyScanInterval may still go direct, and is captured.
func (st *steering) followWorkloads(ctx context.Context, rules []workloadRule, ident *identity.Resolver) {
	if len(rules) == 0 {
		return
	}
	mine := map[string]string{} // selector → flag name, for the flags this loop set
	t := time.NewTicker(policyScanInterval)
	defer t.Stop()
	for {
		seen := map[string]bool{}
		procs, err := os.ReadDir("/proc")
		if err != nil {
			st.log.Error("listing processes for the workload selectors", "err", err)
		}
		for _, d := range procs {
			pid, err := strconv.Atoi(d.Name())
			if err != nil || pid == os.Getpid() {
				continue
			}
			p, err := ident.Lookup(pid)
			if err != nil {
				continue
			}
			for _, r := range rules {
				if !r.match(p) {
					continue
				}
				sel := steer.Selector{}
				if cg := containerCgroup(pid, p); cg != "" {
					sel.Cgroup = cg
				} else if r.containersOnly {
					continue
				} else {
					u := uint32(pid)
					sel.PID = &u
				}
				key := sel.String()
				seen[key] = true
				if _, ok := mine[key]; ok {
					break
				}
				f := steer.Flag{Selector: sel, Origin: r.origin, By: r.by}
				if r.name != "" {
					f.Name = r.name + ":" + shortID(p.ContainerID)
					f.Reason = fmt.Sprintf("container %s (%s) matches steer selector %s", shortID(p.ContainerID), describeWorkload(p), r.name)
				} else {
					f.Reason = fmt.Sprintf("%s[%d] matches an enforce workload", p.Comm, pid)
				}
				added, err := st.flags.Add(f)
				if err != nil {
					if !strings.Contains(err.Error(), "already flagged") {
						st.log.Warn("flagging a selected workload", "pid", pid, "by", r.by, "err", err)
					}
					break
				}
				mine[key] = added.Name
				break
			}
		}
		for key, name := range mine {
			if !seen[key] {
				if err := st.flags.Remove(name, "the workload is gone"); err != nil {
					st.log.Warn("unflagging a workload that is gone", "flag", name, "err", err)
				}
				delete(mine, key)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// shortID is a container id as runtimes print it.
func shortID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

// describeWorkload names a container's pod and image for the trail.
func describeWorkload(p *event.Process) string {
	var parts []string
	if p.Namespace != "" || p.Pod != "" {
		parts = append(parts, "pod "+p.Namespace+"/"+p.Pod)
	}
	if p.Image != "" {
		parts = append(parts, "image "+p.Image)
	}
	if len(parts) == 0 {
		return "no pod"
	}
	return strings.Join(parts, ", ")
}

// containerCgroup is the cgroup v2 path of a containerised process (its container's
// cgroup), "" for a process outside containers, whose cgroup (a login session, a system
// service) holds unrelated processes too.
func containerCgroup(pid int, p *event.Process) string {
	if p.ContainerID == "" {
		return ""
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		return ""
	}
	for _, line := range strings.Split(string(b), "\n") {
		if path, ok := strings.CutPrefix(line, "0::"); ok && path != "/" {
			return path
		}
	}
	return ""
}

// close stops steering: from here on, connections go where their clients dial.
func (st *steering) close() {
	if err := st.s.Close(); err != nil {
		st.log.Warn("detaching the steering programs", "err", err)
	}
}
