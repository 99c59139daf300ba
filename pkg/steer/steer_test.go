package steer

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vigil-db/vigil/internal/testenv"
	"github.com/vigil-db/vigil/pkg/bpffs"
	"github.com/vigil-db/vigil/pkg/cgroupfs"
)

// The tests run real clients — this test binary re-executed as a child process, started
// straight into a cgroup the test creates — and watch where the kernel sends their
// connections.

const (
	childEnv = "VIGIL_STEER_CHILD"
	waitEnv  = "VIGIL_STEER_WAIT"
	spawnEnv = "VIGIL_STEER_SPAWN" // the child leaves the dialling to a child of its own
)

func TestMain(m *testing.M) {
	if target := os.Getenv(childEnv); target != "" {
		os.Exit(child(target))
	}
	os.Exit(m.Run())
}

// child dials target ("tcp4:ADDR", "tcp6:ADDR", or "mapped:ADDR", an IPv4 address through
// an AF_INET6 socket), says whom getpeername names, sends a line and waits for the reply.
func child(target string) int {
	if os.Getenv(waitEnv) != "" {
		// Wait for the test's go-ahead: it flags this process while it runs.
		_, _ = bufio.NewReader(os.Stdin).ReadString('\n')
	}
	if os.Getenv(spawnEnv) != "" {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = slices.DeleteFunc(os.Environ(), func(e string) bool {
			return strings.HasPrefix(e, spawnEnv+"=") || strings.HasPrefix(e, waitEnv+"=")
		})
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
		if err := cmd.Run(); err != nil {
			fmt.Println("error", err)
			return 1
		}
		return 0
	}
	mode, addr, _ := strings.Cut(target, ":")
	ap := netip.MustParseAddrPort(addr)
	var fd int
	var err error
	var sa unix.Sockaddr
	switch mode {
	case "tcp4":
		fd, err = unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		sa = &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()}
	case "tcp6", "mapped":
		fd, err = unix.Socket(unix.AF_INET6, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		sa = &unix.SockaddrInet6{Port: int(ap.Port()), Addr: ap.Addr().As16()}
	}
	if err == nil {
		err = unix.Connect(fd, sa)
	}
	if err != nil {
		fmt.Println("error", err)
		return 1
	}
	f := os.NewFile(uintptr(fd), "conn")
	conn, err := net.FileConn(f)
	f.Close()
	if err != nil {
		fmt.Println("error", err)
		return 1
	}
	defer conn.Close()
	var peer unix.Sockaddr
	raw, _ := conn.(syscall.Conn).SyscallConn()
	_ = raw.Control(func(cfd uintptr) { peer, err = unix.Getpeername(int(cfd)) })
	if err != nil {
		fmt.Println("error getpeername", err)
		return 1
	}
	var p netip.AddrPort
	switch a := peer.(type) {
	case *unix.SockaddrInet4:
		p = netip.AddrPortFrom(netip.AddrFrom4(a.Addr), uint16(a.Port))
	case *unix.SockaddrInet6:
		p = netip.AddrPortFrom(netip.AddrFrom16(a.Addr), uint16(a.Port))
	}
	fmt.Println("peer", p)
	fmt.Fprintln(conn, "hello")
	line, _ := bufio.NewReader(conn).ReadString('\n')
	fmt.Println("reply", strings.TrimSpace(line))
	return 0
}

var cgroups int // cgroups made so far, for unique names

// cgroup creates a cgroup below the root for the test and returns its path in the
// hierarchy and an open directory fd to start processes in it.
func cgroup(t *testing.T, root string) (string, int) {
	t.Helper()
	cgroups++
	name := fmt.Sprintf("/vigil-steer-test-%d-%d", os.Getpid(), cgroups)
	dir := filepath.Join(root, name)
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatalf("creating cgroup %s: %v", dir, err)
	}
	fd, err := unix.Open(dir, unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		unix.Close(fd)
		// The children have exited; an empty cgroup can be removed.
		for i := 0; i < 50; i++ {
			if err := os.Remove(dir); err == nil || errors.Is(err, os.ErrNotExist) {
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
		t.Errorf("removing cgroup %s: still busy", dir)
	})
	return name, fd
}

// listener is a TCP listener that answers each connection's line and hands the connection
// to the test.
type listener struct {
	net.Listener
	got chan net.Conn

	mu    sync.Mutex
	conns []net.Conn // kept open for the test to ask Origin, closed at its end
}

