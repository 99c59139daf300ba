// Package audit is the single writer of Vigil's audit trail. Capture and the proxy hand it
// events through a bounded queue that never blocks them; its writer loop numbers them
// (seq), redacts them, links them into a hash chain, signs the chain with periodic anchor
// events and a head file, and appends them in batches to a store. Whatever it cannot keep
// — a full queue, events a failing store (a full disk) could not take, events the store
// had to delete, a tail lost in a crash — becomes a gap event in the same chain, so the
// trail is never silently incomplete. Verify checks a
// stored trail for deleted, altered, reordered, duplicated and cut-off events.
package audit

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/vigil-db/vigil/pkg/event"
	"github.com/vigil-db/vigil/pkg/store"
)

// Defaults for Config.
const (
	DefaultQueueSize = 1 << 16
	DefaultBatchSize = 4096
	DefaultBatchWait = 20 * time.Millisecond
	// DefaultAnchorInterval keeps anchors to about one stored event a second on a busy
	// agent (each costs an Ed25519 signature and a line), and none on an idle one.
	DefaultAnchorInterval = time.Second
)

// maxArena is the most encoding buffer kept between batches.
const maxArena = 16 << 20

// Config configures a Trail.
type Config struct {
	// Host and AgentID are stamped on every event.
	Host, AgentID string
	// StateDir holds the chain id and the signing key (chain.id and agent.key, created on
	// first start) and the head file.
	StateDir string
	// QueueSize bounds the events waiting for the writer; beyond it Emit drops and counts.
	// Default 65536.
	QueueSize int
	// BatchSize is the most events per store append. Default 4096.
	BatchSize int
	// BatchWait is how long the first event of a batch waits for others before the batch
	// is written: fewer, larger appends (and fsyncs) at the cost of that much latency.
	// Default 20ms; negative: write whatever is queued at once.
	BatchWait time.Duration
	// AnchorInterval is the least time between anchor events; an anchor is written with
	// the first batch after it has passed, and on shutdown. Default 1s; negative: every
	// batch. The head file covers the events after the last anchor.
	AnchorInterval time.Duration
	// DropParams keeps bind parameters out of the trail.
	DropParams bool
	// Recycle hands every event to event.Recycle once it is stored, for event.New to
	// reuse. Set it only when every producer gives up its events at Emit (the agent's
	// capture and proxy do).
	Recycle bool
	// Redact rewrites statement text before it is stored (the agent passes sqlparse's
	// RedactSecrets, or its normalizer, which replaces every literal, with audit.redact:
	// literals); nil stores it as is.
	Redact func(sql string) string
	// RedactCredentialsOnly says that Redact only removes credentials (sqlparse's
	// RedactSecrets), so events whose source found none (event.Event.NoCredentials) skip it.
	RedactCredentialsOnly bool
	// Tee, if set, receives every event as one JSON line once the store holds it (the
	// agent's --print), with its seq and hash. A failing Tee is logged, never fatal. Use it
	// rather than wrapping the store: the trail needs the store's own methods (Last,
	// SetLossHandler, AppendEncoded), which a wrapper hides.
	Tee io.Writer
	// StoreState, if set, learns whether the store takes the trail's events: ok false,
	// with a sentence saying what fails, what is being lost and what to do, on every failed
	// attempt; ok true once an append succeeds again. The agent shows it on /readyz.
	StoreState func(ok bool, detail string)
	// Logger; default slog.Default().
	Logger *slog.Logger
}

// encodedAppender is implemented by stores that take each event's encoding along with
// it (the local store), sparing the second encoding of every event: the trail already
// has it from hashing.
type encodedAppender interface {
	AppendEncoded(ctx context.Context, events []*event.Event, lines [][]byte) error
}

