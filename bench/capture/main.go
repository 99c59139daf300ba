// Command capture measures what the Vigil agent costs a busy PostgreSQL: pgbench against a
// throwaway server with the agent attached and without, in interleaved rounds (ABBA order,
// so drift and noise hit both sides alike), reporting the median TPS ratio of paired rounds,
// the agent's CPU per captured statement, its RSS, ring-buffer losses, and completeness
// (statements captured vs statements the server executed, from pg_stat_statements).
//
//	go run ./bench/capture -vigil bin/vigil -rounds 4 -duration 10s
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/vigil-db/vigil/bench/internal/profile"
	"github.com/vigil-db/vigil/bench/internal/stats"
	"github.com/vigil-db/vigil/internal/testpg"
	"github.com/vigil-db/vigil/pkg/event"
	"github.com/vigil-db/vigil/pkg/store"
	"github.com/vigil-db/vigil/pkg/store/local"
)

// profileDir, when set, receives a CPU profile of the agent per scenario; agentConfig is
// a configuration file for the agent.
var profileDir, agentConfig string

type scenario struct {
	name    string
	args    []string // pgbench arguments besides -c/-j/-T
	ssl     string
	clients int
	rate    bool // run at half the saturated rate and report latency
}

func main() {
	vigil := flag.String("vigil", "bin/vigil", "the vigil binary")
	rounds := flag.Int("rounds", 4, "paired rounds per scenario (even: ABBA order)")
	duration := flag.Duration("duration", 10*time.Second, "pgbench duration per run")
	only := flag.String("only", "", "comma-separated scenario names to run (default all)")
	out := flag.String("json", "", "also write results as JSON to this file")
	flag.StringVar(&agentConfig, "agent-config", "", "run the agent with this configuration file (default: none, the defaults)")
	flag.StringVar(&profileDir, "profile", "", "write a CPU profile of the agent in each scenario's first round to this directory (the agent runs with --pprof)")
	flag.Parse()

	srv, err := testpg.StartServer(testpg.Options{Config: []string{
		"shared_preload_libraries = 'pg_stat_statements'", "pg_stat_statements.track_utility = on",
		"pg_stat_statements.max = 1000", "autovacuum = off",
	}})
	if err != nil {
		fatal(err)
	}
	server = srv
	defer srv.Stop()
	must(srv.Psql("postgres", "CREATE EXTENSION pg_stat_statements"))
	pgbench(srv, "disable", "-i", "-q", "-s", "10")

	scenarios := []scenario{
		{name: "select-only c8", args: []string{"-S"}, ssl: "disable", clients: 8},
		{name: "select-only c8 prepared", args: []string{"-S", "-M", "prepared"}, ssl: "disable", clients: 8},
		{name: "tpcb-like c8", args: nil, ssl: "disable", clients: 8},
		{name: "select-only c64", args: []string{"-S"}, ssl: "disable", clients: 64},
		{name: "select-only c8 TLS", args: []string{"-S"}, ssl: "require", clients: 8},
		{name: "select-only c8 half-rate latency", args: []string{"-S"}, ssl: "disable", clients: 8, rate: true},
	}
	var results []result
	for _, sc := range scenarios {
		if *only != "" && !slices.Contains(strings.Split(*only, ","), sc.name) {
			continue
		}
		r := runScenario(srv, *vigil, sc, *rounds, *duration)
		results = append(results, r)
		r.print()
	}
	if *out != "" {
		b, _ := json.MarshalIndent(results, "", "  ")
		must("", os.WriteFile(*out, b, 0o644))
	}
}

type result struct {
	Scenario       string
	BaseTPS        []float64
	AgentTPS       []float64
	Ratios         []float64
	MedianRatio    float64
	CPUPerStmtUS   []float64
	SysPerStmtUS   []float64 // the kernel-mode part of CPUPerStmtUS
	Captured       []float64
	Executed       []float64
	Lost           []float64
	RSSMiB         []float64
	BaseLatP50US   []float64
	AgentLatP50US  []float64
	BaseLatP99US   []float64
	AgentLatP99US  []float64
	Completeness   []float64
	AgentStartSecs []float64
}