func listen(t *testing.T, network, addr string) *listener {
	t.Helper()
	// Plain TCP, as the agent's proxies listen (Go would use MPTCP, which the socket maps
	// behind remote steering do not take).
	var lc net.ListenConfig
	lc.SetMultipathTCP(false)
	l, err := lc.Listen(context.Background(), network, addr)
	if err != nil {
		t.Fatal(err)
	}
	ln := &listener{Listener: l, got: make(chan net.Conn, 4)}
	t.Cleanup(func() {
		l.Close()
		ln.mu.Lock()
		defer ln.mu.Unlock()
		for _, c := range ln.conns {
			c.Close()
		}
	})
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			ln.mu.Lock()
			ln.conns = append(ln.conns, c)
			ln.mu.Unlock()
			ln.got <- c
			go func() {
				r := bufio.NewReader(c)
				if _, err := r.ReadString('\n'); err == nil {
					fmt.Fprintln(c, "from "+l.Addr().String())
				}
			}()
		}
	}()
	return ln
}

func (l *listener) addr() netip.AddrPort {
	return l.Addr().(*net.TCPAddr).AddrPort()
}

// run starts the child in the cgroup and returns what it printed.
func run(t *testing.T, cgroupFD int, target string) map[string]string {
	t.Helper()
	return runExe(t, os.Args[0], cgroupFD, target, nil)
}

// runExe runs the child from the executable exe; with ready, the child waits until ready
// returns.
func runExe(t *testing.T, exe string, cgroupFD int, target string, ready func(pid int)) map[string]string {
	t.Helper()
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+target)
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: cgroupFD}
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	var stdin io.WriteCloser
	if ready != nil {
		cmd.Env = append(cmd.Env, waitEnv+"=1")
		var err error
		if stdin, err = cmd.StdinPipe(); err != nil {
			t.Fatal(err)
		}
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("client %s: %v", target, err)
	}
	if ready != nil {
		ready(cmd.Process.Pid)
		fmt.Fprintln(stdin, "go")
		stdin.Close()
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("client %s: %v: %s", target, err, out.String())
	}
	res := map[string]string{"pid": fmt.Sprint(cmd.Process.Pid)}
	for _, line := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		k, v, _ := strings.Cut(line, " ")
		res[k] = v
	}
	return res
}

// accepted returns the connection that reached l, or nil when none did.
func (l *listener) accepted() net.Conn {
	select {
	case c := <-l.got:
		return c
	case <-time.After(100 * time.Millisecond):
		return nil
	}
}

func load(t *testing.T) (*Steerer, string) {
	t.Helper()
	testenv.RequireBPF(t)
	root, err := cgroupfs.Root()
	if err != nil {
		t.Fatal(err)
	}
	s, err := Load(Config{CgroupRoot: root}, nil)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s, root
}

