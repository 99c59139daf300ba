package postgres

// The statement cache: named prepared statements and portals, bounded in number and bytes
// so that a client that never closes them cannot grow the agent.

func (p *prepared) size() int          { return len(p.text) + 4*len(p.oids) }
func (p *prepared) generation() uint64 { return p.gen }

func (p *portal) size() int {
	n := 0
	for _, v := range p.params {
		n += len(v)
	}
	return n // the text is the statement's, shared
}

func (p *portal) generation() uint64 { return p.gen }

// cached is a named statement or portal.
type cached interface {
	size() int
	generation() uint64
}

// forget drops a named statement or portal and the bytes it held.
func forget[V cached](s *Session, m map[string]V, name string) {
	if p, ok := m[name]; ok {
		s.namedBytes -= p.size()
		delete(m, name)
	}
}

// overBudget: too many named statements or portals, or too many bytes held for them.
func (s *Session) overBudget(n int) bool {
	return n > s.cfg.MaxPrepared || s.namedBytes > s.cfg.MaxPreparedBytes
}

// evict forgets the oldest entries of m beyond the budget. Scanning for the oldest is
// linear, but only happens once a session holds more than the cap.
func evict[V cached](s *Session, m map[string]V) {
	for len(m) > 1 && s.overBudget(len(m)) {
		var oldest string
		var gen uint64
		for name, p := range m {
			if g := p.generation(); gen == 0 || g < gen {
				oldest, gen = name, g
			}
		}
		forget(s, m, oldest)
		s.stats.PreparedEvicted++
	}
}
