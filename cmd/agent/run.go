package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/spf13/cobra"

	"github.com/vigil-db/vigil/pkg/approval"
	"github.com/vigil-db/vigil/pkg/audit"
	"github.com/vigil-db/vigil/pkg/capture"
	"github.com/vigil-db/vigil/pkg/capture/postgres"
	"github.com/vigil-db/vigil/pkg/config"
	"github.com/vigil-db/vigil/pkg/enforce"
	"github.com/vigil-db/vigil/pkg/event"
	"github.com/vigil-db/vigil/pkg/health"
	"github.com/vigil-db/vigil/pkg/identity"
	"github.com/vigil-db/vigil/pkg/policy"
	"github.com/vigil-db/vigil/pkg/sqlparse"
)

// runFlags are the flags of `vigil run`; set ones override the config file.
type runFlags struct {
	configFile, storeURL, policyFile, metrics, metricsFile, stateDir string
	logFormat, logLevel, agentID                                     string
	print, noCapture, pprof                                          bool
	proxies                                                          []string
}

func newRunCmd() *cobra.Command {
	cmd, _ := runCommand()
	return cmd
}

// runCommand is `vigil run` and the flags it fills.
func runCommand() (*cobra.Command, *runFlags) {
	fl := &runFlags{}
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Run the agent until SIGTERM/SIGINT, then flush and exit 0",
		Long: `Run the agent: capture every statement of the PostgreSQL servers on this host with eBPF,
label it with the policy, and write the audit trail to the store. With --proxy, also run an
enforcement proxy in front of an upstream server.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadRunConfig(cmd, fl)
			if err != nil {
				return err
			}
			log, err := newLogger(cmd.ErrOrStderr(), cfg.Log)
			if err != nil {
				return err
			}
			return runAgent(cmd.Context(), cfg, fl, cmd.OutOrStdout(), log)
		},
	}
	f := cmd.Flags()
	f.StringVar(&fl.configFile, "config", "", "agent configuration file (YAML)")
	f.StringVar(&fl.storeURL, "store", "", "store URL: local:DIR (default local:<state-dir>/events) or clickhouse://host:port/db")
	f.StringVar(&fl.policyFile, "policy", "", "policy file (default: the shipped default policy)")
	f.StringVar(&fl.metrics, "metrics", "", "listen address for /metrics and /readyz (default 127.0.0.1:9477)")
	f.StringVar(&fl.metricsFile, "metrics-file", "", "write the bound metrics address to this file once listening (useful with --metrics 127.0.0.1:0)")
	f.StringVar(&fl.stateDir, "state-dir", "", "state directory: signing key, head file, default store (default /var/lib/vigil)")
	f.StringVar(&fl.agentID, "agent-id", "", "this agent's id in the trail (default: host name)")
	f.StringVar(&fl.logFormat, "log-format", "", "json or text (default json)")
	f.StringVar(&fl.logLevel, "log-level", "", "debug, info, warn or error (default info)")
	f.BoolVar(&fl.print, "print", false, "also write each event as one JSON line to stdout")
	f.BoolVar(&fl.noCapture, "no-capture", false, "do not load the eBPF capture (proxy only)")
	f.BoolVar(&fl.pprof, "pprof", false, "serve Go's profiler on the metrics address under /debug/pprof/")
	f.StringArrayVar(&fl.proxies, "proxy", nil, "LISTEN=UPSTREAM: run an enforcement proxy on LISTEN in front of UPSTREAM (repeatable)")
	return cmd, fl
}

func loadRunConfig(cmd *cobra.Command, fl *runFlags) (*config.Config, error) {
	var cfg *config.Config
	if fl.configFile != "" {
		var err error
		if cfg, err = config.Load(fl.configFile); err != nil {
			return nil, err
		}
	} else {
		cfg = &config.Config{}
	}
	set := func(name string, dst *string, v string) {
		if cmd.Flags().Changed(name) {
			*dst = v
		}
	}
	set("store", &cfg.Store, fl.storeURL)
	set("policy", &cfg.Policy, fl.policyFile)
	set("metrics", &cfg.Metrics, fl.metrics)
	set("agent-id", &cfg.AgentID, fl.agentID)
	set("log-format", &cfg.Log.Format, fl.logFormat)
	set("log-level", &cfg.Log.Level, fl.logLevel)
	if cmd.Flags().Changed("state-dir") {
		// The store follows the state directory unless the file or --store put it
		// elsewhere (a file's defaults already point under the file's state directory).
		underState := cfg.Store == "" || cfg.Store == config.DefaultStore(cfg.StateDir)
		cfg.StateDir = fl.stateDir
		if !cmd.Flags().Changed("store") && underState {
			cfg.Store = ""
		}
	}
	if fl.noCapture {
		off := false
		cfg.Capture.Enabled = &off
	}
	for _, p := range fl.proxies {
		px, err := config.ParseProxyFlag(p)
		if err != nil {
			return nil, err
		}
		cfg.Proxies = append(cfg.Proxies, px)
	}
	// Defaults fill what neither the file nor the flags set; validation then sees the
	// final configuration.
	if err := cfg.Complete(); err != nil {
		return nil, err
	}
	return cfg, nil
}

func newLogger(w io.Writer, l config.Log) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(l.Level)); err != nil {
		return nil, fmt.Errorf("log level %q: %w", l.Level, err)
	}
	opts := &slog.HandlerOptions{Level: level}
	if l.Format == "text" {
		return slog.New(slog.NewTextHandler(w, opts)), nil
	}
	return slog.New(slog.NewJSONHandler(w, opts)), nil
}

// runAgent wires the agent: store ← trail ← (capture, proxies), plus the health server.
// Shutdown runs in the opposite order, so every event in flight reaches the store.
func runAgent(ctx context.Context, cfg *config.Config, fl *runFlags, stdout io.Writer, log *slog.Logger) error {
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return fmt.Errorf("state directory: %w", err)
	}
	lock, err := lockStateDir(cfg.StateDir)
	if err != nil {
		return err
	}
	defer lock.Close()
	// Read before capture starts, which rewrites it: how the previous agent ended decides
	// what the trail must say about the time in between (steering's part; capture records
	// its own).
	prev, hadPrev, err := capture.ReadPreviousRun(captureStateFile(cfg.StateDir))
	if err != nil {
		log.Warn("the previous agent's state cannot be read: a window without steering may go unrecorded", "err", err)
	}
	var prevRun *capture.PreviousRun
	if hadPrev {
		prevRun = &prev
	}
	// Batch scheduling suits capture, which only watches, but not the proxy, which sits in
	// the path of every statement it serves: there it measured 3-7% less throughput.
	if len(cfg.Proxies) == 0 {
		if err := schedBatch(); err != nil {
			log.Warn("agent threads keep the default scheduling policy (SCHED_BATCH refused): they may preempt database backends", "err", err)
		}
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	status := health.NewStatus()

	st, err := openStore(ctx, cfg, reg, log)
	if err != nil {
		return err
	}
	// Until the trail runs, a failing step closes the store here; from then on shutdown does,
	// after the trail's last flush.
	storeOpen := true
	defer func() {
		if storeOpen {
			if err := st.close(); err != nil {
				log.Error("closing the store", "error", err)
			}
		}
	}()

	engine, err := loadPolicy(cfg.Policy)
	if err != nil {
		return err
	}
	// Credentials in statements (CREATE ROLE … PASSWORD) are always redacted; "literals"
	// redacts every constant.
	redact, credentialsOnly := sqlparse.RedactSecrets, true
	if cfg.Audit.Redact == "literals" {
		redact, credentialsOnly = sqlparse.NormalizePostgres, false
	}
	var tee io.Writer
	if fl.print {
		tee = stdout
	}
	trailState := newTrailHealth()
	trail, err := audit.New(audit.Config{
		Host: cfg.Host, AgentID: cfg.AgentID, StateDir: cfg.StateDir,
		QueueSize: cfg.Audit.QueueEvents, DropParams: !*cfg.Audit.RecordParams,
		AnchorInterval: cfg.Audit.AnchorInterval, BatchWait: cfg.Audit.BatchWait,
		Recycle: true,
		Redact:  redact, RedactCredentialsOnly: credentialsOnly, Tee: tee, StoreState: trailState.set, Logger: log,
	}, st.appender, reg)
	if err != nil {
		return fmt.Errorf("audit trail: %w", err)
	}

	var hopts []health.Option
	if fl.pprof {
		hopts = append(hopts, health.WithPprof())
	}
	hs, err := health.Listen(cfg.Metrics, reg, status, log, hopts...)
	if err != nil {
		return err
	}
	if fl.metricsFile != "" {
		if err := writeFileAtomic(fl.metricsFile, []byte(hs.Addr())); err != nil {
			hs.Close()
			return fmt.Errorf("--metrics-file: %w", err)
		}
	}
	log.Info("agent starting", "agent_id", cfg.AgentID, "store", redactURL(cfg.Store), "metrics", hs.Addr(), "policy", policyName(cfg.Policy))

	// The trail outlives its producers: it stops only after capture and the proxies have
	// returned and emitted their last events.
	trailCtx, stopTrail := context.WithCancel(context.Background())
	defer stopTrail()
	trailDone := make(chan error, 1)
	go func() { trailDone <- trail.Run(trailCtx) }()

	hctx, stopHealth := context.WithCancel(context.Background())
	defer stopHealth()
	go func() {
		if err := hs.Serve(hctx); err != nil {
			log.Error("metrics server stopped", "error", err)
		}
	}()

	var (
		wg       sync.WaitGroup
		errMu    sync.Mutex
		firstErr error
	)
	fail := func(err error) {
		errMu.Lock()
		if firstErr == nil {
			firstErr = err
		}
		errMu.Unlock()
	}
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()

	// shutdown stops everything in order, whether the agent was told to stop or a start-up
	// step failed: the producers (capture, steering, proxies, sockets), then the trail's
	// last flush, then the exporter's drain, then the store.
	var (
		steering   *steering
		stopExport = func() {}
		exportDone = make(chan struct{})
		shutdown   sync.Once
	)
	close(exportDone) // until the exporter runs
	stopAll := func() {
		shutdown.Do(func() {
			cancel()
			if steering != nil {
				// New connections go where their clients dial before the proxies stop listening.
				steering.close()
			}
			wg.Wait()
			stopTrail()
			if err := <-trailDone; err != nil {
				fail(fmt.Errorf("flushing the trail: %w", err))
			}
			stopExport()
			<-exportDone
			storeOpen = false
			if err := st.close(); err != nil {
				fail(fmt.Errorf("closing the store: %w", err))
			}
		})
	}
	// abort is how a step that fails after the trail started returns.
	abort := func(err error) error {
		stopAll()
		return err
	}

	// Rules that flag what capture sees them match look at capture's events on the way.
	var flagger *ruleFlagger
	var captureSink event.Sink = trail
	if engine.FlagsWorkloads() {
		flagger = newRuleFlagger(trail, engine, log)
		captureSink = flagger
	}
	idOpts := identityOptions(cfg, log, reg)
	var capt *capture.Capturer
	if *cfg.Capture.Enabled {
		capt, err = newCapturer(cfg, captureSink, engine, idOpts, log, reg)
		if err != nil {
			return abort(err)
		}
		status.Set("capture", health.Component{Required: true, Detail: "loading eBPF programs"})
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := capt.Run(runCtx); err != nil {
				log.Error("capture stopped", "error", err)
				status.Set("capture", health.Component{Required: true, Detail: err.Error()})
				fail(err)
				cancel()
			}
		}()
		go reportCaptureStatus(runCtx, capt, status)
	}

	// Steering is loaded before the proxies (their sessions ask it who connected) and
	// routes into each proxy only once that proxy accepts.
	steering, err = startSteering(cfg, trail, log, prevRun)
	if err != nil {
		return abort(fmt.Errorf("steering: %w", err))
	}
	var (
		routed      sync.WaitGroup
		routeFailed atomic.Bool
	)
	switch {
	case flagger != nil && steering != nil:
		flagger.st.Store(steering)
		go flagger.run(runCtx, cfg)
	case flagger != nil:
		log.Warn("the policy has rules that flag workloads, but steering is not running (it needs a proxy): they flag nothing")
	}
	if steering != nil {
		defer steering.close()
		go steering.expire(runCtx)
		go steering.followWorkloads(runCtx, workloadRules(cfg, engine), identity.New(idOpts))
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := serveAdmin(runCtx, cfg.StateDir, steering, log); err != nil {
				log.Error("vigil flags cannot reach this agent", "err", err)
			}
		}()
		status.Set("steer", health.Component{Required: true, Detail: "waiting for the proxies to listen"})
	}
	var approvals *approval.Store
	if len(cfg.Proxies) > 0 {
		channels, secrets, err := approvalChannels(cfg.Approvals, cfg.AgentID)
		if err == nil {
			approvals, err = openApprovals(runCtx, cfg.StateDir, engine, channels, trail, reg, log)
		}
		if err != nil {
			return abort(err)
		}
		if secrets.web != nil {
			key, err := audit.LoadOrCreateKey(cfg.StateDir)
			if err != nil {
				return abort(fmt.Errorf("approvals.web: %w", err))
			}
			secrets.web.key = webCookieKey(key)
		}
		if cfg.Approvals.CallbackListen != "" {
			cl, err := net.Listen("tcp", cfg.Approvals.CallbackListen)
			if err != nil {
				return abort(fmt.Errorf("approvals.callback_listen: %w", err))
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := serveCallbacks(runCtx, cl, approvals, secrets, reg, log); err != nil {
					log.Error("approval channels' callbacks cannot reach this agent", "err", err)
				}
			}()
		}
		l, err := listenControl(cfg.StateDir, cfg.Approvals.SocketGroup)
		if err != nil {
			return abort(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := serveControl(runCtx, l, approvals, log); err != nil {
				log.Error("vigil approvals cannot reach this agent", "err", err)
			}
		}()
	}
	for i, px := range cfg.Proxies {
		p, err := newProxy(px, *cfg.Audit.RecordParams, engine, trail, capt, steering, approvals, idOpts, reg, log)
		if err != nil {
			return abort(fmt.Errorf("proxy %d (%s → %s): %w", i, px.Listen, px.Upstream, err))
		}
		name := "proxy " + px.Listen
		l, err := enforce.Listen(runCtx, px.Listen)
		if err != nil {
			return abort(fmt.Errorf("proxy %d: listening on %s: %w", i, px.Listen, err))
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := p.ServeListener(runCtx, l); err != nil {
				log.Error("proxy stopped", "listen", px.Listen, "error", err)
				status.Set(name, health.Component{Required: true, Detail: err.Error()})
				fail(err)
				cancel()
			}
		}()
		if steering != nil {
			routed.Add(1)
		}
		go func() {
			if steering != nil {
				defer routed.Done()
			}
			select {
			case <-p.Ready():
				status.Set(name, health.Component{Required: true, Ready: true, Detail: px.Listen + " → " + px.Upstream})
			case <-runCtx.Done():
				return
			}
			if steering == nil {
				return
			}
			if err := steering.addRoutes(runCtx, px, l); err != nil {
				// Flagged workloads would reach this server unproxied: not ready, loudly,
				// but capture and the other proxies carry on.
				log.Error("flagged connections are not steered into this proxy", "listen", px.Listen, "upstream", px.Upstream, "err", err)
				status.Set("steer", health.Component{Required: true, Detail: err.Error()})
				routeFailed.Store(true)
			}
		}()
		status.Set(name, health.Component{Required: true, Detail: "starting"})
	}
	if steering != nil {
		go func() {
			routed.Wait()
			if runCtx.Err() == nil && !routeFailed.Load() {
				status.Set("steer", health.Component{Required: true, Ready: true, Detail: fmt.Sprintf("%d selectors, %d proxies", len(cfg.Steer), len(cfg.Proxies))})
			}
		}()
	}
	if capt == nil && len(cfg.Proxies) == 0 {
		return abort(errors.New("nothing to do: capture is off and no --proxy was given"))
	}
	status.Set("store", health.Component{Required: true, Ready: true, Detail: redactURL(cfg.Store)})
	trailState.publish(status)
	// The exporter drains the spool after the trail's last flush, so a clean stop leaves
	// nothing behind in it.
	if st.run != nil {
		exportCtx, cancelExport := context.WithCancel(context.Background())
		defer cancelExport()
		stopExport, exportDone = cancelExport, make(chan struct{})
		go func() {
			defer close(exportDone)
			st.run(exportCtx, status)
		}()
	}

	<-runCtx.Done()
	log.Info("agent stopping: flushing")
	stopAll()
	if firstErr != nil {
		return firstErr
	}
	log.Info("agent stopped")
	return nil
}

// trailHealth is the "trail" component of /readyz: whether the trail's appends to the
// local store or spool succeed (apart from "store", which the ClickHouse exporter
// reports). A full disk makes the agent not ready, saying what to do. It is published only
// once the other components are registered: an early "ready" alone would make /readyz
// answer 200 while capture still loads.
type trailHealth struct {
	mu     sync.Mutex
	c      health.Component
	status *health.Status // nil until published
}

func newTrailHealth() *trailHealth {
	return &trailHealth{c: health.Component{Required: true, Ready: true, Detail: "storing events"}}
}

// set is the trail's StoreState.
func (h *trailHealth) set(ok bool, detail string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.c = health.Component{Required: true, Ready: ok, Detail: detail}
	if ok {
		h.c.Detail = "storing events"
	}
	if h.status != nil {
		h.status.Set("trail", h.c)
	}
}

func (h *trailHealth) publish(s *health.Status) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.status = s
	s.Set("trail", h.c)
}

// reportCaptureStatus publishes which hooks attached on /readyz.
func reportCaptureStatus(ctx context.Context, c *capture.Capturer, status *health.Status) {
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	for {
		if c.Ready() {
			var items []health.Item
			for _, h := range c.Hooks() {
				items = append(items, health.Item{Name: h.Name, OK: h.Attached, Error: h.Err})
			}
			status.Set("capture", health.Component{Required: true, Ready: true, Items: items})
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func newCapturer(cfg *config.Config, sink event.Sink, engine *policy.Engine, idOpts identity.Options, log *slog.Logger, reg prometheus.Registerer) (*capture.Capturer, error) {
	cc := capture.Config{
		Host:         cfg.Host,
		Identity:     idOpts,
		Decoder:      postgres.Config{MaxStatementBytes: cfg.Capture.MaxStatementBytes, RecordParams: *cfg.Audit.RecordParams},
		TLS:          *cfg.Capture.TLS,
		Unix:         *cfg.Capture.UnixSockets,
		UnixAlwaysOn: cfg.Capture.UnixAlwaysOn,
		UnixQuiet:    cfg.Capture.UnixQuiet,
		Discover:     *cfg.Capture.Discover,
		Interval:     cfg.Capture.DiscoverInterval,
		RingBytes:    cfg.Capture.RingBufferBytes,
		StateFile:    captureStateFile(cfg.StateDir),
	}
	pins, err := pinDirFor(cfg.StateDir)
	if err != nil {
		return nil, err
	}
	if *cfg.Capture.KeepAcrossRestarts {
		cc.PinDir = pins
	} else {
		cc.StalePinDir = pins
	}
	for _, s := range cfg.Capture.Servers {
		cc.Servers = append(cc.Servers, capture.StaticServer{Ports: s.Ports, Binary: s.Binary})
	}
	c, err := capture.New(cc, sink, engine, log.With("component", "capture"), reg)
	if err != nil {
		return nil, fmt.Errorf("capture: %w", err)
	}
	return c, nil
}

func loadPolicy(path string) (*policy.Engine, error) {
	p := policy.Default()
	if path != "" {
		var err error
		if p, err = policy.Load(path); err != nil {
			return nil, err
		}
	}
	e, err := policy.NewEngine(p)
	if err != nil {
		return nil, fmt.Errorf("policy: %w", err)
	}
	return e, nil
}

func policyName(path string) string {
	if path == "" {
		return "default"
	}
	return path
}

func writeFileAtomic(path string, data []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Clean(path))
}

// redactURL drops credentials from a store URL before it is logged.
func redactURL(u string) string {
	if i := strings.Index(u, "://"); i >= 0 {
		if j := strings.LastIndex(u[i+3:], "@"); j >= 0 {
			return u[:i+3] + "…@" + u[i+3+j+1:]
		}
	}
	return u
}