func TestSteerFlaggedCgroup(t *testing.T) {
	s, root := load(t)
	flaggedPath, flaggedFD := cgroup(t, root)
	_, otherFD := cgroup(t, root) // a sibling, not flagged
	server := listen(t, "tcp4", "127.0.0.1:0")
	proxy := listen(t, "tcp4", "127.0.0.1:0")
	if err := s.AddRoute(server.addr(), proxy.addr()); err != nil {
		t.Fatal(err)
	}
	if err := s.FlagCgroup(flaggedPath, 7); err != nil {
		t.Fatal(err)
	}
	wantCgroup, err := s.CgroupID(flaggedPath)
	if err != nil {
		t.Fatal(err)
	}

	// Flagged: the connection lands on the proxy, and the client cannot tell.
	res := run(t, flaggedFD, "tcp4:"+server.addr().String())
	if res["peer"] != server.addr().String() {
		t.Errorf("getpeername in the steered client says %s, want the server it dialled, %s", res["peer"], server.addr())
	}
	if res["reply"] != "from "+proxy.addr().String() {
		t.Errorf("steered client was answered %q, want by the proxy %s", res["reply"], proxy.addr())
	}
	c := proxy.accepted()
	if c == nil {
		t.Fatal("the proxy accepted nothing")
	}
	// The proxy's side still sees its real peer: only the client is told the server it
	// dialled.
	if peer := c.RemoteAddr().(*net.TCPAddr).AddrPort(); peer == server.addr() || peer.Port() == proxy.addr().Port() {
		t.Errorf("the proxy sees its steered client as %s, want the client's own address", peer)
	}
	o, ok, err := s.Origin(c.(*net.TCPConn))
	if err != nil || !ok {
		t.Fatalf("Origin of the steered connection: %v, %v", ok, err)
	}
	if o.Server != server.addr() || o.Selector != 7 || fmt.Sprint(o.TGID) != res["pid"] || o.UID != uint32(os.Getuid()) ||
		o.CgroupID != wantCgroup || o.Comm == "" {
		t.Errorf("Origin %+v: want server %s, selector 7, tgid %s, uid %d, cgroup %d, a comm", o, server.addr(), res["pid"], os.Getuid(), wantCgroup)
	}
	if server.accepted() != nil {
		t.Error("the steered connection also reached the server")
	}

	// Not flagged: straight to the server, and the server's side has no Origin.
	res = run(t, otherFD, "tcp4:"+server.addr().String())
	if res["reply"] != "from "+server.addr().String() {
		t.Errorf("unflagged client was answered %q, want by the server", res["reply"])
	}
	if c := server.accepted(); c == nil {
		t.Error("the server accepted nothing from the unflagged client")
	} else if _, ok, err := s.Origin(c.(*net.TCPConn)); ok || err != nil {
		t.Errorf("Origin of an unsteered connection: %v, %v; want none", ok, err)
	}

	// A cgroup below the flagged one is flagged too.
	subPath := flaggedPath + "/sub"
	if err := os.Mkdir(filepath.Join(root, subPath), 0o755); err != nil {
		t.Fatal(err)
	}
	defer os.Remove(filepath.Join(root, subPath))
	subFD, err := unix.Open(filepath.Join(root, subPath), unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(subFD)
	if res := run(t, subFD, "tcp4:"+server.addr().String()); res["reply"] != "from "+proxy.addr().String() {
		t.Errorf("client in a cgroup below the flagged one was answered %q, want by the proxy", res["reply"])
	}
	_ = proxy.accepted()

	// Unflagged again: direct.
	if err := s.UnflagCgroup(flaggedPath); err != nil {
		t.Fatal(err)
	}
	if res := run(t, flaggedFD, "tcp4:"+server.addr().String()); res["reply"] != "from "+server.addr().String() {
		t.Errorf("after unflagging, the client was answered %q, want by the server", res["reply"])
	}
	_ = server.accepted()
	if st, err := s.Stats(); err != nil || st.Steered != 2 || st.Handed != 2 || st.NoStorage != 0 {
		t.Errorf("Stats %+v, %v: want 2 steered, 2 handed", st, err)
	}
}

// TestSteerNeverSteersTheAgent flags every process of the test's user: the children are
// steered, the agent's own connections (the proxy's upstream ones) are not.
func TestSteerNeverSteersTheAgent(t *testing.T) {
	s, root := load(t)
	_, fd := cgroup(t, root)
	server := listen(t, "tcp4", "127.0.0.1:0")
	proxy := listen(t, "tcp4", "127.0.0.1:0")
	if err := s.AddRoute(server.addr(), proxy.addr()); err != nil {
		t.Fatal(err)
	}
	if err := s.FlagUID(uint32(os.Getuid()), 3); err != nil {
		t.Fatal(err)
	}
	defer s.UnflagUID(uint32(os.Getuid()))
	if res := run(t, fd, "tcp4:"+server.addr().String()); res["reply"] != "from "+proxy.addr().String() {
		t.Errorf("client of a flagged uid was answered %q, want by the proxy", res["reply"])
	}
	_ = proxy.accepted()
	c, err := net.Dial("tcp4", server.addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	if server.accepted() == nil {
		t.Error("the agent's own connection did not reach the server")
	}
}

func TestSteerIPv6AndMapped(t *testing.T) {
	s, root := load(t)
	path, fd := cgroup(t, root)
	if err := s.FlagCgroup(path, 9); err != nil {
		t.Fatal(err)
	}
	server6 := listen(t, "tcp6", "[::1]:0")
	proxy6 := listen(t, "tcp6", "[::1]:0")
	if err := s.AddRoute(server6.addr(), proxy6.addr()); err != nil {
		t.Fatal(err)
	}
	res := run(t, fd, "tcp6:"+server6.addr().String())
	if res["reply"] != "from "+proxy6.addr().String() || res["peer"] != server6.addr().String() {
		t.Errorf("IPv6 client: peer %s, answered %q; want peer %s, answered by %s", res["peer"], res["reply"], server6.addr(), proxy6.addr())
	}
	if c := proxy6.accepted(); c == nil {
		t.Error("the IPv6 proxy accepted nothing")
	} else if o, ok, err := s.Origin(c.(*net.TCPConn)); !ok || err != nil || o.Server != server6.addr() {
		t.Errorf("Origin over IPv6: %+v, %v, %v", o, ok, err)
	}

	// An IPv4 server dialled through an AF_INET6 socket as ::ffff:127.0.0.1.
	server4 := listen(t, "tcp4", "127.0.0.1:0")
	proxy4 := listen(t, "tcp4", "127.0.0.1:0")
	if err := s.AddRoute(server4.addr(), proxy4.addr()); err != nil {
		t.Fatal(err)
	}
	mapped := netip.AddrPortFrom(netip.AddrFrom16(server4.addr().Addr().As16()), server4.addr().Port())
	res = run(t, fd, "mapped:"+mapped.String())
	if res["reply"] != "from "+proxy4.addr().String() || res["peer"] != mapped.String() {
		t.Errorf("v4-mapped client: peer %s, answered %q; want peer %s, answered by %s", res["peer"], res["reply"], mapped, proxy4.addr())
	}
	if c := proxy4.accepted(); c == nil {
		t.Error("the IPv4 proxy accepted nothing from the v4-mapped client")
	} else if o, ok, err := s.Origin(c.(*net.TCPConn)); !ok || err != nil || o.Server != server4.addr() {
		t.Errorf("Origin of the v4-mapped client: %+v, %v, %v", o, ok, err)
	}
}

// TestSteerFlaggedExe flags an executable: a process that execs it is steered, as is one
// that was already running it when the flag was set; the same program under another path
// is not.
func TestSteerFlaggedExe(t *testing.T) {
	s, root := load(t)
	_, fd := cgroup(t, root)
	server := listen(t, "tcp4", "127.0.0.1:0")
	proxy := listen(t, "tcp4", "127.0.0.1:0")
	if err := s.AddRoute(server.addr(), proxy.addr()); err != nil {
		t.Fatal(err)
	}
	exe := filepath.Join(t.TempDir(), "flagged-client")
	bin, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(exe, bin, 0o755); err != nil {
		t.Fatal(err)
	}
	target := "tcp4:" + server.addr().String()

	// Already running when the flag is set: found in /proc.
	res := runExe(t, exe, fd, target, func(int) {
		if err := s.FlagExe(exe, 11); err != nil {
			t.Fatal(err)
		}
	})
	if res["reply"] != "from "+proxy.addr().String() {
		t.Errorf("a process already running the flagged exe was answered %q, want by the proxy", res["reply"])
	}
	if c := proxy.accepted(); c == nil {
		t.Error("the proxy accepted nothing")
	} else if o, ok, _ := s.Origin(c.(*net.TCPConn)); !ok || o.Selector != 11 || fmt.Sprint(o.TGID) != res["pid"] {
		t.Errorf("Origin %+v, %v: want selector 11, tgid %s", o, ok, res["pid"])
	}

	// Exec'd after the flag: caught at exec.
	if res := runExe(t, exe, fd, target, nil); res["reply"] != "from "+proxy.addr().String() {
		t.Errorf("a process that exec'd the flagged exe was answered %q, want by the proxy", res["reply"])
	}
	_ = proxy.accepted()

	// The same program from its original path is another executable.
	if res := run(t, fd, target); res["reply"] != "from "+server.addr().String() {
		t.Errorf("the unflagged exe was answered %q, want by the server", res["reply"])
	}
	_ = server.accepted()

	if err := s.UnflagExe(exe, 11); err != nil {
		t.Fatal(err)
	}
	if res := runExe(t, exe, fd, target, nil); res["reply"] != "from "+server.addr().String() {
		t.Errorf("after unflagging, the exe was answered %q, want by the server", res["reply"])
	}
	_ = server.accepted()
}

// TestSteerFlaggedProcess flags one running process by pid: the child it then forks and
// execs (a shell running psql, say) is steered too.
func TestSteerFlaggedProcess(t *testing.T) {
	s, root := load(t)
	_, fd := cgroup(t, root)
	server := listen(t, "tcp4", "127.0.0.1:0")
	proxy := listen(t, "tcp4", "127.0.0.1:0")
	if err := s.AddRoute(server.addr(), proxy.addr()); err != nil {
		t.Fatal(err)
	}
	t.Setenv(spawnEnv, "1")
	res := runExe(t, os.Args[0], fd, "tcp4:"+server.addr().String(), func(pid int) {
		if err := s.FlagProcess(uint32(pid), 5); err != nil {
			t.Fatal(err)
		}
	})
	if res["reply"] != "from "+proxy.addr().String() {
		t.Errorf("the child of a flagged process, after its exec, was answered %q, want by the proxy", res["reply"])
	}
	if c := proxy.accepted(); c == nil {
		t.Error("the proxy accepted nothing")
	} else if o, ok, _ := s.Origin(c.(*net.TCPConn)); !ok || o.Selector != 5 || fmt.Sprint(o.TGID) == res["pid"] {
		t.Errorf("Origin %+v, %v: want selector 5 and the grandchild's pid, not the child's %s", o, ok, res["pid"])
	}
}

// tryRun is run for a client that may fail to connect: it returns what the child printed
// ("error" set when it could not connect).
func tryRun(t *testing.T, cgroupFD int, target string) map[string]string {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+target)
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: cgroupFD}
	out, _ := cmd.CombinedOutput()
	res := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		k, v, _ := strings.Cut(line, " ")
		res[k] = v
	}
	return res
}