// Trail is the audit trail writer. Emit is safe for concurrent use; Run runs once.
type Trail struct {
	cfg   Config
	app   store.Appender
	encA  encodedAppender // app, when it takes encodings; else nil
	key   ed25519.PrivateKey
	keyID string
	log   *slog.Logger
	m     *metrics
	head  string // head file path
	// reserve is the reserve file's path (see lastResort).
	reserve string

	// chainID names the chain (chain.id in the state directory; see LoadOrCreateChainID).
	chainID string

	queue    chan *event.Event
	dropped  atomic.Uint64 // dropped by Emit, not yet reported by a gap event
	stopping atomic.Bool   // Run is draining: Emit must not queue any more
	inflight atomic.Int64  // Emits between their stopping check and their send
	wake     chan struct{} // a loss was reported while the queue may be empty
	full     chan struct{} // a batch's worth is queued: stop waiting for more

	lossMu sync.Mutex
	losses []*event.Event // gap events waiting for the writer

	// Writer state, owned by Run.
	seq         uint64
	prevHash    string
	unanchored  int // events since the last anchor
	lastAnchor  time.Time
	pendingHead *Head     // the head of the last stored batch, not yet written
	lastHead    time.Time // when the head file was last written
	batch       []*event.Event
	lines       [][]byte // the encodings of a batch, in arena
	arena       []byte
	fast        bool // appendCanonical fits the event types (see encode.go)
	teeBuf      []byte
	teeFailed   bool
	writeFailed bool
	failedAt    time.Time // when the store started failing
	failErr     error     // its last error
	failLogged  time.Time // when that was last logged
	// Events numbered while the store failed and let go to keep memory bounded: seqs
	// lostFirst..lostFirst+lostN-1, recorded by a gap event once the store writes again.
	lostFirst, lostN uint64
	lostWhy          string
	unstored         []*event.Event // the batch write gave up on at shutdown
}

// New prepares a trail writing to app. It loads or creates the signing key, and continues
// the chain where the store ends (if app reports its end through a Last method, as the
// local store does) or else where the head file says. A head file ahead of the store means
// a tail was lost (a machine crash under a relaxed fsync policy, or a truncated store):
// the first flush writes a gap event for it. If app can report events it deletes unshipped
// (SetLossHandler, as the local store), each becomes a gap event too.
func New(cfg Config, app store.Appender, reg prometheus.Registerer) (*Trail, error) {
	if cfg.StateDir == "" {
		return nil, errors.New("audit: no state directory")
	}
	if cfg.QueueSize <= 0 {
		cfg.QueueSize = DefaultQueueSize
	}
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = DefaultBatchSize
	}
	if cfg.BatchWait == 0 {
		cfg.BatchWait = DefaultBatchWait
	}
	if cfg.AnchorInterval == 0 {
		cfg.AnchorInterval = DefaultAnchorInterval
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	chainID, err := LoadOrCreateChainID(cfg.StateDir)
	if err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	key, err := LoadOrCreateKey(cfg.StateDir)
	if err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	t := &Trail{
		cfg:   cfg,
		app:   app,
		key:   key,
		keyID: KeyID(key.Public().(ed25519.PublicKey)),
		log:   cfg.Logger.With("component", "audit"),
		head:  filepath.Join(cfg.StateDir, HeadFile),
		queue: make(chan *event.Event, cfg.QueueSize),
		wake:  make(chan struct{}, 1),
		full:  make(chan struct{}, 1),
	}
	t.reserve = filepath.Join(cfg.StateDir, ReserveFile)
	t.chainID = chainID
	t.encA, _ = app.(encodedAppender)
	if err := fastEncoderFits(); err != nil {
		t.log.Warn("the event types changed since the trail's encoder was written: encoding with encoding/json, which is slower; update pkg/audit/encode.go", "err", err)
	} else {
		t.fast = true
	}
	if t.m, err = newMetrics(reg, func() float64 { return float64(len(t.queue)) }); err != nil {
		return nil, fmt.Errorf("audit: registering metrics: %w", err)
	}
	if err := t.resume(); err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	t.makeReserve()
	if lr, ok := app.(interface {
		SetLossHandler(func(first, last, lost uint64, detail string))
	}); ok {
		lr.SetLossHandler(t.reportLoss)
	}
	return t, nil
}

