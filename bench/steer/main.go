// Command steer measures what steering costs: connect() of a process that is not flagged,
// with the steering programs attached versus not (they run on every connect() on the
// host), and the throughput of a steered pgbench versus the same pgbench pointed at the
// proxy by hand. Rounds are interleaved (ABBA), medians reported. Needs root.
//
//	go run ./bench/steer -vigil bin/vigil -rounds 4 -duration 10s
package main

import (
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vigil-db/vigil/bench/internal/stats"
	"github.com/vigil-db/vigil/internal/testpg"
	"github.com/vigil-db/vigil/pkg/cgroupfs"
	"github.com/vigil-db/vigil/pkg/steer"
)

// childEnv makes the binary a client that connects ADDR N times and prints ns per connect.
const childEnv = "VIGIL_BENCH_CONNECT"

func main() {
	if v := os.Getenv(childEnv); v != "" {
		connectLoop(v)
		return
	}
	vigil := flag.String("vigil", "bin/vigil", "the vigil binary")
	rounds := flag.Int("rounds", 4, "interleaved rounds (each runs both sides)")
	connects := flag.Int("connects", 20000, "connect() calls per client run")
	duration := flag.Duration("duration", 10*time.Second, "pgbench duration per run")
	flag.Parse()

	root, err := cgroupfs.Root()
	must(err)
	connectCost(root, *rounds, *connects)
	steeredThroughput(*vigil, root, *rounds, *duration)
}

// connectCost: a client in no flagged cgroup connects to a local listener; the programs
// have a route (another server) and a flag (another cgroup), as on a host with steering
// configured for someone else.
func connectCost(root string, rounds, n int) {
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	must(err)
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	other := mkCgroup(root, "other")
	defer os.Remove(filepath.Join(root, other))

	attach := func() *steer.Steerer {
		s, err := steer.Load(steer.Config{CgroupRoot: root}, slog.New(slog.DiscardHandler))
		must(err)
		must(s.AddRoute(netip.MustParseAddrPort("127.0.0.1:5999"), netip.MustParseAddrPort("127.0.0.1:6999")))
		must(s.FlagCgroup(other, 1))
		return s
	}
	res := map[bool][]float64{}
	for r := 0; r < rounds; r++ {
		for _, on := range []bool{r%2 == 0, r%2 != 0} { // ABBA
			var s *steer.Steerer
			if on {
				s = attach()
			}
			res[on] = append(res[on], connectRun(l.Addr().String(), n))
			if s != nil {
				must(s.Close())
			}
		}
	}
	fmt.Printf("connect() of an unflagged process, %d calls per run, %d rounds:\n", n, rounds)
	fmt.Printf("  without steering programs: median %.1f µs (%s)\n", stats.Median(res[false])/1000, list(res[false], 1000))
	fmt.Printf("  with steering programs:    median %.1f µs (%s)\n", stats.Median(res[true])/1000, list(res[true], 1000))
}

func connectRun(addr string, n int) float64 {
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s,%d", childEnv, addr, n))
	out, err := cmd.CombinedOutput()
	must(err)
	v, err := strconv.ParseFloat(strings.TrimSpace(string(out)), 64)
	must(err)
	return v
}

// connectLoop is the child: n connect() and close() of a raw socket, timed around the
// connect() calls only.
func connectLoop(spec string) {
	addr, ns, _ := strings.Cut(spec, ",")
	n, _ := strconv.Atoi(ns)
	ap := netip.MustParseAddrPort(addr)
	sa := &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()}
	var total time.Duration
	for i := 0; i < n; i++ {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		must(err)
		start := time.Now()
		err = unix.Connect(fd, sa)
		total += time.Since(start)
		must(err)
		unix.Close(fd)
	}
	fmt.Println(float64(total.Nanoseconds()) / float64(n))
}

var tpsRe = regexp.MustCompile(`tps = ([0-9.]+)`)