// connectPrograms is the set of cgroup connect4 programs attached to the cgroup root.
func connectPrograms(t *testing.T, root string) map[ebpf.ProgramID]bool {
	t.Helper()
	fd, err := unix.Open(root, unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	res, err := link.QueryPrograms(link.QueryOptions{Target: fd, Attach: ebpf.AttachCGroupInet4Connect})
	if err != nil {
		t.Fatal(err)
	}
	ids := map[ebpf.ProgramID]bool{}
	for _, p := range res.Programs {
		ids[p.ID] = true
	}
	return ids
}

func pinnedProgram(t *testing.T, dir, name string) ebpf.ProgramID {
	t.Helper()
	l, err := link.LoadPinnedLink(filepath.Join(dir, pinPrefix+name), nil)
	if err != nil {
		t.Fatalf("pinned %s: %v", name, err)
	}
	defer l.Close()
	info, err := l.Info()
	if err != nil {
		t.Fatal(err)
	}
	return info.Program
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// TestSteerPinnedFailsClosed: with a pin directory the hooks outlive the Steerer (the agent
// killed or stopped): a flagged client's connect() still goes to the proxy's port and is
// refused there, not let through to the server. The next Load takes the pins over without
// adding hooks; unpinning lets the client through again.
func TestSteerPinnedFailsClosed(t *testing.T) {
	testenv.RequireBPF(t)
	root, err := cgroupfs.Root()
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(bpffs.Root, fmt.Sprintf("vigil-steer-test-%d", os.Getpid()))
	t.Cleanup(func() { _ = bpffs.Unpin(dir) })
	flaggedPath, flaggedFD := cgroup(t, root)
	_, otherFD := cgroup(t, root)
	server := listen(t, "tcp4", "127.0.0.1:0")
	proxy := listen(t, "tcp4", "127.0.0.1:0")
	target := "tcp4:" + server.addr().String()

	s, err := Load(Config{CgroupRoot: root, PinDir: dir}, nil)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if err := s.AddRoute(server.addr(), proxy.addr()); err != nil {
		t.Fatal(err)
	}
	if err := s.FlagCgroup(flaggedPath, 7); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	proxy.Close() // the agent is gone, and its proxy with it
	first := pinnedProgram(t, dir, "cgroup_connect4")

	if res := tryRun(t, flaggedFD, target); !strings.Contains(res["error"], "connection refused") {
		t.Errorf("flagged client with no agent running: %v, want its connect refused at the proxy's port", res)
	}
	if server.accepted() != nil {
		t.Error("a flagged client reached the server while no agent ran")
	}
	if res := tryRun(t, otherFD, target); res["reply"] != "from "+server.addr().String() {
		t.Errorf("unflagged client with no agent running: %v, want the server", res)
	}
	_ = server.accepted()

	// The next agent: its own hooks replace the pinned ones.
	proxy2 := listen(t, "tcp4", "127.0.0.1:0")
	s2, err := Load(Config{CgroupRoot: root, PinDir: dir}, nil)
	if err != nil {
		t.Fatalf("second Load: %v", err)
	}
	defer s2.Close()
	if err := s2.AddRoute(server.addr(), proxy2.addr()); err != nil {
		t.Fatal(err)
	}
	if err := s2.FlagCgroup(flaggedPath, 7); err != nil {
		t.Fatal(err)
	}
	second := pinnedProgram(t, dir, "cgroup_connect4")
	eventually(t, "the first agent's hook to leave the cgroup root", func() bool {
		on := connectPrograms(t, root)
		return on[second] && !on[first]
	})
	if res := tryRun(t, flaggedFD, target); res["reply"] != "from "+proxy2.addr().String() {
		t.Errorf("flagged client under the second agent: %v, want its proxy", res)
	}
	_ = proxy2.accepted()

	s2.Close()
	if err := bpffs.Unpin(dir); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the unpinned hook to leave the cgroup root", func() bool { return !connectPrograms(t, root)[second] })
	if res := tryRun(t, flaggedFD, target); res["reply"] != "from "+server.addr().String() {
		t.Errorf("flagged client after unpinning: %v, want the server", res)
	}
}

// netnsClient makes a network namespace over a veth pair (testenv.NetNS) and returns the
// host's and the namespace's addresses and a function that runs the child client in it.
func netnsClient(t *testing.T) (host, client netip.Addr, run func(target string) map[string]string) {
	t.Helper()
	n := os.Getpid() % 200
	host = netip.AddrFrom4([4]byte{10, 211, byte(n), 1})
	client = netip.AddrFrom4([4]byte{10, 211, byte(n), 2})
	ns := testenv.NetNS(t, "s", host.String(), client.String())
	run = func(target string) map[string]string {
		cmd := exec.Command("ip", "netns", "exec", ns, os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), childEnv+"="+target)
		out, _ := cmd.CombinedOutput()
		res := map[string]string{}
		for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			k, v, _ := strings.Cut(line, " ")
			res[k] = v
		}
		return res
	}
	return host, client, run
}