// resume finds where the chain continues: after the store's last event, or after the
// head file's when the store cannot say or holds less.
func (t *Trail) resume() error {
	head, err := ReadHead(t.head)
	switch {
	case errors.Is(err, os.ErrNotExist):
		head = nil
	case err != nil:
		t.log.Warn("ignoring unreadable head file", "err", err)
		head = nil
	default:
		if err := head.Verify(t.key.Public().(ed25519.PublicKey)); err != nil {
			t.log.Warn("ignoring head file", "file", t.head, "err", err)
			head = nil
		} else if head.AgentID != t.cfg.AgentID || head.ChainID != t.chainID {
			t.log.Warn("head file is another chain's", "file", t.head, "head_chain", head.Chain(), "chain", chainName(t.cfg.AgentID, t.chainID))
			head = nil
		}
	}
	defer t.announce()
	lastr, ok := t.app.(interface{ Last() (uint64, string) })
	if !ok {
		if head != nil {
			t.seq, t.prevHash = head.Seq, head.Hash
		}
		return nil
	}
	t.seq, t.prevHash = lastr.Last()
	if head != nil && head.Seq > t.seq {
		// Continue numbering after the head, so no seq is ever used twice (the lost events
		// may have been shipped before they were lost here), and chain to what the store
		// holds, so the link stays checkable.
		lost := head.Seq - t.seq
		t.log.Error("the store ends before the head file: events were lost", "store_seq", t.seq, "head_seq", head.Seq)
		t.losses = append(t.losses, &event.Event{
			Type: event.TypeGap,
			Lost: lost,
			Detail: lostRange(t.seq+1, head.Seq, fmt.Sprintf("on restart the store ended at seq %d but the signed head at seq %d "+
				"(a machine crash under a relaxed fsync policy, or a truncated store)", t.seq, head.Seq)),
		})
		t.seq = head.Seq
	}
	return nil
}

// announce queues the chain event that opens a new chain (nothing stored, no head): the
// first flush, which it wakes, writes it as seq 1.
func (t *Trail) announce() {
	if t.seq != 0 || t.chainID == "" {
		return
	}
	t.losses = append(t.losses, &event.Event{
		Type: event.TypeChain, KeyID: t.keyID,
		Detail: fmt.Sprintf("agent %s starts chain %s, signed by key %s", t.cfg.AgentID, t.chainID, t.keyID),
	})
	t.wake <- struct{}{}
}

// lostRange is the Detail of a gap event for seqs that were stored and then lost. Verify
// reads the range back (declaredRange): holes in the chain that it covers are accounted
// for.
func lostRange(first, last uint64, why string) string {
	return fmt.Sprintf("events seq %d..%d lost: %s", first, last, why)
}

// reportLoss turns a store's loss report into a gap event for the next flush. It never
// blocks: it runs inside the store's Append.
func (t *Trail) reportLoss(first, last, lost uint64, detail string) {
	t.lossMu.Lock()
	t.losses = append(t.losses, &event.Event{Type: event.TypeGap, Lost: lost, Detail: lostRange(first, last, detail)})
	t.lossMu.Unlock()
	select {
	case t.wake <- struct{}{}:
	default:
	}
}

func (t *Trail) pendingLosses() bool {
	t.lossMu.Lock()
	defer t.lossMu.Unlock()
	return len(t.losses) > 0
}

// Emit queues e for the trail and takes ownership of it. It never blocks: when the queue
// is full the event is dropped and counted, and the next flush writes a gap event saying
// how many. Events emitted after Run has stopped are dropped and counted the same way, but
// nothing is left to write their gap event: stop producers before stopping Run.
func (t *Trail) Emit(e *event.Event) {
	if e == nil {
		return
	}
	t.inflight.Add(1)
	if t.stopping.Load() {
		t.inflight.Add(-1)
		t.drop()
		return
	}
	select {
	case t.queue <- e:
		if len(t.queue) >= t.cfg.BatchSize {
			select {
			case t.full <- struct{}{}:
			default:
			}
		}
	default:
		t.drop()
	}
	t.inflight.Add(-1)
}

func (t *Trail) drop() {
	t.dropped.Add(1)
	t.m.dropped.Inc()
}

