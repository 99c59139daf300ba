package approval

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/vigil-db/vigil/pkg/event"
)

// Status is where a request stands.
type Status string

// Statuses of a request. Only pending and approved ones can still change.
const (
	StatusPending   Status = "pending"   // waiting for approvers
	StatusApproved  Status = "approved"  // granted, with uses left
	StatusUsed      Status = "used"      // granted, every use spent
	StatusDenied    Status = "denied"    // an approver said no
	StatusExpired   Status = "expired"   // nobody decided in time, or the grant expired unused
	StatusWithdrawn Status = "withdrawn" // the client cancelled the held statement
	StatusRefused   Status = "refused"   // the stored grant failed verification (altered)
)

// Defaults of Terms fields left zero.
const (
	DefaultExpiry = 15 * time.Minute
	DefaultUses   = 1
)

// retention is how long finished requests stay in the store (and in `vigil approvals
// list`); the trail keeps their history for good.
const retention = 7 * 24 * time.Hour

// Terms are what the deciding rule says about its approvals.
type Terms struct {
	// Hold is how long the proxy holds the statement waiting for a decision; zero refuses
	// it at once with the request id, to be retried once approved.
	Hold time.Duration `json:"hold_ns"`
	// Approvers are policy principal groups or "os:USER" names; empty: anyone but the
	// requester who can reach the control socket.
	Approvers []string `json:"approvers,omitempty"`
	// Required is how many distinct approvers must approve (default 1).
	Required int `json:"required"`
	// Expiry is how long a grant stays valid once issued (default 15 minutes); a request
	// refused at once stays pending as long.
	Expiry time.Duration `json:"expiry_ns"`
	// Uses is how many times a grant lets the statement run (default 1).
	Uses int `json:"uses"`
}

func (t Terms) withDefaults() Terms {
	if t.Required < 1 {
		t.Required = 1
	}
	if t.Expiry <= 0 {
		t.Expiry = DefaultExpiry
	}
	if t.Uses < 1 {
		t.Uses = DefaultUses
	}
	return t
}

// Statement is one statement that needs an approval, and who sent it.
type Statement struct {
	// Requester is the principal: a verified email, "oidc:SUBJECT", or "db:USER".
	Requester string
	// RequesterUID is the client process's uid when the agent knows it: an approver with
	// the same uid is the requester (self-approval).
	RequesterUID *int32
	DBUser       string
	Database     string
	// Text, Params and Formats (a Bind's parameters and their format codes) are hashed,
	// never stored: Display and ShownParams are what is shown and recorded (credentials
	// redacted; parameters only where the trail records them).
	Text        string
	Params      [][]byte
	Formats     []int16
	Display     string
	ShownParams []string
	Fingerprint string
	Rule        string
	SessionID   string
}

// Vote is one approver's decision.
type Vote struct {
	By     string    `json:"by"`
	Reason string    `json:"reason,omitempty"`
	Time   time.Time `json:"time"`
}

// Request is one statement waiting for, or holding, an approval. Its JSON is both the file
// in the store and a line of `vigil approvals list --json`.
type Request struct {
	ID              string    `json:"id"`
	Status          Status    `json:"status"`
	Requester       string    `json:"requester"`
	RequesterUID    *int32    `json:"requester_uid,omitempty"`
	DBUser          string    `json:"db_user,omitempty"`
	Database        string    `json:"database"`
	Statement       string    `json:"statement"`
	Params          []string  `json:"params,omitempty"`
	Fingerprint     string    `json:"fingerprint,omitempty"`
	StatementSHA256 string    `json:"statement_sha256"`
	Rule            string    `json:"rule"`
	SessionID       string    `json:"session_id,omitempty"`
	Created         time.Time `json:"created"`
	// Deadline is when a pending request expires.
	Deadline  time.Time `json:"deadline"`
	Terms     Terms     `json:"terms"`
	Approvals []Vote    `json:"approvals,omitempty"`
	Denial    *Vote     `json:"denial,omitempty"`
	Grant     *Grant    `json:"grant,omitempty"`
	UsesLeft  int       `json:"uses_left,omitempty"`
	// Detail says why the request last changed (expired, withdrawn, refused).
	Detail string `json:"detail,omitempty"`
}

// Approver is who approves or denies, as the channel they came through vouches for them.
type Approver struct {
	// Principal is "os:USER" (the control socket's peer) or a verified identity.
	Principal string
	// UID is the approving process's uid (the control socket's peer), when known.
	UID    *int32
	Email  string
	Groups []string
}

