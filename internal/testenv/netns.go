package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"testing"
)

// NetNS makes a network namespace joined to the host by a veth pair — the host's end
// hostAddr, the namespace's nsAddr, both on a /30 — so that a process started in it (ip
// netns exec NAME …) is a client on another host as far as this one can tell. It returns
// the namespace's name; the namespace and the pair go when the test ends. tag tells apart
// several namespaces of one test process.
func NetNS(t testing.TB, tag, hostAddr, nsAddr string) string {
	t.Helper()
	ns := fmt.Sprintf("vigil-test-%d-%s", os.Getpid(), tag)
	hostIf, nsIf := fmt.Sprintf("vh%s%d", tag, os.Getpid()%100000), fmt.Sprintf("vn%s%d", tag, os.Getpid()%100000)
	ip := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v: %s", args, err, out)
		}
	}
	ip("netns", "add", ns)
	t.Cleanup(func() {
		_ = exec.Command("ip", "link", "del", hostIf).Run()
		_ = exec.Command("ip", "netns", "del", ns).Run()
	})
	ip("link", "add", hostIf, "type", "veth", "peer", "name", nsIf)
	ip("link", "set", nsIf, "netns", ns)
	ip("addr", "add", hostAddr+"/30", "dev", hostIf)
	ip("link", "set", hostIf, "up")
	ip("-n", ns, "addr", "add", nsAddr+"/30", "dev", nsIf)
	ip("-n", ns, "link", "set", nsIf, "up")
	ip("-n", ns, "link", "set", "lo", "up")
	return ns
}