// Run is the writer loop: it batches queued events into the store until ctx ends, then
// stops accepting events, writes everything queued, anchors the chain, writes the head and
// returns. It returns an error only if events could not be stored and their loss could
// not be recorded either (see lastResort).
func (t *Trail) Run(ctx context.Context) error {
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	var failed error // a write gave up: ctx ended while the store failed
	for failed == nil && t.collect(ctx, timer) {
		failed = t.flush(ctx, false)
	}

	// Shut down: no Emit may queue after the final drain. An Emit either sees stopping
	// (and counts a drop) or is counted in inflight until its send is done.
	t.stopping.Store(true)
	for t.inflight.Load() != 0 {
		runtime.Gosched()
	}
	for failed == nil {
		t.takeQueued()
		// A final write can make the store delete, and report, more, or succeed after
		// events were let go: flush until quiet.
		more := len(t.queue) > 0 || t.pendingLosses() || t.lostN > 0
		failed = t.flush(ctx, !more)
		if !more && !t.pendingLosses() && t.lostN == 0 {
			break
		}
	}
	if failed != nil {
		failed = t.lastResort(ctx, failed)
	}
	if n := t.dropped.Load(); n > 0 {
		t.log.Error("events dropped while the trail shut down", "events", n)
	}
	return failed
}

// collect waits for work and gathers a batch into t.batch. It returns false when ctx ends.
func (t *Trail) collect(ctx context.Context, timer *time.Timer) bool {
	var anchorDue <-chan time.Time
	if t.cfg.AnchorInterval > 0 && t.unanchored > 0 {
		d := time.Until(t.lastAnchor.Add(t.cfg.AnchorInterval))
		anchorDue = time.After(max(d, 0))
	}
	select {
	case e := <-t.queue:
		t.batch = append(t.batch, e)
	case <-t.wake:
	case <-anchorDue:
	case <-ctx.Done():
		return false
	}
	if len(t.batch) > 0 && t.cfg.BatchWait > 0 && len(t.queue) < t.cfg.BatchSize {
		// Sleep through the wait instead of receiving each event as it comes: a receive
		// per event woke this goroutine once per statement, a scheduler round trip that
		// cost the agent more CPU than sealing the event. Emit signals full when a batch's
		// worth is queued.
		timer.Reset(t.cfg.BatchWait)
		select {
		case <-timer.C:
		case <-t.full:
		case <-ctx.Done():
		}
		timer.Stop()
	}
	t.takeQueued()
	return true
}

// takeQueued adds what is queued to the batch, up to the batch size, without waiting.
func (t *Trail) takeQueued() {
	for len(t.batch) < t.cfg.BatchSize {
		select {
		case e := <-t.queue:
			t.batch = append(t.batch, e)
		default:
			return
		}
	}
}

// flush seals t.batch — gap events first for what was lost since the last flush, an
// anchor last when one is due (always when final) — and appends it to the store.
func (t *Trail) flush(ctx context.Context, final bool) error {
	if final {
		defer t.writeHead(true)
	}
	now := time.Now()
	var out []*event.Event
	if t.lostN > 0 {
		// First, so that its seq follows the range it records.
		out = append(out, &event.Event{
			Time: now, Type: event.TypeGap, Lost: t.lostN,
			Detail: lostRange(t.lostFirst, t.lostFirst+t.lostN-1, t.lostWhy),
		})
		t.lostN = 0
	}
	if n := t.dropped.Swap(0); n > 0 {
		out = append(out, &event.Event{
			Time: now, Type: event.TypeGap, Lost: n,
			Detail: fmt.Sprintf("audit queue full (%d events): %d events dropped before they were numbered", t.cfg.QueueSize, n),
		})
	}
	t.lossMu.Lock()
	for _, g := range t.losses {
		g.Time = now
		out = append(out, g)
	}
	t.losses = nil
	t.lossMu.Unlock()
	out = append(out, t.batch...)
	if len(out) == 0 && !(final && t.unanchored > 0) && !t.anchorDue(now) {
		return nil
	}

	t.lines = t.lines[:0]
	if cap(t.arena) > maxArena {
		t.arena = nil // one batch of huge statements should not pin that memory for good
	}
	t.arena = t.arena[:0]
	sealed := out[:0]
	for _, e := range out {
		line, err := t.seal(e)
		if err != nil {
			// Unencodable (a time outside years 0-9999): not storable, so counted as
			// dropped and reported by the next gap event.
			t.log.Error("dropping an event that cannot be encoded", "err", err, "type", e.Type, "session", e.SessionID)
			t.drop()
			continue
		}
		sealed = append(sealed, e)
		t.lines = append(t.lines, line)
	}
	if final && t.unanchored > 0 || t.anchorDue(now) {
		a := &event.Event{Time: now, Type: event.TypeAnchor, KeyID: t.keyID}
		line, err := t.seal(a)
		if err != nil {
			return fmt.Errorf("audit: sealing anchor: %w", err)
		}
		sealed = append(sealed, a)
		t.lines = append(t.lines, line)
		t.unanchored = 0
		t.lastAnchor = now
	}
	if err := t.write(ctx, sealed); err != nil {
		return err
	}
	if t.cfg.Recycle {
		for _, e := range sealed {
			event.Recycle(e)
		}
	}
	for i := range t.batch {
		t.batch[i] = nil
	}
	t.batch = t.batch[:0]
	return nil
}