// Options configure a Store.
type Options struct {
	// Dir holds one file per request (<state dir>/approvals).
	Dir string
	// Key signs grants: the agent's key.
	Key ed25519.PrivateKey
	// Sink receives an approval event for every step.
	Sink event.Sink
	// Authorize reports whether a belongs to a rule's approvers (policy groups or os:
	// names). Nil accepts anyone when approvers is empty and matches os: names otherwise.
	Authorize func(approvers []string, a Approver) bool
	// Registerer takes the store's metrics (nil: none).
	Registerer prometheus.Registerer
	Logger     *slog.Logger
	// Now is the clock (tests); nil: time.Now.
	Now func() time.Time

	// Channels are told of every new request (Delivery says how it went).
	Channels []Channel
	// NotifyAttempts, NotifyTimeout and NotifyBackoff bound each channel's delivery (zero:
	// the defaults).
	NotifyAttempts int
	NotifyTimeout  time.Duration
	NotifyBackoff  time.Duration
	// Context ends deliveries in progress (the agent stopping); nil: never.
	Context context.Context
}

// Store keeps approval requests, durably: every change is written to the request's file
// (atomically, synced) before it takes effect, and Open reloads them.
type Store struct {
	o     Options
	keyID string
	keys  map[string]ed25519.PublicKey
	steps *prometheus.CounterVec
	// notifyFailures counts failed deliveries per channel (each after its retries).
	notifyFailures *prometheus.CounterVec

	mu   sync.Mutex
	reqs map[string]*entry
}

type entry struct {
	r Request
	// done is closed when the request stops being pending.
	done chan struct{}
	// delivery yields the outcome of notifying the channels of a request filed by this
	// process (nil: no channels, or filed before a restart).
	delivery chan error
}

// Open loads the requests in o.Dir (creating it).
func Open(o Options) (*Store, error) {
	if o.Dir == "" || o.Key == nil || o.Sink == nil {
		return nil, errors.New("approval store: a directory, a key and a sink are required")
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Context == nil {
		o.Context = context.Background()
	}
	if o.NotifyAttempts < 1 {
		o.NotifyAttempts = DefaultNotifyAttempts
	}
	if o.NotifyTimeout <= 0 {
		o.NotifyTimeout = DefaultNotifyTimeout
	}
	if o.NotifyBackoff <= 0 {
		o.NotifyBackoff = DefaultNotifyBackoff
	}
	if err := os.MkdirAll(o.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("approval store: %w", err)
	}
	pub := o.Key.Public().(ed25519.PublicKey)
	s := &Store{o: o, keyID: KeyID(pub), keys: map[string]ed25519.PublicKey{KeyID(pub): pub}, reqs: map[string]*entry{}}
	s.steps = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "vigil_approval_steps_total",
		Help: "Approval steps by kind: requested, notified, unnotified, approved, denied, expired, withdrawn, executed, refused.",
	}, []string{"step"})
	for _, st := range []string{"requested", "notified", "unnotified", "approved", "denied", "expired", "withdrawn", "executed", "refused"} {
		s.steps.WithLabelValues(st)
	}
	s.notifyFailures = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "vigil_approval_notify_failures_total",
		Help: "Approval requests a channel could not be told of, after its retries, by channel.",
	}, []string{"channel"})
	for _, ch := range o.Channels {
		s.notifyFailures.WithLabelValues(ch.Name())
	}
	if o.Registerer != nil {
		for _, c := range []prometheus.Collector{s.steps, s.notifyFailures} {
			if err := o.Registerer.Register(c); err != nil {
				return nil, fmt.Errorf("approval store metrics: %w", err)
			}
		}
	}
	files, err := filepath.Glob(filepath.Join(o.Dir, "*.json"))
	if err != nil {
		return nil, fmt.Errorf("approval store: %w", err)
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("approval store: %w", err)
		}
		var r Request
		if err := json.Unmarshal(data, &r); err != nil {
			return nil, fmt.Errorf("approval store: %s: %w (move it away to start without it)", f, err)
		}
		if r.ID+".json" != filepath.Base(f) {
			return nil, fmt.Errorf("approval store: %s holds request %q", f, r.ID)
		}
		e := &entry{r: r, done: make(chan struct{})}
		if r.Status != StatusPending {
			close(e.done)
		}
		s.reqs[r.ID] = e
	}
	return s, nil
}

// KeyID names a public key: the first 8 bytes of its SHA-256 in hex, as the trail's
// anchors name it.
func KeyID(pub ed25519.PublicKey) string {
	sum := sha256.Sum256(pub)
	return hex.EncodeToString(sum[:8])
}

// PublicKeys are the keys Verify accepts grants from: this agent's.
func (s *Store) PublicKeys() map[string]ed25519.PublicKey { return s.keys }

