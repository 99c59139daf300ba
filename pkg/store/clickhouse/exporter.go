package clickhouse

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/vigil-db/vigil/pkg/event"
	"github.com/vigil-db/vigil/pkg/store"
)

// Spool is the local store in front of ClickHouse (pkg/store/local implements it): the
// exporter reads it in seq order from its cursor, sleeps on WaitAfter until there is more,
// and reports progress with SetShipped so that the spool knows what it may reclaim.
type Spool interface {
	store.Reader
	WaitAfter(ctx context.Context, seq uint64) error
	SetShipped(seq uint64)
	Last() (seq uint64, hash string)
}

// ExporterConfig tunes the exporter. Zero values take the defaults.
type ExporterConfig struct {
	// Dir holds the cursor (export.cursor) and dead-letter files; put it beside the spool.
	Dir string
	// BatchRows sends a batch as soon as this many events wait. Default 50,000.
	BatchRows int
	// BatchInterval sends whatever waits once the first of it has waited this long: about
	// one insert per second, as ClickHouse prefers. Default 1s.
	BatchInterval time.Duration
	// MinBackoff and MaxBackoff bound the wait between retries. Defaults 200ms and 30s.
	MinBackoff, MaxBackoff time.Duration
	// ShutdownTimeout bounds how long a stopped Run keeps shipping: the batch being sent,
	// then the spool up to its last event at the stop (retrying as usual). What is left
	// after it stays in the spool for the next start. Default 10s.
	ShutdownTimeout time.Duration
	// HeadFile is the trail's signed head file (head.json in the state directory). When set,
	// the exporter publishes each head into the store once the store holds the event it
	// names, so that the store can be verified from another machine (vigil_heads).
	HeadFile string
	// RetentionEvery is how often retention runs on servers without TTL. Default 1h.
	RetentionEvery time.Duration
	// Report, when set, hears after each attempt to reach ClickHouse how it went: err nil
	// once one succeeded; permanent when only a change of configuration or grants can fix
	// it (a missing database the user may not create, a bad password, missing privileges).
	Report func(err error, permanent bool)
	Logger *slog.Logger
}

// Exporter ships the spool to ClickHouse: batches by size and time, one batch in flight,
// retries with backoff, a dead-letter file for batches ClickHouse rejects for their
// schema. Delivery is exactly once in effect: a batch may reach ClickHouse more than once
// (a lost acknowledgement, a crash before the cursor was saved), but every copy is the
// same batch, which the schema collapses (see eventsDDL, activityDDL) and FINAL reads once.
type Exporter struct {
	st    *Store
	spool Spool
	cfg   ExporterConfig
	log   *slog.Logger
	m     *metrics

	cursorPath string
	cur        cursor
	shipped    atomic.Uint64
	lastRet    time.Time
	heads      headQueue
}

