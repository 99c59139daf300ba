// Command proxy compares pgbench through Vigil's enforcement proxy with pgbench straight
// to PostgreSQL and through PgBouncer (session pooling), in interleaved rounds (the order
// rotates each round, so drift and noise hit every target alike), and reports medians:
// TPS, p50 latency, and the proxy's CPU per transaction. The proxy runs with the default
// policy: guardrails and masking on.
//
//	go run ./bench/proxy -vigil bin/vigil -rounds 3 -duration 10s
//
// -profile DIR writes a CPU profile of the proxy per mode and client count (first round);
// -baseline BINARY adds a second proxy from another build as one more interleaved target,
// for before/after comparisons under the same conditions.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/vigil-db/vigil/bench/internal/profile"
	"github.com/vigil-db/vigil/bench/internal/stats"
	"github.com/vigil-db/vigil/internal/testpg"
)

var server *testpg.Server

// profileDir, when set, receives a CPU profile of the proxy per mode and client count.
var profileDir string

func main() {
	vigil := flag.String("vigil", "bin/vigil", "the vigil binary")
	rounds := flag.Int("rounds", 3, "interleaved rounds")
	duration := flag.Duration("duration", 10*time.Second, "pgbench duration per run")
	clients := flag.String("clients", "1,8,64", "client counts")
	modes := flag.String("modes", "simple,extended", "pgbench -M modes")
	baseline := flag.String("baseline", "", "another vigil binary to run as a second proxy target (vigil-baseline)")
	flag.StringVar(&profileDir, "profile", "", "write a CPU profile of the proxy in each setting's first round to this directory (the agent runs with --pprof)")
	flag.Parse()

	srv, err := testpg.StartServer(testpg.Options{Config: []string{"autovacuum = off", "max_connections = 300"}})
	if err != nil {
		fatal(err)
	}
	server = srv
	defer srv.Stop()
	pgbench(srv.Port, "-i", "-q", "-s", "10")

	bouncerPort, bouncerPID, stopBouncer := startPgBouncer(srv)
	defer stopBouncer()
	onFatal = append(onFatal, stopBouncer)
	proxyPort, proxyPID, metricsAddr, stopProxy := startProxy(*vigil, srv)
	defer stopProxy()
	onFatal = append(onFatal, stopProxy)

	targets := []struct {
		name string
		port int
	}{{"direct", srv.Port}, {"pgbouncer-session", bouncerPort}, {"vigil-proxy", proxyPort}}
	pids := map[string]int{"vigil-proxy": proxyPID, "pgbouncer-session": bouncerPID}
	if *baseline != "" {
		port, pid, _, stop := startProxy(*baseline, srv)
		defer stop()
		onFatal = append(onFatal, stop)
		targets = append(targets, struct {
			name string
			port int
		}{"vigil-baseline", port})
		pids["vigil-baseline"] = pid
	}
	fmt.Printf("%-10s %-4s %-18s %12s %12s %14s\n", "mode", "c", "target", "tps(median)", "p50 ms", "CPU µs/tx")
	for _, mode := range strings.Split(*modes, ",") {
		for _, cs := range strings.Split(*clients, ",") {
			c, _ := strconv.Atoi(cs)
			tps := map[string][]float64{}
			lat := map[string][]float64{}
			// CPU per transaction of the process in the middle: the proxy, and PgBouncer for
			// comparison (both on the same cores as the server and pgbench).
			cpuPerTx := map[string][]float64{}
			for r := 0; r < *rounds; r++ {
				for i := range targets {
					tg := targets[(i+r)%len(targets)]
					var profiled <-chan struct{}
					if profileDir != "" && r == 0 && tg.name == "vigil-proxy" {
						profiled = profile.Fetch(metricsAddr, filepath.Join(profileDir, fmt.Sprintf("%s-c%d.pprof", mode, c)), *duration)
					}
					pid := pids[tg.name]
					cpu0 := procCPU(pid)
					t, l50 := run(tg.port, mode, c, *duration)
					if profiled != nil {
						<-profiled
					}
					if pid != 0 {
						cpuPerTx[tg.name] = append(cpuPerTx[tg.name], (procCPU(pid)-cpu0).Seconds()*1e6/(t*duration.Seconds()))
					}
					tps[tg.name] = append(tps[tg.name], t)
					lat[tg.name] = append(lat[tg.name], l50)
				}
			}
			for _, tg := range targets {
				extra := ""
				if v := cpuPerTx[tg.name]; len(v) > 0 {
					extra = fmt.Sprintf("%14.1f", stats.Median(v))
				}
				fmt.Printf("%-10s %-4d %-18s %12.0f %12.3f %s\n", mode, c, tg.name, stats.Median(tps[tg.name]), stats.Median(lat[tg.name]), extra)
			}
			fmt.Printf("%-10s %-4d ratio proxy/pgbouncer %.2f, proxy/direct %.2f; added p50 vs pgbouncer %+.0f µs\n\n", mode, c,
				stats.Median(tps["vigil-proxy"])/stats.Median(tps["pgbouncer-session"]), stats.Median(tps["vigil-proxy"])/stats.Median(tps["direct"]),
				(stats.Median(lat["vigil-proxy"])-stats.Median(lat["pgbouncer-session"]))*1000)
			if *baseline != "" {
				fmt.Printf("%-10s %-4d ratio baseline/pgbouncer %.2f, proxy/baseline %.2f; baseline added p50 vs pgbouncer %+.0f µs\n\n", mode, c,
					stats.Median(tps["vigil-baseline"])/stats.Median(tps["pgbouncer-session"]), stats.Median(tps["vigil-proxy"])/stats.Median(tps["vigil-baseline"]),
					(stats.Median(lat["vigil-baseline"])-stats.Median(lat["pgbouncer-session"]))*1000)
			}
		}
	}
}

