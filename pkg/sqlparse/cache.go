package sqlparse

import (
	"hash/maphash"
	"sync"
)

// The cache keeps classifications of recently seen texts. Applications repeat a small set
// of statement texts (prepared or ORM-generated), so most lookups hit. It is bounded by
// entries and bytes: each shard keeps two generations and drops the older one when the
// newer fills up, which approximates LRU without per-hit bookkeeping.
const (
	cacheShards = 16
	// cacheEntries and cacheBytes bound the whole cache (both generations, all shards).
	cacheEntries = 1 << 15
	cacheBytes   = 64 << 20
	// maxCachedText: longer texts (bulk loads, generated IN lists) are classified every time
	// rather than pinning megabytes.
	maxCachedText = 64 << 10
)

type cacheKey struct{ protocol, sql string }

type shard[V any] struct {
	mu        sync.RWMutex
	cur, prev map[cacheKey]V
	curBytes  int
}

// cache maps texts (or templates, see template.go) to what was learned from them.
type cache[V any] struct {
	seed   maphash.Seed
	shards [cacheShards]shard[V]
}

var (
	defaultCache  = newCache[*Info]()
	templateCache = newCache[*templateEntry]()
)

func newCache[V any]() *cache[V] {
	c := &cache[V]{seed: maphash.MakeSeed()}
	for i := range c.shards {
		c.shards[i].cur = make(map[cacheKey]V)
	}
	return c
}

func (c *cache[V]) shard(sql string) *shard[V] {
	return &c.shards[maphash.String(c.seed, sql)%cacheShards]
}

func (c *cache[V]) get(protocol, sql string) (V, bool) {
	s := c.shard(sql)
	k := cacheKey{protocol, sql}
	s.mu.RLock()
	info, ok := s.cur[k]
	if !ok {
		info, ok = s.prev[k]
	}
	s.mu.RUnlock()
	return info, ok
}

func (c *cache[V]) put(protocol, sql string, info V) {
	if len(sql) > maxCachedText {
		return
	}
	s := c.shard(sql)
	k := cacheKey{protocol, sql}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.cur) >= cacheEntries/cacheShards/2 || s.curBytes >= cacheBytes/cacheShards/2 {
		s.prev, s.cur, s.curBytes = s.cur, make(map[cacheKey]V), 0
	}
	s.cur[k] = info
	// Text plus a rough allowance for the Info it maps to.
	s.curBytes += 3*len(sql) + 512
}