func (t *Trail) anchorDue(now time.Time) bool {
	if t.unanchored == 0 {
		return false
	}
	return t.cfg.AnchorInterval <= 0 || now.Sub(t.lastAnchor) >= t.cfg.AnchorInterval
}

// seal makes e the next link of the chain and returns its encoding: stamps, seq,
// redaction, prev_hash, signature for an anchor, and hash. The hash is over
// e.Canonical(), which is e's encoding without "hash" — the last field — so the stored
// line is the canonical bytes with the hash spliced in before the closing brace, equal to
// e.MarshalJSON() without a second encoding. Lines live in t.arena until the batch is
// written.
func (t *Trail) seal(e *event.Event) ([]byte, error) {
	e.Host, e.AgentID, e.ChainID = t.cfg.Host, t.cfg.AgentID, t.chainID
	e.Seq = t.seq + 1
	if t.cfg.DropParams {
		e.Params = nil
	}
	if t.cfg.Redact != nil && e.Statement != "" && !(t.cfg.RedactCredentialsOnly && e.NoCredentials) {
		e.Statement = t.cfg.Redact(e.Statement)
	}
	e.PrevHash = t.prevHash
	if e.Type == event.TypeAnchor {
		e.Signature = hex.EncodeToString(ed25519.Sign(t.key, anchorMessage(e.AgentID, e.Seq, e.PrevHash)))
	}
	e.Hash = ""
	start := len(t.arena)
	var err error
	if t.fast {
		t.arena, err = appendCanonical(t.arena, e)
	} else {
		var canon []byte
		canon, err = e.Canonical()
		t.arena = append(t.arena, canon...)
	}
	if err != nil {
		t.arena = t.arena[:start]
		return nil, err
	}
	sum := sha256.Sum256(t.arena[start:])
	var hx [2 * sha256.Size]byte
	hex.Encode(hx[:], sum[:])
	e.Hash = string(hx[:])
	t.arena = append(t.arena[:len(t.arena)-1], `,"hash":"`...)
	t.arena = append(append(t.arena, hx[:]...), `"}`...)

	t.seq = e.Seq
	t.prevHash = e.Hash
	if e.Type != event.TypeAnchor {
		t.unanchored++
	}
	return t.arena[start:len(t.arena):len(t.arena)], nil
}

// tee writes the stored batch's lines to cfg.Tee.
func (t *Trail) tee() {
	t.teeBuf = t.teeBuf[:0]
	for _, l := range t.lines {
		t.teeBuf = append(append(t.teeBuf, l...), '\n')
	}
	if _, err := t.cfg.Tee.Write(t.teeBuf); err != nil && !t.teeFailed {
		t.log.Error("writing events to the tee (logged once)", "err", err)
		t.teeFailed = true
	}
	if cap(t.teeBuf) > maxArena {
		t.teeBuf = nil
	}
}

