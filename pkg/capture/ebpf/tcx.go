package ebpf

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// watchInterfaces attaches the TCX program to every current interface and starts a
// goroutine that attaches it to interfaces created later. The subscription opens before
// the listing, so an interface created in between is seen by one or the other (attaching
// twice is avoided by ifindex).
func (t *Tracer) watchInterfaces() error {
	ctx, cancel := context.WithCancel(context.Background())
	updates := make(chan netlink.LinkUpdate, 64)
	subErr := &hook{status: HookStatus{Name: "netlink/link-updates", Attached: true}}
	err := netlink.LinkSubscribeWithOptions(updates, ctx.Done(), netlink.LinkSubscribeOptions{
		ErrorCallback: func(err error) {
			if ctx.Err() != nil {
				return // the socket was closed on purpose
			}
			t.log.Error("interface updates: new interfaces will not be captured", "err", err)
			t.mu.Lock()
			subErr.setErr(err)
			t.mu.Unlock()
		},
	})
	if err != nil {
		cancel()
		return fmt.Errorf("subscribing to interface updates: %w", err)
	}
	t.mu.Lock()
	t.hooks = append(t.hooks, subErr)
	t.stopLinks, t.linksDone = cancel, make(chan struct{})
	t.mu.Unlock()

	ifs, err := net.Interfaces()
	if err != nil {
		cancel()
		for range updates {
		}
		return fmt.Errorf("listing network interfaces: %w", err)
	}
	for _, ifc := range ifs {
		t.attachInterface(ifc.Index, ifc.Name, ifc.Flags&net.FlagLoopback != 0)
	}

	go func() {
		defer close(t.linksDone)
		// The subscription closes the channel once ctx is done; draining it to the end
		// keeps netlink's sender goroutine from blocking forever.
		for u := range updates {
			if ctx.Err() != nil {
				continue
			}
			attrs := u.Link.Attrs()
			switch u.Header.Type {
			case unix.RTM_NEWLINK:
				t.attachInterface(attrs.Index, attrs.Name, attrs.Flags&net.FlagLoopback != 0)
			case unix.RTM_DELLINK:
				t.detachInterface(attrs.Index)
			}
		}
	}()
	return nil
}

// attachInterface attaches capture to one interface unless it already is. On loopback
// both directions of a connection pass ingress, so egress would only duplicate them.
func (t *Tracer) attachInterface(index int, name string, loopback bool) {
	if len(t.cfg.Interfaces) > 0 && !slices.Contains(t.cfg.Interfaces, name) {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed || t.ifaces[index] != nil {
		return
	}
	dirs := []ebpf.AttachType{ebpf.AttachTCXIngress, ebpf.AttachTCXEgress}
	if loopback {
		dirs = dirs[:1]
	}
	var hooks []*hook
	for _, dir := range dirs {
		dname := "ingress"
		if dir == ebpf.AttachTCXEgress {
			dname = "egress"
		}
		hk := &hook{status: HookStatus{Name: fmt.Sprintf("tcx/%s/%s", name, dname)}}
		// At the head of the chain: we see packets as the stack delivers or emits them,
		// before another program can redirect or drop them. We never change them.
		pin := fmt.Sprintf("%s%d_%s", tcxPrefix, index, dname)
		path := t.pinPath(pin)
		var l link.Link
		var err error
		if path != "" {
			l = t.adoptTCX(path, index)
		}
		if l == nil {
			l, err = link.AttachTCX(link.TCXOptions{Interface: index, Program: t.objs.CaptureTcx, Attach: dir, Anchor: link.Head()})
			if err == nil && path != "" {
				if perr := l.Pin(path); perr != nil {
					t.log.Warn("hook not pinned: it stops with the agent", "hook", hk.status.Name, "err", perr)
				}
			}
		}
		if path != "" {
			t.tcxPins[pin] = true
		}
		if err != nil {
			hk.setErr(fmt.Errorf("attaching TCX %s to %s: %w", dname, name, err))
			t.log.Error("ebpf hook not attached", "hook", hk.status.Name, "err", err)
		} else {
			hk.link, hk.status.Attached = l, true
			t.log.Debug("ebpf hook attached", "hook", hk.status.Name)
		}
		hooks = append(hooks, hk)
	}
	t.ifaces[index] = hooks
	t.hooks = append(t.hooks, hooks...)
}

// detachInterface forgets an interface that was deleted; the kernel has already dropped
// its TCX programs, closing the links only releases them.
func (t *Tracer) detachInterface(index int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	hooks := t.ifaces[index]
	if hooks == nil || t.closed {
		return
	}
	for _, h := range hooks {
		if h.link != nil {
			_ = h.link.Unpin()
			_ = h.link.Close()
		}
	}
	for pin := range t.tcxPins {
		if strings.HasPrefix(pin, fmt.Sprintf("%s%d_", tcxPrefix, index)) {
			delete(t.tcxPins, pin)
		}
	}
	delete(t.ifaces, index)
	t.removeHooks(hooks)
}