func sameStatement(r *Request, st *Statement, hash string) bool {
	return r.Requester == st.Requester && r.Database == st.Database && r.StatementSHA256 == hash
}

// Use spends one use of an approved grant for exactly this statement from this requester,
// if there is one, and returns its request; ok is false when there is none. The use is
// recorded durably before Use returns, so the statement may run. Grants that fail
// verification on the way (expired, altered) are retired and recorded.
func (s *Store) Use(st Statement) (r Request, ok bool, err error) {
	hash := StatementHash(st.Text, st.Params, st.Formats)
	now := s.o.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	var spent *entry
	pending := false
	for _, e := range s.sorted() {
		if !sameStatement(&e.r, &st, hash) {
			continue
		}
		switch e.r.Status {
		case StatusPending:
			pending = true
			continue
		case StatusUsed:
			spent = e
			continue
		case StatusApproved:
		default:
			continue
		}
		g := e.r.Grant
		if g == nil {
			s.retire(e, StatusRefused, "refused: the request says approved but holds no grant")
			continue
		}
		if err := Verify(*g, s.keys, now); err != nil {
			if errors.Is(err, ErrExpired) {
				s.retire(e, StatusExpired, fmt.Sprintf("expired: the grant expired at %s with %d uses left", g.Expires.UTC().Format(time.RFC3339), e.r.UsesLeft))
			} else {
				s.retire(e, StatusRefused, "refused: "+err.Error())
			}
			continue
		}
		if err := g.Permits(st.Requester, st.Database, hash); err != nil {
			s.retire(e, StatusRefused, "refused: "+err.Error())
			continue
		}
		next := e.r
		next.UsesLeft--
		if next.UsesLeft <= 0 {
			next.Status, next.UsesLeft = StatusUsed, 0
		}
		if err := s.write(&next); err != nil {
			return Request{}, false, err
		}
		e.r = next
		s.record(&e.r, "executed", fmt.Sprintf("executed: use %d of %d, session %s", g.Uses-e.r.UsesLeft, g.Uses, st.SessionID))
		return e.r, true, nil
	}
	if spent != nil && !pending {
		s.record(&spent.r, "refused", fmt.Sprintf("refused: %v, session %s", ErrReplayed, st.SessionID))
	}
	return Request{}, false, nil
}

// Submit returns the pending request for exactly this statement from this requester, or
// files a new one under the rule's terms (created).
func (s *Store) Submit(st Statement, t Terms) (r Request, created bool, err error) {
	hash := StatementHash(st.Text, st.Params, st.Formats)
	t = t.withDefaults()
	now := s.o.Now().UTC()
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, e := range s.sorted() {
		if e.r.Status == StatusPending && sameStatement(&e.r, &st, hash) && now.Before(e.r.Deadline) {
			return e.r, false, nil
		}
	}
	id, err := newID()
	if err != nil {
		return Request{}, false, err
	}
	r = Request{
		ID: id, Status: StatusPending, Requester: st.Requester, RequesterUID: st.RequesterUID,
		DBUser: st.DBUser, Database: st.Database, Statement: st.Display, Params: st.ShownParams, Fingerprint: st.Fingerprint,
		StatementSHA256: hash, Rule: st.Rule, SessionID: st.SessionID, Created: now, Terms: t,
	}
	if t.Hold > 0 {
		r.Deadline = now.Add(t.Hold)
	} else {
		r.Deadline = now.Add(t.Expiry)
	}
	if err := s.write(&r); err != nil {
		return Request{}, false, err
	}
	e := &entry{r: r, done: make(chan struct{})}
	s.reqs[id] = e
	if len(s.o.Channels) > 0 {
		e.delivery = make(chan error, 1)
		go s.deliver(e, r)
	}
	how := fmt.Sprintf("refused at once, approvable until %s", r.Deadline.Format(time.RFC3339))
	if t.Hold > 0 {
		how = "held for up to " + t.Hold.String()
	}
	s.record(&e.r, "requested", fmt.Sprintf("requested: by %s under rule %s: %s; %d approval(s) needed", st.Requester, st.Rule, how, t.Required))
	return r, true, nil
}

// Note records a step of a request that changes nothing in it (the client was notified).
func (s *Store) Note(id, step, detail string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.reqs[id]; ok {
		s.record(&e.r, step, detail)
	}
}

