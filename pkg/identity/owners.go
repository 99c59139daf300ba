package identity

import (
	"fmt"
	"net/netip"
	"slices"
	"sync"
)

// OwnerCache finds the processes holding TCP sockets for a caller that looks up many new
// connections, such as a proxy accepting a pooler's burst of 64. Finding a holder means
// reading every fd of every process; but a connection usually comes from a process that
// opened the previous ones, so the cache first reads the fds of the few processes that
// held the last sockets it looked up, and scans the whole host only when none of them
// holds this one.
type OwnerCache struct {
	mu     sync.Mutex
	recent []int // most recent first
}

// recentOwners bounds how many processes are tried before a full scan.
const recentOwners = 8

// TCPOwner is TCPOwner through the cache. Of several processes holding the socket (one
// inherited across fork) a recent one may be returned rather than the opener.
func (c *OwnerCache) TCPOwner(local, remote netip.AddrPort) (int, error) {
	m, err := tcpLookup(local, remote)
	if err != nil {
		return 0, err
	}
	if m.inode == 0 {
		return 0, fmt.Errorf("TCP socket %s→%s has no inode (closing): %w", local, remote, ErrNotFound)
	}
	inode := uint64(m.inode)
	c.mu.Lock()
	recent := slices.Clone(c.recent)
	c.mu.Unlock()
	for _, pid := range recent {
		if holds(pid, inode) {
			c.remember(pid)
			return pid, nil
		}
	}
	pid, err := Owner(inode)
	if err != nil {
		return 0, err
	}
	c.remember(pid)
	return pid, nil
}

func (c *OwnerCache) remember(pid int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if i := slices.Index(c.recent, pid); i >= 0 {
		c.recent = slices.Delete(c.recent, i, i+1)
	}
	c.recent = slices.Insert(c.recent, 0, pid)
	if len(c.recent) > recentOwners {
		c.recent = c.recent[:recentOwners]
	}
}

// holds reports whether process pid has socket inode open.
func holds(pid int, inode uint64) bool {
	found := false
	eachSocket(pid, make([]byte, 64), func(ino uint64) bool {
		found = ino == inode
		return !found
	})
	return found
}