// TestSteerRemoteSource: a client on another host (a network namespace over a veth pair)
// from a flagged source network reaches the proxy instead of the server it dialled, on the
// server's own address; the proxy learns the selector from the kernel. An unflagged source
// reaches the server.
func TestSteerRemoteSource(t *testing.T) {
	s, _ := load(t)
	hostAddr, clientAddr, runRemote := netnsClient(t)
	server := listen(t, "tcp4", "0.0.0.0:0")
	proxy := listen(t, "tcp4", "127.0.0.1:0")
	port := server.addr().Port()
	target := "tcp4:" + netip.AddrPortFrom(hostAddr, port).String()

	if res := runRemote(target); res["reply"] != "from "+server.Addr().String() {
		t.Fatalf("remote client before any flag: %v, want the server", res)
	}
	_ = server.accepted()

	if err := s.AddRemoteRoute(port, proxy.Listener.(*net.TCPListener)); err != nil {
		t.Fatal(err)
	}
	if err := s.FlagSource(netip.PrefixFrom(clientAddr, 32), 9); err != nil {
		t.Fatal(err)
	}
	res := runRemote(target)
	if res["reply"] != "from "+proxy.addr().String() {
		t.Errorf("flagged remote client: %v, want the proxy", res)
	}
	if res["peer"] != netip.AddrPortFrom(hostAddr, port).String() {
		t.Errorf("the flagged remote client thinks it reached %s, want the server it dialled", res["peer"])
	}
	c := proxy.accepted()
	if c == nil {
		t.Fatal("the proxy accepted nothing")
	}
	if local := c.LocalAddr().(*net.TCPAddr).AddrPort(); local != netip.AddrPortFrom(hostAddr, port) {
		t.Errorf("the proxy's side of the connection is %s, want the server address the client dialled", local)
	}
	remote := c.RemoteAddr().(*net.TCPAddr).AddrPort()
	if sel, ok := s.RemoteOrigin(remote); !ok || sel != 9 || remote.Addr() != clientAddr {
		t.Errorf("RemoteOrigin(%s) = %d, %v; want selector 9 for the client %s", remote, sel, ok, clientAddr)
	}
	if server.accepted() != nil {
		t.Error("the flagged remote connection also reached the server")
	}
	// Loopback is for local processes: refused as a source.
	if err := s.FlagSource(netip.MustParsePrefix("127.0.0.0/8"), 3); err == nil {
		t.Error("FlagSource accepted a loopback network")
	}

	if err := s.UnflagSource(netip.PrefixFrom(clientAddr, 32)); err != nil {
		t.Fatal(err)
	}
	if res := runRemote(target); res["reply"] != "from "+server.Addr().String() {
		t.Errorf("remote client after unflagging: %v, want the server", res)
	}
	if st, err := s.Stats(); err != nil || st.Remote != 1 {
		t.Errorf("Stats %+v, %v: want 1 remote connection handed", st, err)
	}
}