// write appends sealed events, retrying a failing store: the events already carry their
// seqs and links, so the same batch is retried until it is stored. Meanwhile the queue
// fills; once it is nearly full, shed numbers its oldest events and lets them go, for the
// gap event after. Once ctx has ended (shutdown) it tries a few times more and then gives
// up, saying what was not stored.
func (t *Trail) write(ctx context.Context, evs []*event.Event) error {
	if len(evs) == 0 {
		return nil
	}
	// The store must finish a write even while the agent shuts down.
	actx := context.WithoutCancel(ctx)
	backoff := 50 * time.Millisecond
	for attempt := 1; ; attempt++ {
		start := time.Now()
		var err error
		if t.encA != nil {
			err = t.encA.AppendEncoded(actx, evs, t.lines)
		} else {
			err = t.app.Append(actx, evs)
		}
		t.m.write.Observe(time.Since(start).Seconds())
		if err == nil {
			if t.writeFailed {
				t.recovered(attempt)
			}
			break
		}
		t.failing(err, evs, attempt)
		if attempt >= 5 && ctx.Err() != nil {
			t.unstored = evs
			err = fmt.Errorf("audit: events seq %d..%d not stored: %w", evs[0].Seq, evs[len(evs)-1].Seq, err)
			if t.lostN > 0 {
				err = fmt.Errorf("%w; seqs %d..%d were let go before, and no gap event records them", err, t.lostFirst, t.lostFirst+t.lostN-1)
			}
			return err
		}
		maxBackoff := 5 * time.Second
		if diskFull(err) {
			// A retry on a full disk fails at once and costs nothing: retry often, to stop
			// losing events soon after space returns.
			maxBackoff = time.Second
		}
		if ctx.Err() != nil {
			backoff = min(backoff, 200*time.Millisecond) // shutting down: a few quick tries
		}
		t.shed(ctx, backoff)
		backoff = min(2*backoff, maxBackoff)
	}
	for _, e := range evs {
		t.m.countEvent(e.Type)
	}
	if t.cfg.Tee != nil {
		t.tee()
	}
	last := evs[len(evs)-1]
	t.pendingHead = &Head{AgentID: t.cfg.AgentID, ChainID: t.chainID, Seq: last.Seq, Hash: last.Hash}
	t.writeHead(false)
	return nil
}

func diskFull(err error) bool {
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT)
}

// failLogEvery bounds the log lines of a store that keeps failing; readiness and the
// metrics say it on every attempt.
const failLogEvery = 30 * time.Second

// failing says, loudly, that the store refused a batch: a log line on the first failure,
// when the kind of failure changes and every failLogEvery, the disk-full metric and the
// store state on every attempt.
func (t *Trail) failing(err error, evs []*event.Event, attempt int) {
	full := diskFull(err)
	now := time.Now()
	first := !t.writeFailed
	changed := !first && full != diskFull(t.failErr)
	if first {
		t.writeFailed, t.failedAt = true, now
	}
	t.failErr = err
	if full {
		t.m.diskFull.Set(1)
	} else {
		t.m.diskFull.Set(0)
	}
	state := "cannot store events"
	todo := "fix the store"
	if full {
		state = "disk full: cannot store events"
		todo = "free space on the filesystem that holds the store (keep local_store.max_bytes below what it can hold)"
	}
	detail := fmt.Sprintf("%s (%v) since %s; %s. Seqs %d..%d wait in memory", state, err,
		t.failedAt.UTC().Format(time.RFC3339), todo, evs[0].Seq, evs[len(evs)-1].Seq)
	if t.lostN > 0 {
		detail += fmt.Sprintf(", %d events (seqs %d..%d) were let go: a gap event records them once the store writes again",
			t.lostN, t.lostFirst, t.lostFirst+t.lostN-1)
	}
	if t.cfg.StoreState != nil {
		t.cfg.StoreState(false, detail)
	}
	if !first && !changed && now.Sub(t.failLogged) < failLogEvery {
		return
	}
	t.failLogged = now
	args := []any{"err", err, "first_seq", evs[0].Seq, "events", len(evs), "attempt", attempt,
		"failing_for", now.Sub(t.failedAt).Round(time.Millisecond), "lost_events", t.lostN}
	if full {
		t.log.Error("the store's disk is full: events are not being stored; free space on the filesystem that holds the store "+
			"(and keep local_store.max_bytes below what it can hold). Meanwhile the trail holds one batch and its queue in memory "+
			"and lets the oldest queued events go, numbered; a gap event records them once space returns", args...)
		return
	}
	t.log.Error("appending to the store: events are not stored. Until it accepts them again the trail keeps one batch and its "+
		"queue in memory and lets the oldest queued events go, numbered; a gap event records their seqs once the store writes again", args...)
}