var tpsRe = regexp.MustCompile(`tps = ([0-9.]+) \(without initial connection time\)`)

// run returns TPS and the p50 latency in ms from pgbench's per-transaction log.
func run(port int, mode string, clients int, d time.Duration) (float64, float64) {
	dir, _ := os.MkdirTemp("", "vigil-proxybench-log-")
	defer os.RemoveAll(dir)
	jobs := min(clients, 2)
	out := pgbench(port, "-n", "-S", "-M", mode, "-c", strconv.Itoa(clients), "-j", strconv.Itoa(jobs),
		"-T", strconv.Itoa(int(d.Seconds())), "-l", "--sampling-rate", "0.2", "--log-prefix", filepath.Join(dir, "log"))
	m := tpsRe.FindStringSubmatch(out)
	if m == nil {
		fatal(fmt.Errorf("pgbench printed no tps:\n%s", out))
	}
	tps, _ := strconv.ParseFloat(m[1], 64)
	var lat []float64
	files, _ := filepath.Glob(filepath.Join(dir, "log*"))
	for _, f := range files {
		fh, err := os.Open(f)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(fh)
		for sc.Scan() {
			if fs := strings.Fields(sc.Text()); len(fs) >= 3 {
				if v, err := strconv.ParseFloat(fs[2], 64); err == nil {
					lat = append(lat, v/1000)
				}
			}
		}
		fh.Close()
	}
	return tps, stats.Median(lat)
}

func pgbench(port int, args ...string) string {
	cmd := exec.Command("pgbench", append([]string{"-h", "127.0.0.1", "-p", strconv.Itoa(port), "-U", "postgres"}, append(args, "postgres")...)...)
	cmd.Env = append(os.Environ(), "PGSSLMODE=disable")
	out, err := cmd.CombinedOutput()
	if err != nil {
		fatal(fmt.Errorf("pgbench %v: %v\n%s", args, err, out))
	}
	return string(out)
}

// startPgBouncer starts PgBouncer in session mode; it returns its port and pid.
func startPgBouncer(srv *testpg.Server) (int, int, func()) {
	port, _ := testpg.FreePort()
	dir, _ := os.MkdirTemp("", "vigil-pgbouncer-")
	pg, _ := user.Lookup("postgres")
	uid, _ := strconv.Atoi(pg.Uid)
	gid, _ := strconv.Atoi(pg.Gid)
	_ = os.Chown(dir, uid, gid)
	ini := fmt.Sprintf(`[databases]
postgres = host=127.0.0.1 port=%d dbname=postgres
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = %d
auth_type = trust
auth_file = %s/users.txt
pool_mode = session
default_pool_size = 100
max_client_conn = 500
unix_socket_dir =
logfile = %s/pgbouncer.log
`, srv.Port, port, dir, dir)
	must(os.WriteFile(filepath.Join(dir, "pgbouncer.ini"), []byte(ini), 0o644))
	must(os.WriteFile(filepath.Join(dir, "users.txt"), []byte(`"postgres" ""`+"\n"), 0o644))
	cmd := exec.Command("runuser", "-u", "postgres", "--", "pgbouncer", filepath.Join(dir, "pgbouncer.ini"))
	must(cmd.Start())
	must(stats.WaitPostgres(port))
	// runuser stays as pgbouncer's parent; the CPU to measure is the child's.
	pid := cmd.Process.Pid
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid)); err == nil {
		if f := strings.Fields(string(b)); len(f) == 1 {
			pid, _ = strconv.Atoi(f[0])
		}
	}
	return port, pid, func() {
		// Killing runuser alone would leave PgBouncer running.
		if pid != cmd.Process.Pid {
			_ = syscall.Kill(pid, syscall.SIGTERM)
		}
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		os.RemoveAll(dir)
	}
}

// startProxy starts the agent as a proxy only; it returns the proxy's port, the agent's pid
// and its metrics address (where /debug/pprof is served with -profile).
func startProxy(vigil string, srv *testpg.Server) (int, int, string, func()) {
	port, _ := testpg.FreePort()
	dir, _ := os.MkdirTemp("", "vigil-proxybench-")
	args := []string{"run", "--no-capture", "--state-dir", dir, "--metrics", "127.0.0.1:0", "--log-level", "warn",
		"--metrics-file", filepath.Join(dir, "addr"), "--proxy", fmt.Sprintf("127.0.0.1:%d=%s", port, srv.Addr())}
	if profileDir != "" {
		args = append(args, "--pprof")
	}
	cmd := exec.Command(vigil, args...)
	logf, _ := os.Create(filepath.Join(dir, "agent.log"))
	cmd.Stdout, cmd.Stderr = logf, logf
	must(cmd.Start())
	must(stats.WaitPostgres(port))
	addr, err := os.ReadFile(filepath.Join(dir, "addr"))
	must(err)
	return port, cmd.Process.Pid, string(addr), func() {
		_ = cmd.Process.Signal(os.Interrupt)
		_ = cmd.Wait()
		os.RemoveAll(dir)
	}
}

// procCPU is a process's user+system CPU so far.
func procCPU(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * 10 * time.Millisecond // USER_HZ = 100
}

func must(err error) {
	if err != nil {
		fatal(err)
	}
}

// onFatal stops what main started (PgBouncer, proxies) when fatal exits past its defers.
var onFatal []func()

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "bench:", err)
	for i := len(onFatal) - 1; i >= 0; i-- {
		onFatal[i]()
	}
	if server != nil {
		server.Stop()
	}
	os.Exit(1)
}