// Wait returns once the request is no longer pending, or when ctx ends.
func (s *Store) Wait(ctx context.Context, id string) (Request, error) {
	s.mu.Lock()
	e, ok := s.reqs[id]
	s.mu.Unlock()
	if !ok {
		return Request{}, ErrUnknownRequest
	}
	select {
	case <-e.done:
	case <-ctx.Done():
		return Request{}, ctx.Err()
	}
	return s.Get(id)
}

// Withdraw ends a pending request without a decision: status is StatusExpired (the hold
// timed out) or StatusWithdrawn (the client cancelled). A request already decided is
// returned as it is.
func (s *Store) Withdraw(id string, status Status, detail string) (Request, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.reqs[id]
	if !ok {
		return Request{}, ErrUnknownRequest
	}
	if e.r.Status != StatusPending {
		return e.r, nil
	}
	s.retire(e, status, detail)
	return e.r, nil
}

// Approve records a's approval; the grant is issued (signed) once the rule's number of
// distinct approvers is reached. Refusals (self-approval, not an approver, a second vote)
// are recorded too.
func (s *Store) Approve(id string, a Approver, reason string) (Request, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, err := s.decidable(id, a, true)
	if err != nil {
		return Request{}, err
	}
	now := s.o.Now().UTC()
	next := e.r
	next.Approvals = append(slices.Clone(e.r.Approvals), Vote{By: a.Principal, Reason: reason, Time: now})
	detail := fmt.Sprintf("approved: by %s%s (%d of %d)", a.Principal, because(reason), len(next.Approvals), next.Terms.Required)
	if len(next.Approvals) >= next.Terms.Required {
		g := &Grant{
			Version: 1, RequestID: next.ID, Requester: next.Requester, Database: next.Database,
			Fingerprint: next.Fingerprint, StatementSHA256: next.StatementSHA256,
			Issued: now, Expires: now.Add(next.Terms.Expiry), Uses: next.Terms.Uses,
		}
		for _, v := range next.Approvals {
			g.Approvers = append(g.Approvers, v.By)
		}
		if err := g.Sign(s.o.Key, s.keyID); err != nil {
			return Request{}, err
		}
		next.Grant, next.Status, next.UsesLeft = g, StatusApproved, g.Uses
		detail += fmt.Sprintf(": granted, %d use(s) until %s", g.Uses, g.Expires.Format(time.RFC3339))
	}
	if err := s.write(&next); err != nil {
		return Request{}, err
	}
	e.r = next
	if next.Status != StatusPending {
		close(e.done)
		go s.followUp(next)
	}
	s.record(&e.r, "approved", detail)
	return e.r, nil
}

// Deny ends a pending request: the held statement fails, a retry needs a new request.
func (s *Store) Deny(id string, a Approver, reason string) (Request, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, err := s.decidable(id, a, false)
	if err != nil {
		return Request{}, err
	}
	next := e.r
	next.Status = StatusDenied
	next.Denial = &Vote{By: a.Principal, Reason: reason, Time: s.o.Now().UTC()}
	if err := s.write(&next); err != nil {
		return Request{}, err
	}
	e.r = next
	close(e.done)
	go s.followUp(next)
	s.record(&e.r, "denied", fmt.Sprintf("denied: by %s%s", a.Principal, because(reason)))
	return e.r, nil
}

func because(reason string) string {
	if reason == "" {
		return ""
	}
	return ": " + reason
}

// decidable finds a pending request that a may decide, recording a refusal otherwise.
// The requester may deny (withdraw) their own request, never approve it.
func (s *Store) decidable(id string, a Approver, approving bool) (*entry, error) {
	e, ok := s.reqs[id]
	if !ok {
		return nil, fmt.Errorf("%w %q", ErrUnknownRequest, id)
	}
	s.expireLocked(e, s.o.Now())
	if e.r.Status != StatusPending {
		return nil, fmt.Errorf("%w: %s is %s", ErrNotPending, id, e.r.Status)
	}
	refuse := func(err error) (*entry, error) {
		s.record(&e.r, "refused", fmt.Sprintf("refused: %s by %s: %v", map[bool]string{true: "approval", false: "denial"}[approving], a.Principal, err))
		return nil, err
	}
	self := a.Principal == e.r.Requester || (a.UID != nil && e.r.RequesterUID != nil && *a.UID == *e.r.RequesterUID)
	if self && approving {
		return refuse(ErrSelfApproval)
	}
	if !self && !s.authorized(e.r.Terms.Approvers, a) {
		return refuse(ErrNotApprover)
	}
	if approving && slices.ContainsFunc(e.r.Approvals, func(v Vote) bool { return v.By == a.Principal }) {
		return refuse(ErrAlreadyVoted)
	}
	return e, nil
}