func (r result) print() {
	fmt.Printf("\n== %s\n", r.Scenario)
	fmt.Printf("TPS without agent: %s\nTPS with agent:    %s\n", fmtList(r.BaseTPS, "%.0f"), fmtList(r.AgentTPS, "%.0f"))
	fmt.Printf("paired ratios: %s  median %.3f\n", fmtList(r.Ratios, "%.3f"), r.MedianRatio)
	fmt.Printf("agent CPU per captured statement (µs): %s  median %.2f (of which kernel mode: median %.2f)\n", fmtList(r.CPUPerStmtUS, "%.2f"), stats.Median(r.CPUPerStmtUS), stats.Median(r.SysPerStmtUS))
	fmt.Printf("captured/executed: %s  lost records: %s\n", fmtList(r.Completeness, "%.5f"), fmtList(r.Lost, "%.0f"))
	fmt.Printf("agent RSS MiB at end of round: %s\n", fmtList(r.RSSMiB, "%.1f"))
	if len(r.BaseLatP50US) > 0 {
		fmt.Printf("latency p50 µs without/with: %.0f / %.0f   p99: %.0f / %.0f (medians)\n",
			stats.Median(r.BaseLatP50US), stats.Median(r.AgentLatP50US), stats.Median(r.BaseLatP99US), stats.Median(r.AgentLatP99US))
	}
}

func runScenario(srv *testpg.Server, vigil string, sc scenario, rounds int, d time.Duration) result {
	r := result{Scenario: sc.name}
	rate := 0.0
	if sc.rate {
		// Saturated rate without the agent, then half of it for the latency runs.
		rate = run(srv, sc, d, 0).tps / 2
	}
	for i := 0; i < rounds; i++ {
		order := []bool{false, true}
		if i%2 == 1 {
			order = []bool{true, false}
		}
		var base, with pgbenchResult
		for _, withAgent := range order {
			if !withAgent {
				base = run(srv, sc, d, rate)
				continue
			}
			a := startAgent(vigil, srv)
			must("", resetStatements(srv))
			a.resetAt = time.Now()
			cpu0, sys0 := a.cpu()
			var profiled <-chan struct{}
			if profileDir != "" && i == 0 {
				name := strings.NewReplacer(" ", "-", "/", "-").Replace(sc.name)
				profiled = profile.Fetch(a.addr, filepath.Join(profileDir, name+".pprof"), d)
			}
			with = run(srv, sc, d, rate)
			if profiled != nil {
				<-profiled
			}
			time.Sleep(300 * time.Millisecond) // the reader's poll interval and batch wait
			cpu1, sys1 := a.cpu()
			cpu, sys := cpu1-cpu0, sys1-sys0
			executed := executedStatements(srv)
			r.Lost = append(r.Lost, a.metric("vigil_capture_lost_records_total"))
			r.RSSMiB = append(r.RSSMiB, a.rssMiB())
			a.stop() // flushes the trail
			captured := a.capturedFor(srv.Port)
			r.Captured = append(r.Captured, captured)
			r.Executed = append(r.Executed, executed)
			r.Completeness = append(r.Completeness, captured/executed)
			r.CPUPerStmtUS = append(r.CPUPerStmtUS, cpu.Seconds()*1e6/captured)
			r.SysPerStmtUS = append(r.SysPerStmtUS, sys.Seconds()*1e6/captured)
			r.AgentStartSecs = append(r.AgentStartSecs, a.startup.Seconds())
			a.cleanup()
		}
		r.BaseTPS = append(r.BaseTPS, base.tps)
		r.AgentTPS = append(r.AgentTPS, with.tps)
		r.Ratios = append(r.Ratios, with.tps/base.tps)
		if sc.rate {
			r.BaseLatP50US = append(r.BaseLatP50US, base.p50)
			r.AgentLatP50US = append(r.AgentLatP50US, with.p50)
			r.BaseLatP99US = append(r.BaseLatP99US, base.p99)
			r.AgentLatP99US = append(r.AgentLatP99US, with.p99)
		}
	}
	r.MedianRatio = stats.Median(r.Ratios)
	return r
}

type pgbenchResult struct{ tps, p50, p99 float64 }

var tpsRe = regexp.MustCompile(`tps = ([0-9.]+) \(without initial connection time\)`)