// steeredThroughput: pgbench from a flagged cgroup, dialling the server (steered into the
// proxy) versus dialling the proxy itself.
func steeredThroughput(vigil, root string, rounds int, d time.Duration) {
	srv, err := testpg.StartServer(testpg.Options{Config: []string{"autovacuum = off"}})
	must(err)
	defer srv.Stop()
	pgbench(srv.Port, -1, "-i", "-q", "-s", "10")
	flagged := mkCgroup(root, "flagged")
	defer os.Remove(filepath.Join(root, flagged))
	fd, err := unix.Open(filepath.Join(root, flagged), unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC, 0)
	must(err)
	defer unix.Close(fd)

	dir, err := os.MkdirTemp("", "vigil-steerbench-")
	must(err)
	defer os.RemoveAll(dir)
	cfg := filepath.Join(dir, "vigil.yaml")
	must(os.WriteFile(cfg, []byte("steer:\n  - {name: bench, cgroup: "+flagged+"}\n"), 0o600))
	proxyPort, err := testpg.FreePort()
	must(err)
	cmd := exec.Command(vigil, "run", "--no-capture", "--config", cfg, "--state-dir", filepath.Join(dir, "state"),
		"--metrics", "127.0.0.1:0", "--log-level", "warn", "--proxy", fmt.Sprintf("127.0.0.1:%d=%s", proxyPort, srv.Addr()))
	logf, err := os.Create(filepath.Join(dir, "agent.log"))
	must(err)
	cmd.Stdout, cmd.Stderr = logf, logf
	must(cmd.Start())
	defer func() {
		_ = cmd.Process.Signal(os.Interrupt)
		_ = cmd.Wait()
	}()
	must(stats.WaitPostgres(proxyPort))
	time.Sleep(time.Second) // routes go live once the proxy accepts

	res := map[string][]float64{}
	targets := []struct {
		name string
		port int
	}{{"steered (dials the server)", srv.Port}, {"pointed at the proxy", proxyPort}}
	for r := 0; r < rounds; r++ {
		order := []int{0, 1}
		if r%2 == 1 {
			order = []int{1, 0}
		}
		for _, i := range order {
			out := pgbench(targets[i].port, fd, "-n", "-S", "-c", "8", "-j", "2", "-T", strconv.Itoa(int(d.Seconds())))
			m := tpsRe.FindStringSubmatch(out)
			if m == nil {
				fatal(fmt.Errorf("pgbench printed no tps:\n%s", out))
			}
			v, _ := strconv.ParseFloat(m[1], 64)
			res[targets[i].name] = append(res[targets[i].name], v)
		}
	}
	fmt.Printf("pgbench -S -c 8 from a flagged cgroup, %v per run, %d rounds (tps, rounds in thousands):\n", d, rounds)
	for _, t := range targets {
		fmt.Printf("  %-28s median %.0f tps (%s)\n", t.name, stats.Median(res[t.name]), list(res[t.name], 1000))
	}
}

// pgbench runs pgbench against 127.0.0.1:port, in the cgroup open at cgroupFD (-1: the
// caller's).
func pgbench(port, cgroupFD int, args ...string) string {
	cmd := exec.Command("pgbench", append([]string{"-h", "127.0.0.1", "-p", strconv.Itoa(port), "-U", "postgres"}, append(args, "postgres")...)...)
	cmd.Env = append(os.Environ(), "PGSSLMODE=disable")
	if cgroupFD >= 0 {
		cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: cgroupFD}
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		fatal(fmt.Errorf("pgbench %v: %v\n%s", args, err, out))
	}
	return string(out)
}

func mkCgroup(root, name string) string {
	path := fmt.Sprintf("/vigil-bench-%d-%s", os.Getpid(), name)
	must(os.Mkdir(filepath.Join(root, path), 0o755))
	return path
}

// list prints the rounds divided by div.
func list(v []float64, div float64) string {
	parts := make([]string, len(v))
	for i, x := range v {
		parts[i] = strconv.FormatFloat(x/div, 'f', 1, 64)
	}
	return strings.Join(parts, " ")
}

func must(err error) {
	if err != nil {
		fatal(err)
	}
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "bench:", err)
	os.Exit(1)
}
