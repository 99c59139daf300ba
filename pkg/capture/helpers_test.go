package capture

import "net/netip"

func netipPort(p int) netip.AddrPort { return netip.AddrPortFrom(netip.IPv4Unspecified(), uint16(p)) }