// recovered ends a failure: the batch it held is stored, and the next flush, which wake
// brings on even if nothing new is queued, writes the gap event for what was let go.
func (t *Trail) recovered(attempts int) {
	args := []any{"attempts", attempts, "failed_for", time.Since(t.failedAt).Round(time.Millisecond), "lost_events", t.lostN}
	if t.lostN > 0 {
		args = append(args, "lost_first_seq", t.lostFirst, "lost_last_seq", t.lostFirst+t.lostN-1)
	}
	t.log.Info("store accepts events again; a gap event records those let go meanwhile", args...)
	t.writeFailed, t.failErr = false, nil
	t.m.diskFull.Set(0)
	if t.cfg.StoreState != nil {
		t.cfg.StoreState(true, "")
	}
	select {
	case t.wake <- struct{}{}:
	default:
	}
}

// shedPoll is how often shed looks at the queue while the store fails: often enough that
// the queue, at a quarter of its size per look, rarely overflows into Emit's uncounted drops.
const shedPoll = 5 * time.Millisecond

// shed waits d before the next attempt at a failing store. Meanwhile, whenever the queue
// is three quarters full, it takes the oldest queued events down to half and lets them go,
// as lost, under the next seqs: memory stays bounded (one batch held, plus the queue),
// Emit keeps room for the newest events, and the gap event written after names exactly
// the seqs that were let go, so no seq is consumed silently and Verify sees the hole
// accounted for.
func (t *Trail) shed(ctx context.Context, d time.Duration) {
	wait := time.NewTimer(d)
	defer wait.Stop()
	poll := time.NewTicker(shedPoll)
	defer poll.Stop()
	done := ctx.Done()
	if ctx.Err() != nil {
		done = nil // shutting down already: wait the whole (short) backoff
	}
	high, low := cap(t.queue)*3/4, cap(t.queue)/2
	for {
		if len(t.queue) >= high {
			for len(t.queue) > low {
				t.letGo(<-t.queue)
			}
		}
		select {
		case <-wait.C:
			return
		case <-done:
			return
		case <-poll.C:
		}
	}
}

// letGo numbers e as lost, for the gap event of the failure.
func (t *Trail) letGo(e *event.Event) {
	t.seq++
	if t.lostN == 0 {
		t.lostFirst = t.seq
		why := "the store failed"
		if diskFull(t.failErr) {
			why = "the store's disk was full"
		}
		t.lostWhy = fmt.Sprintf("%s (%v) and the audit queue (%d events) filled up: the trail numbered them and let them go",
			why, t.failErr, t.cfg.QueueSize)
	}
	t.lostN++
	t.m.lost.Inc()
	if t.cfg.Recycle {
		event.Recycle(e)
	}
}

// headEvery bounds how often the head file is rewritten: each rewrite is a file create and
// rename, which at one batch every few milliseconds cost as much as storing the events.
// The last stop always writes it, so between rewrites only a crash leaves an older head —
// which Verify reports as an unsigned tail, not as tampering.
const headEvery = 250 * time.Millisecond

// writeHead signs and writes the pending head, at most every headEvery unless forced.
func (t *Trail) writeHead(force bool) {
	h := t.pendingHead
	if h == nil || !force && time.Since(t.lastHead) < headEvery {
		return
	}
	h.Time = time.Now().UTC()
	h.sign(t.key)
	if err := writeHead(t.head, h); err != nil {
		// The trail is intact without it; only tail-truncation checks lose precision.
		t.log.Error("writing the head file", "err", err)
		return
	}
	t.pendingHead, t.lastHead = nil, time.Now()
}