func (s *Store) authorized(approvers []string, a Approver) bool {
	if s.o.Authorize != nil {
		return s.o.Authorize(approvers, a)
	}
	return len(approvers) == 0 || slices.Contains(approvers, a.Principal)
}

// Get returns one request.
func (s *Store) Get(id string) (Request, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.reqs[id]
	if !ok {
		return Request{}, fmt.Errorf("%w %q", ErrUnknownRequest, id)
	}
	return e.r, nil
}

// List returns every request, oldest first.
func (s *Store) List() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Request
	for _, e := range s.sorted() {
		out = append(out, e.r)
	}
	return out
}

// Sweep expires pending requests past their deadline and grants past their expiry, and
// forgets finished requests older than the retention.
func (s *Store) Sweep() {
	now := s.o.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, e := range s.sorted() {
		s.expireLocked(e, now)
		if e.r.Status != StatusPending && e.r.Status != StatusApproved && now.Sub(e.r.Created) > retention {
			if err := os.Remove(s.path(e.r.ID)); err != nil && !errors.Is(err, os.ErrNotExist) {
				s.o.Logger.Warn("removing an old approval request", "id", e.r.ID, "err", err)
				continue
			}
			delete(s.reqs, e.r.ID)
		}
	}
}

// Run sweeps every interval until ctx ends.
func (s *Store) Run(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.Sweep()
		}
	}
}

func (s *Store) expireLocked(e *entry, now time.Time) {
	switch {
	case e.r.Status == StatusPending && !now.Before(e.r.Deadline):
		s.retire(e, StatusExpired, fmt.Sprintf("expired: no decision by %s", e.r.Deadline.UTC().Format(time.RFC3339)))
	case e.r.Status == StatusApproved && e.r.Grant != nil && !now.Before(e.r.Grant.Expires):
		s.retire(e, StatusExpired, fmt.Sprintf("expired: the grant expired at %s with %d use(s) left", e.r.Grant.Expires.UTC().Format(time.RFC3339), e.r.UsesLeft))
	}
}

// retire ends a request with status. A failed write is logged and the request ends in
// memory anyway: it must not stay usable because the disk is full; after a restart it is
// retired again when next looked at.
func (s *Store) retire(e *entry, status Status, detail string) {
	wasPending := e.r.Status == StatusPending
	e.r.Status, e.r.Detail = status, detail
	if err := s.write(&e.r); err != nil {
		s.o.Logger.Error("recording an approval request's end", "id", e.r.ID, "status", status, "err", err)
	}
	if wasPending {
		close(e.done)
		go s.followUp(e.r)
	}
	step := string(status)
	if status == StatusRefused {
		step = "refused"
	}
	s.record(&e.r, step, detail)
}

// record emits the approval event for one step. Grants and their signatures stay out of it.
func (s *Store) record(r *Request, step, detail string) {
	s.steps.WithLabelValues(step).Inc()
	e := event.New()
	*e = event.Event{
		Time: s.o.Now(), Type: event.TypeApproval, Source: event.SourceProxy, Protocol: event.ProtocolPostgres,
		DBUser: r.DBUser, Database: r.Database, SessionID: r.SessionID,
		Statement: r.Statement, Params: r.Params, Fingerprint: r.Fingerprint, Decision: event.DecisionApprovalRequired, Rule: r.Rule,
		ApprovalID: r.ID, Detail: detail,
	}
	s.o.Sink.Emit(e)
}

func (s *Store) sorted() []*entry {
	out := make([]*entry, 0, len(s.reqs))
	for _, e := range s.reqs {
		out = append(out, e)
	}
	slices.SortFunc(out, func(a, b *entry) int {
		if c := a.r.Created.Compare(b.r.Created); c != 0 {
			return c
		}
		return strings.Compare(a.r.ID, b.r.ID)
	})
	return out
}

func (s *Store) path(id string) string { return filepath.Join(s.o.Dir, id+".json") }

// write stores r durably: a temporary file, synced, renamed over the old one, and the
// directory synced, so that a crash leaves the old or the new request, never half of one.
func (s *Store) write(r *Request) error {
	data, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding approval request: %w", err)
	}
	path := s.path(r.ID)
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("writing approval request: %w", err)
	}
	_, err = f.Write(append(data, '\n'))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("writing approval request: %w", err)
	}
	d, err := os.Open(s.o.Dir)
	if err != nil {
		return fmt.Errorf("writing approval request: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("writing approval request: %w", err)
	}
	return nil
}

// newID makes a request id: short enough to type, random enough not to be guessed.
func newID() (string, error) {
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("generating an approval id: %w", err)
	}
	return "ap-" + hex.EncodeToString(b[:]), nil
}