// NewExporter prepares an exporter from spool to st. reg receives its metrics (nil: none).
func NewExporter(st *Store, spool Spool, cfg ExporterConfig, reg prometheus.Registerer) (*Exporter, error) {
	if cfg.Dir == "" {
		return nil, errors.New("clickhouse exporter: no directory for the cursor")
	}
	if cfg.BatchRows <= 0 {
		cfg.BatchRows = 50_000
	}
	if cfg.BatchInterval <= 0 {
		cfg.BatchInterval = time.Second
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = 200 * time.Millisecond
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = 30 * time.Second
	}
	if cfg.ShutdownTimeout <= 0 {
		cfg.ShutdownTimeout = 10 * time.Second
	}
	if cfg.RetentionEvery <= 0 {
		cfg.RetentionEvery = time.Hour
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if err := os.MkdirAll(cfg.Dir, 0o750); err != nil {
		return nil, fmt.Errorf("clickhouse exporter: %w", err)
	}
	x := &Exporter{st: st, spool: spool, cfg: cfg, log: cfg.Logger.With("component", "clickhouse-exporter"),
		cursorPath: filepath.Join(cfg.Dir, "export.cursor")}
	cur, err := loadCursor(x.cursorPath)
	if err != nil {
		return nil, err
	}
	x.cur = cur
	x.shipped.Store(cur.Shipped)
	backlog := func() float64 {
		last, _ := spool.Last()
		if s := x.shipped.Load(); last > s {
			return float64(last - s)
		}
		return 0
	}
	if x.m, err = newMetrics(reg, backlog); err != nil {
		return nil, err
	}
	x.m.shipped.Set(float64(cur.Shipped))
	if cur.Shipped > 0 {
		spool.SetShipped(cur.Shipped)
	}
	return x, nil
}

// Shipped is the highest seq ClickHouse has acknowledged.
func (x *Exporter) Shipped() uint64 { return x.shipped.Load() }

// Run ships until ctx ends, then drains: it finishes the batch being sent and ships the
// spool up to the last event it held when ctx ended (the agent stops the exporter after
// the trail's final flush, so that is the whole trail), within ShutdownTimeout. What it
// could not ship in that time it logs (how many, which seqs) and leaves in the spool for
// the next start; it returns nil. Errors from ClickHouse never end it: they are logged,
// counted and retried, while capture goes on filling the spool. It returns an error only
// when the spool or the cursor file fails.
//
// Reading the spool and building the columns of the next batch (stage) runs while the
// current batch is being sent: a batch costs about as much CPU to decode and lay out as
// ClickHouse spends inserting it, and in one goroutine each side waited for the other.
// Still one batch is in flight to ClickHouse, sent in seq order, and the cursor is
// written as before; the staged batch is only read from the spool, so a crash loses
// nothing.
func (x *Exporter) Run(ctx context.Context) error {
	// Sends outlive ctx by ShutdownTimeout: a stop must not abort the batch in flight, and
	// the drain after it has the same deadline.
	sendCtx, cancelSend := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelSend()
	go func() {
		select {
		case <-ctx.Done():
		case <-sendCtx.Done():
			return
		}
		t := time.NewTimer(x.cfg.ShutdownTimeout)
		defer t.Stop()
		select {
		case <-t.C:
			cancelSend()
		case <-sendCtx.Done():
		}
	}()
	if err := x.pump(ctx, sendCtx); ctx.Err() == nil {
		return err
	}
	stoppedAt := time.Now()
	target, _ := x.spool.Last()
	err := x.drain(sendCtx, target)
	return x.reportStop(target, time.Since(stoppedAt), err)
}

// pump ships batches as the spool fills until ctx ends (or the spool or cursor fails).
// Sends use sendCtx.
func (x *Exporter) pump(ctx, sendCtx context.Context) error {
	if err := x.prepare(ctx); err != nil {
		return err
	}
	if x.cur.InflightLast > 0 {
		if err := x.resendInflight(sendCtx); err != nil {
			return err
		}
	}
	ready := make(chan *staged)
	free := make(chan *staged, 2) // one being sent, one being built
	free <- new(staged)
	free <- new(staged)
	// The stage's context ends with ctx, or when pump returns for another reason: it may
	// be waiting on the spool.
	sctx, cancelStage := context.WithCancel(ctx)
	stop := make(chan struct{})
	stageDone := make(chan struct{})
	go func(after uint64) {
		defer close(stageDone)
		x.stage(sctx, after, ready, free, stop)
	}(x.cur.Shipped)
	defer func() {
		cancelStage()
		close(stop)
		<-stageDone
	}()
	for {
		b := <-ready
		if len(b.events) > 0 {
			if err := x.ship(sendCtx, b, b.events[len(b.events)-1].Seq); err != nil {
				return err
			}
		}
		if b.err != nil {
			return b.err
		}
		free <- b
		x.retention(ctx)
	}
}

// resendInflight sends exactly the batch that was in flight when the exporter last
// stopped (or crashed): the same events, so its copies in ClickHouse are identical.
func (x *Exporter) resendInflight(ctx context.Context) error {
	b := new(staged)
	if err := x.readRange(ctx, b, x.cur.Shipped, x.cur.InflightLast, 0); err != nil {
		return err
	}
	x.log.Info("resending the batch that was in flight when the exporter stopped",
		"first", x.cur.InflightFirst, "last", x.cur.InflightLast, "events", len(b.events))
	return x.ship(ctx, b, x.cur.InflightLast)
}

// drain ships the spool up to seq target, in batches of at most BatchRows, until ctx
// ends.
func (x *Exporter) drain(ctx context.Context, target uint64) error {
	if x.cur.InflightLast > 0 {
		if err := x.resendInflight(ctx); err != nil {
			return err
		}
	}
	b := new(staged)
	for x.Shipped() < target {
		if err := x.readRange(ctx, b, x.Shipped(), target, x.cfg.BatchRows); err != nil {
			return err
		}
		if len(b.events) == 0 {
			return nil // the rest of the range is gone from the spool (its cap; a gap event says so)
		}
		if err := x.ship(ctx, b, b.events[len(b.events)-1].Seq); err != nil {
			return err
		}
	}
	return nil
}

// reportStop says how the drain ended. Events it could not ship are not lost: they stay
// in the spool, and the next start ships them first.
func (x *Exporter) reportStop(target uint64, took time.Duration, err error) error {
	shipped := x.Shipped()
	if shipped >= target {
		x.log.Info("exporter stopped: ClickHouse has the whole spool", "shipped", shipped, "drain", took.Round(time.Millisecond))
		return nil
	}
	x.log.Error("exporter stopped before ClickHouse had the whole spool: the rest stays in the spool and ships at the next start",
		"unshipped_seqs", target-shipped, "first", shipped+1, "last", target, "shutdown_timeout", x.cfg.ShutdownTimeout, "err", err)
	if err != nil && !errors.Is(err, context.Canceled) {
		return fmt.Errorf("draining the spool to ClickHouse: %w", err)
	}
	return nil
}

// staged is a batch read from the spool and laid out in columns, ready to send. err, when
// set, is why collecting stopped (ctx ended, or the spool failed) after these events.
type staged struct {
	events []*event.Event
	cols   eventColumnsBuf
	err    error
}

// stage collects batches of the events after seq after, in order, and hands them to Run
// through ready, taking empty buffers from free, until collecting fails (ctx ended) or
// stop is closed (Run returned).
func (x *Exporter) stage(ctx context.Context, after uint64, ready chan<- *staged, free <-chan *staged, stop <-chan struct{}) {
	for {
		var b *staged
		select {
		case b = <-free:
		case <-stop:
			return
		}
		b.err = x.collect(ctx, b, after)
		if len(b.events) > 0 {
			after = b.events[len(b.events)-1].Seq
		}
		select {
		case ready <- b:
		case <-stop:
			return
		}
		if b.err != nil {
			return
		}
	}
}

var errFull = errors.New("batch full")

// collect waits for events after seq after and fills b with a batch: BatchRows events as
// soon as they are there, or fewer once the first has waited BatchInterval. With ctx
// ended it keeps what it has and returns ctx's error.
func (x *Exporter) collect(ctx context.Context, b *staged, after uint64) error {
	b.events = reuse(b.events, x.cfg.BatchRows)
	b.cols.reset(x.cfg.BatchRows)
	var deadline time.Time
	for {
		err := x.spool.Read(ctx, store.Query{AfterSeq: after}, func(e *event.Event) error {
			b.events = append(b.events, e)
			b.cols.add(e)
			after = e.Seq
			if len(b.events) >= x.cfg.BatchRows {
				return errFull
			}
			return nil
		})
		if err != nil && !errors.Is(err, errFull) {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("reading the spool after seq %d: %w", after, err)
		}
		if len(b.events) >= x.cfg.BatchRows {
			return nil
		}
		if len(b.events) > 0 && deadline.IsZero() {
			deadline = time.Now().Add(x.cfg.BatchInterval)
		}
		if !deadline.IsZero() && !time.Now().Before(deadline) {
			return nil
		}
		wctx, cancel := ctx, context.CancelFunc(func() {})
		if !deadline.IsZero() {
			wctx, cancel = context.WithDeadline(ctx, deadline)
		}
		err = x.spool.WaitAfter(wctx, after)
		cancel()
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err != nil && !errors.Is(err, context.DeadlineExceeded) {
			return fmt.Errorf("waiting for the spool: %w", err)
		}
	}
}

// readRange fills b with the events after..last from the spool (at most limit of them
// when limit > 0).
func (x *Exporter) readRange(ctx context.Context, b *staged, after, last uint64, limit int) error {
	b.events = reuse(b.events, x.cfg.BatchRows)
	b.cols.reset(x.cfg.BatchRows)
	err := x.spool.Read(ctx, store.Query{AfterSeq: after}, func(e *event.Event) error {
		if e.Seq > last {
			return errFull
		}
		b.events = append(b.events, e)
		b.cols.add(e)
		if limit > 0 && len(b.events) >= limit {
			return errFull
		}
		return nil
	})
	if err != nil && !errors.Is(err, errFull) {
		return fmt.Errorf("reading the spool after seq %d: %w", after, err)
	}
	return nil
}

// ship sends one batch until ClickHouse acknowledges it, ctx ends, or ClickHouse rejects
// it for its schema (then it goes to the dead-letter file). last is the batch's last seq.
func (x *Exporter) ship(ctx context.Context, b *staged, last uint64) error {
	batch := b.events
	if len(batch) == 0 {
		return x.advance(ctx, last)
	}
	x.cur.InflightFirst, x.cur.InflightLast = batch[0].Seq, last
	if err := x.cur.save(x.cursorPath); err != nil {
		return err
	}
	backoff := x.cfg.MinBackoff
	for attempt := 1; ; attempt++ {
		start := time.Now()
		err := x.st.insert(ctx, &b.cols, batch[0].Seq, last)
		if err == nil {
			x.m.batch.Observe(time.Since(start).Seconds())
			x.m.events.Add(float64(len(batch)))
			if attempt > 1 {
				x.log.Info("ClickHouse accepted the batch again", "first", batch[0].Seq, "last", last, "attempts", attempt)
			}
			x.report(nil, false)
			return x.advance(ctx, last)
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		kind := classify(err)
		x.m.errors.WithLabelValues(string(kind)).Inc()
		err = describe(err, x.st.cfg)
		switch kind {
		case kindSchema:
			path, derr := x.deadLetter(batch)
			if derr != nil {
				return fmt.Errorf("ClickHouse rejected a batch (%v) and writing the dead-letter file failed: %w", err, derr)
			}
			x.m.deadLetter.Add(float64(len(batch)))
			x.log.Error("ClickHouse REJECTED a batch for its schema: the events are in the dead-letter file and the local store, NOT in ClickHouse; fix the schema and re-import them",
				"err", err, "first", batch[0].Seq, "last", last, "events", len(batch), "dead_letter", path)
			return x.advance(ctx, last)
		}
		if err := x.retryWait(ctx, kind, err, "insert", attempt, &backoff); err != nil {
			return err
		}
	}
}

// prepare connects and migrates the schema (creating the database where the user may)
// before the first batch, retrying like a batch, so that /readyz says early whether
// ClickHouse will take the trail.
func (x *Exporter) prepare(ctx context.Context) error {
	backoff := x.cfg.MinBackoff
	for attempt := 1; ; attempt++ {
		_, err := x.st.Migrate(ctx)
		if err == nil {
			x.report(nil, false)
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		kind := classify(err)
		x.m.errors.WithLabelValues(string(kind)).Inc()
		if err := x.retryWait(ctx, kind, err, "schema migration", attempt, &backoff); err != nil {
			return err
		}
	}
}

// retryWait logs and reports a failed attempt (what: the kind of attempt) and sleeps
// before the next; it returns ctx's error if ctx ends first. A configuration error waits at
// the ceiling straight away: only an operator can fix it, and quick retries only fill the
// log and the server's.
func (x *Exporter) retryWait(ctx context.Context, kind errorKind, err error, what string, attempt int, backoff *time.Duration) error {
	if kind == kindConfig {
		*backoff = x.cfg.MaxBackoff
		x.log.Error("cannot deliver to ClickHouse until the configuration is fixed; events wait in the spool",
			"err", err, "attempt", attempt, "retry_in", *backoff)
	} else {
		lvl := slog.LevelWarn
		if attempt >= 5 {
			lvl = slog.LevelError
		}
		x.log.Log(ctx, lvl, "ClickHouse "+what+" failed; events wait in the spool", "err", err, "attempt", attempt, "retry_in", *backoff)
	}
	x.report(err, kind == kindConfig)
	// Full jitter keeps a fleet of agents from retrying in step after an outage.
	t := time.NewTimer(*backoff/2 + rand.N(*backoff/2+1))
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
	}
	*backoff = min(*backoff*2, x.cfg.MaxBackoff)
	return nil
}

func (x *Exporter) report(err error, permanent bool) {
	if x.cfg.Report != nil {
		x.cfg.Report(err, permanent)
	}
}

// advance records that everything up to last is delivered.
func (x *Exporter) advance(ctx context.Context, last uint64) error {
	x.cur = cursor{Shipped: last}
	if err := x.cur.save(x.cursorPath); err != nil {
		return err
	}
	x.shipped.Store(last)
	x.m.shipped.Set(float64(last))
	x.spool.SetShipped(last)
	x.publishHead(ctx, last)
	return nil
}

// publishHead publishes the newest head that names an event the store now holds (seq up
// to last). The head file runs ahead of what is shipped (the trail rewrites it on every
// flush), so each head read waits in x.heads until shipping passes it. A head that could
// not be published is tried again after the next batch; a verifier without it checks up
// to an older head.
func (x *Exporter) publishHead(ctx context.Context, last uint64) {
	if x.cfg.HeadFile == "" {
		return
	}
	if h, err := readHeadFile(x.cfg.HeadFile); err != nil {
		x.log.Warn("reading the signed head to publish it", "err", err)
	} else if h != nil {
		x.heads.push(*h)
	}
	h, ok := x.heads.popUpTo(last)
	if !ok {
		return
	}
	if err := x.st.PublishHead(ctx, h.AgentID, h.ChainID, h.Seq, h.raw); err != nil {
		x.log.Warn("publishing the signed head into ClickHouse failed; trying again after the next batch", "seq", h.Seq, "err", describe(err, x.st.cfg))
		x.heads.retry(h)
		return
	}
	x.m.headSeq.Set(float64(h.Seq))
}

// deadLetter writes the batch as JSON lines to dead-letter-<first>-<last>.jsonl.
func (x *Exporter) deadLetter(batch []*event.Event) (string, error) {
	path := filepath.Join(x.cfg.Dir, fmt.Sprintf("dead-letter-%020d-%020d.jsonl", batch[0].Seq, batch[len(batch)-1].Seq))
	f, err := os.OpenFile(path, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o640)
	if err != nil {
		return path, err
	}
	w := bufio.NewWriter(f)
	for _, e := range batch {
		b, err := e.MarshalJSON()
		if err != nil {
			f.Close()
			return path, err
		}
		w.Write(b)
		w.WriteByte('\n')
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return path, err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return path, err
	}
	return path, f.Close()
}

// retention runs Store.EnforceRetention every RetentionEvery (servers without TTL).
func (x *Exporter) retention(ctx context.Context) {
	if time.Since(x.lastRet) < x.cfg.RetentionEvery {
		return
	}
	x.lastRet = time.Now()
	dropped, err := x.st.EnforceRetention(ctx, time.Now())
	if err != nil {
		x.log.Warn("enforcing ClickHouse retention", "err", err)
		return
	}
	if len(dropped) > 0 {
		x.log.Info("dropped partitions past retention", "partitions", dropped)
	}
}
