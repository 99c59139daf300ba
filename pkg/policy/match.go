package policy

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"

	"github.com/vigil-db/vigil/pkg/event"
)

// glob matches s against a pattern where '*' is any run of characters and '?' any one
// character, case-insensitively (SQL names in policies are written by people; a rule on
// "Payroll" should not miss the table payroll).
func glob(pattern, s string) bool {
	if !strings.ContainsAny(pattern, "*?") {
		return strings.EqualFold(pattern, s)
	}
	return globFold(strings.ToLower(pattern), strings.ToLower(s))
}

func globFold(p, s string) bool {
	// Iterative matcher with one backtrack point per '*': linear in practice.
	px, sx := 0, 0
	starP, starS := -1, 0
	for sx < len(s) {
		switch {
		case px < len(p) && (p[px] == '?' || p[px] == s[sx]):
			px++
			sx++
		case px < len(p) && p[px] == '*':
			starP, starS = px, sx
			px++
		case starP >= 0:
			starS++
			px, sx = starP+1, starS
		default:
			return false
		}
	}
	for px < len(p) && p[px] == '*' {
		px++
	}
	return px == len(p)
}

func anyGlob(patterns []string, s string) bool {
	for _, p := range patterns {
		if glob(p, s) {
			return true
		}
	}
	return false
}

// tableMatch matches a table pattern against a table name as the statement wrote it. An
// unqualified name may resolve to any schema on the search_path, so it matches a qualified
// pattern by its table part; a qualified name matches an unqualified pattern likewise.
func tableMatch(pattern, table string) bool {
	if glob(pattern, table) {
		return true
	}
	pDot, tDot := strings.LastIndexByte(pattern, '.'), strings.LastIndexByte(table, '.')
	switch {
	case pDot >= 0 && tDot < 0:
		return glob(pattern[pDot+1:], table)
	case pDot < 0 && tDot >= 0:
		return glob(pattern, table[tDot+1:])
	}
	return false
}

// serverPattern is one entry of an environment's servers.
type serverPattern struct {
	prefix netip.Prefix // CIDR or single address; zero if not an address
	port   int          // 0: any port
	glob   string       // otherwise a glob over the whole address
}

func parseServerPattern(s string) (serverPattern, error) {
	if s == "" {
		return serverPattern{}, fmt.Errorf("empty server pattern")
	}
	if pfx, err := netip.ParsePrefix(s); err == nil {
		return serverPattern{prefix: pfx.Masked()}, nil
	}
	if a, err := netip.ParseAddr(s); err == nil {
		return serverPattern{prefix: netip.PrefixFrom(a, a.BitLen())}, nil
	}
	if host, port, err := net.SplitHostPort(s); err == nil && !strings.ContainsAny(s, "*?") {
		n, err := strconv.Atoi(port)
		if err != nil || n < 1 || n > 65535 {
			return serverPattern{}, fmt.Errorf("bad port in server pattern %q", s)
		}
		if host == "" {
			return serverPattern{port: n}, nil
		}
		if a, err := netip.ParseAddr(host); err == nil {
			return serverPattern{prefix: netip.PrefixFrom(a, a.BitLen()), port: n}, nil
		}
		return serverPattern{glob: s}, nil
	}
	return serverPattern{glob: s}, nil
}

func (sp serverPattern) match(addr string) bool {
	if sp.glob != "" {
		return glob(sp.glob, addr)
	}
	host, port := addr, 0
	if h, p, err := net.SplitHostPort(addr); err == nil {
		host = h
		port, _ = strconv.Atoi(p)
	}
	if sp.port != 0 && sp.port != port {
		return false
	}
	if !sp.prefix.IsValid() {
		return true
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return false
	}
	return sp.prefix.Contains(a.Unmap())
}

// Matches reports whether the process satisfies every field the selector sets. Fields the
// agent did not report do not match: a selector never matches on missing data.
func (w *Workload) Matches(p *event.Process) bool { return matchWorkload(w, p) }

func matchWorkload(w *Workload, p *event.Process) bool {
	if p == nil {
		return false
	}
	if w.UID != nil && (p.UID == nil || *p.UID != *w.UID) {
		return false
	}
	for k, pat := range w.Labels {
		if val, ok := p.Labels[k]; !ok || !glob(pat, val) {
			return false
		}
	}
	for _, f := range []struct{ pat, val string }{
		{w.Exe, p.Exe}, {w.Comm, p.Comm}, {w.ContainerID, p.ContainerID}, {w.Pod, p.Pod},
		{w.Namespace, p.Namespace}, {w.ServiceAccount, p.ServiceAccount}, {w.Image, p.Image},
	} {
		if f.pat != "" && (f.val == "" || !glob(f.pat, f.val)) {
			return false
		}
	}
	return true
}

func matchAnyWorkload(ws []Workload, p *event.Process) bool {
	for i := range ws {
		if matchWorkload(&ws[i], p) {
			return true
		}
	}
	return false
}