func run(srv *testpg.Server, sc scenario, d time.Duration, rate float64) pgbenchResult {
	args := append([]string{"-n", "-c", strconv.Itoa(sc.clients), "-j", "2", "-T", strconv.Itoa(int(d.Seconds()))}, sc.args...)
	var logDir string
	if rate > 0 {
		logDir, _ = os.MkdirTemp("", "vigil-bench-log-")
		defer os.RemoveAll(logDir)
		args = append(args, "-R", strconv.Itoa(int(rate)), "-l", "--log-prefix", filepath.Join(logDir, "pgbench_log"))
	}
	out := pgbench(srv, sc.ssl, args...)
	m := tpsRe.FindStringSubmatch(out)
	if m == nil {
		fatal(fmt.Errorf("pgbench printed no tps:\n%s", out))
	}
	res := pgbenchResult{}
	res.tps, _ = strconv.ParseFloat(m[1], 64)
	if logDir != "" {
		res.p50, res.p99 = latencies(logDir)
	}
	return res
}

// latencies reads pgbench's per-transaction logs (column 3 is the latency in µs).
func latencies(dir string) (p50, p99 float64) {
	files, _ := filepath.Glob(filepath.Join(dir, "pgbench_log*"))
	var lat []float64
	for _, f := range files {
		fh, err := os.Open(f)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(fh)
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			if len(fields) >= 3 {
				if v, err := strconv.ParseFloat(fields[2], 64); err == nil {
					lat = append(lat, v)
				}
			}
		}
		fh.Close()
	}
	return percentile(lat, 0.5), percentile(lat, 0.99)
}

func pgbench(srv *testpg.Server, ssl string, args ...string) string {
	full := append([]string{"-h", srv.Host, "-p", strconv.Itoa(srv.Port), "-U", "postgres"}, args...)
	full = append(full, "postgres")
	cmd := exec.Command("pgbench", full...)
	cmd.Env = append(os.Environ(), "PGSSLMODE="+ssl)
	out, err := cmd.CombinedOutput()
	if err != nil {
		fatal(fmt.Errorf("pgbench %v: %v\n%s", args, err, out))
	}
	return string(out)
}

func resetStatements(srv *testpg.Server) error {
	_, err := psqlTCP(srv, "SELECT pg_stat_statements_reset()")
	return err
}

// psqlTCP runs the bench's bookkeeping over TCP: a Unix-socket client would switch on the
// agent's on-demand Unix capture, whose host-wide cost is not what the TCP rounds measure.
func psqlTCP(srv *testpg.Server, sql string) (string, error) {
	cmd := exec.Command("psql", "-X", "-q", "-A", "-t", "-h", srv.Host, "-p", strconv.Itoa(srv.Port), "-U", "postgres", "-d", "postgres", "-c", sql)
	cmd.Env = append(os.Environ(), "PGSSLMODE=disable")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("psql %q: %v: %s", sql, err, out)
	}
	return strings.TrimSpace(string(out)), nil
}

// executedStatements counts statements the server ran since the reset, leaving out the
// bench's own bookkeeping queries.
func executedStatements(srv *testpg.Server) float64 {
	out, err := psqlTCP(srv, "SELECT coalesce(sum(calls),0) FROM pg_stat_statements WHERE query NOT LIKE '%pg_stat_statements%'")
	if err != nil {
		fatal(err)
	}
	v, _ := strconv.ParseFloat(strings.TrimSpace(out), 64)
	return v
}

type agent struct {
	resetAt time.Time
	cmd     *exec.Cmd
	vigil   string
	dir     string
	addr    string
	startup time.Duration
}

func startAgent(vigil string, srv *testpg.Server) *agent {
	dir, err := os.MkdirTemp("", "vigil-bench-agent-")
	if err != nil {
		fatal(err)
	}
	a := &agent{vigil: vigil, dir: dir}
	start := time.Now()
	args := []string{"run", "--state-dir", dir, "--metrics", "127.0.0.1:0",
		"--metrics-file", filepath.Join(dir, "addr"), "--log-format", "text", "--log-level", "warn"}
	if profileDir != "" {
		args = append(args, "--pprof")
	}
	if agentConfig != "" {
		args = append(args, "--config", agentConfig)
	}
	a.cmd = exec.Command(vigil, args...)
	logf, _ := os.Create(filepath.Join(dir, "agent.log"))
	a.cmd.Stdout, a.cmd.Stderr = logf, logf
	if err := a.cmd.Start(); err != nil {
		fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if b, err := os.ReadFile(filepath.Join(dir, "addr")); err == nil && len(b) > 0 {
			a.addr = string(b)
			if resp, err := http.Get("http://" + a.addr + "/readyz"); err == nil {
				resp.Body.Close()
				if resp.StatusCode == 200 && a.watching(srv) {
					a.startup = time.Since(start)
					return a
				}
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	log, _ := os.ReadFile(filepath.Join(dir, "agent.log"))
	fatal(fmt.Errorf("agent not ready in 30s:\n%s", log))
	return nil
}

// watching: capture records statements of the bench server (a probe statement shows up).
func (a *agent) watching(srv *testpg.Server) bool {
	if a.metric("vigil_capture_servers") == 0 {
		return false
	}
	before := a.metric("vigil_capture_statements_total")
	pgbench(srv, "disable", "-n", "-t", "1", "-c", "1", "-S")
	time.Sleep(200 * time.Millisecond)
	return a.metric("vigil_capture_statements_total") > before
}

// capturedFor counts the statements the agent stored for the server on port, leaving out
// the bench's own bookkeeping (the same filter as executedStatements).
func (a *agent) capturedFor(port int) float64 {
	st, err := local.Open(filepath.Join(a.dir, "events"), local.Options{ReadOnly: true}, nil)
	if err != nil {
		fatal(err)
	}
	defer st.Close()
	suffix := ":" + strconv.Itoa(port)
	n := 0.0
	err = st.Read(context.Background(), store.Query{Type: event.TypeStatement}, func(e *event.Event) error {
		if strings.HasSuffix(e.ServerAddr, suffix) && !strings.Contains(e.Statement, "pg_stat_statements") && e.Time.After(a.resetAt) {
			n++
		}
		return nil
	})
	if err != nil {
		fatal(err)
	}
	return n
}

// cleanup removes what the stopped agent left: its state directory, and the capture it
// kept pinned, whose hooks would otherwise tax the next baseline run.
func (a *agent) cleanup() {
	if out, err := exec.Command(a.vigil, "unpin", "--state-dir", a.dir).CombinedOutput(); err != nil {
		fatal(fmt.Errorf("vigil unpin: %v: %s", err, out))
	}
	os.RemoveAll(a.dir)
}

func (a *agent) stop() {
	_ = a.cmd.Process.Signal(os.Interrupt)
	done := make(chan error, 1)
	go func() { done <- a.cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		_ = a.cmd.Process.Kill()
		<-done
	}
}

// metric sums every series of a metric family from /metrics.
func (a *agent) metric(name string) float64 {
	resp, err := http.Get("http://" + a.addr + "/metrics")
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	sum := 0.0
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name) {
			continue
		}
		rest := line[len(name):]
		if rest != "" && rest[0] != ' ' && rest[0] != '{' {
			continue
		}
		f := strings.Fields(line)
		if v, err := strconv.ParseFloat(f[len(f)-1], 64); err == nil {
			sum += v
		}
	}
	return sum
}

// cpu is the agent's user+system CPU so far, and the system part.
func (a *agent) cpu() (total, sys time.Duration) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", a.cmd.Process.Pid))
	if err != nil {
		return 0, 0
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * time.Second / 100, time.Duration(st) * time.Second / 100 // USER_HZ
}

func (a *agent) rssMiB() float64 {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", a.cmd.Process.Pid))
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "VmRSS:") {
			kb, _ := strconv.ParseFloat(strings.Fields(l)[1], 64)
			return kb / 1024
		}
	}
	return 0
}

func percentile(v []float64, p float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	i := int(p * float64(len(s)-1))
	return s[i]
}

func fmtList(v []float64, f string) string {
	parts := make([]string, len(v))
	for i, x := range v {
		parts[i] = fmt.Sprintf(f, x)
	}
	return "[" + strings.Join(parts, " ") + "]"
}

func must(_ string, err error) {
	if err != nil {
		fatal(err)
	}
}

// server is stopped by fatal too: os.Exit skips deferred calls.
var server *testpg.Server

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "bench:", err)
	if server != nil {
		server.Stop()
	}
	os.Exit(1)
}
