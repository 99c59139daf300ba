package approval

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"
)

// Channel tells approvers of a new request (a webhook, a chat message); approvers answer
// through the channel's callback or the control socket. A channel's errors must not carry
// its secrets or secret URLs: they are recorded.
type Channel interface {
	// Name names the channel in events and metrics ("webhook ops").
	Name() string
	Notify(ctx context.Context, r Request) error
}

// Follower is a Channel that also shows, where it asked, how a request ended (the Slack
// message's buttons replaced by the outcome, a comment on the Jira issue), so that
// approvers do not act on a request that was decided elsewhere, expired or withdrawn. It is
// told once per request that it was told of, in the background, with the delivery's bounds.
type Follower interface {
	Channel
	Ended(ctx context.Context, r Request) error
}

// Outcome says in one line how a request that is no longer pending ended.
func Outcome(r Request) string {
	switch r.Status {
	case StatusApproved:
		var by []string
		for _, v := range r.Approvals {
			by = append(by, v.By+because(v.Reason))
		}
		return "Approved by " + strings.Join(by, ", ")
	case StatusDenied:
		if r.Denial != nil {
			return "Denied by " + r.Denial.By + because(r.Denial.Reason)
		}
		return "Denied"
	}
	if r.Detail != "" {
		return strings.ToUpper(r.Detail[:1]) + r.Detail[1:]
	}
	return string(r.Status)
}

// Delivery bounds, for Options fields left zero: each channel is tried this many times,
// each attempt for at most this long, with this pause (doubling) between attempts. A
// channel that is down or slow thus costs a request at most about attempts × timeout, in
// the background: the request stays pending whatever happens.
const (
	DefaultNotifyAttempts = 3
	DefaultNotifyTimeout  = 5 * time.Second
	DefaultNotifyBackoff  = 500 * time.Millisecond
)

// ErrUnnotified is the delivery result when no channel took the request.
var ErrUnnotified = errors.New("no approval channel could be reached")

// deliver offers a new request to every channel, with bounded retries, and records the
// outcome: a notified step per channel that took it, an unnotified step per channel that
// did not. The result (nil once any channel took it) goes to e.delivery.
func (s *Store) deliver(e *entry, r Request) {
	var failures []string
	delivered := false
	for _, ch := range s.o.Channels {
		err := s.offer(ch, r)
		if err == nil {
			delivered = true
			s.Note(r.ID, "notified", "notified: through "+ch.Name())
			continue
		}
		s.notifyFailures.WithLabelValues(ch.Name()).Inc()
		failures = append(failures, ch.Name()+": "+err.Error())
		s.Note(r.ID, "unnotified", fmt.Sprintf("unnotified: %s: %v (%d attempts)", ch.Name(), err, s.o.NotifyAttempts))
	}
	var result error
	if !delivered {
		result = fmt.Errorf("%w (%s)", ErrUnnotified, strings.Join(failures, "; "))
	}
	e.delivery <- result
}

// followUp tells the channels that follow requests how r ended, each with the delivery's
// bounded retries; a failure is logged and counted, and changes nothing.
func (s *Store) followUp(r Request) {
	for _, ch := range s.o.Channels {
		f, ok := ch.(Follower)
		if !ok {
			continue
		}
		if err := s.retry(ch, r, f.Ended); err != nil {
			s.notifyFailures.WithLabelValues(ch.Name()).Inc()
		}
	}
}

// offer tries one channel up to NotifyAttempts times.
func (s *Store) offer(ch Channel, r Request) error { return s.retry(ch, r, ch.Notify) }

// retry calls f up to NotifyAttempts times.
func (s *Store) retry(ch Channel, r Request, f func(context.Context, Request) error) error {
	var err error
	pause := s.o.NotifyBackoff
	for attempt := 1; attempt <= s.o.NotifyAttempts; attempt++ {
		if attempt > 1 {
			select {
			case <-s.o.Context.Done():
				return fmt.Errorf("agent stopping: %w", err)
			case <-time.After(pause):
			}
			pause *= 2
		}
		ctx, cancel := context.WithTimeout(s.o.Context, s.o.NotifyTimeout)
		err = f(ctx, r)
		cancel()
		if err == nil {
			return nil
		}
		err = withoutURL(err)
		s.o.Logger.Warn("approval channel", "channel", ch.Name(), "id", r.ID, "attempt", attempt, "err", err)
	}
	return err
}

// withoutURL drops the URL net/http puts in its errors: a channel's URL may be a secret
// (a Slack incoming webhook's is).
func withoutURL(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		if ue.Timeout() {
			return fmt.Errorf("%s: timed out", ue.Op)
		}
		return fmt.Errorf("%s: %w", ue.Op, ue.Err)
	}
	return err
}

// Delivery returns a channel that yields, once, the outcome of notifying approvers of
// request id: nil once a channel took it, an ErrUnnotified error otherwise. It is nil (it
// never yields) when there are no channels or the request was not filed here just now.
func (s *Store) Delivery(id string) <-chan error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.reqs[id]; ok {
		return e.delivery
	}
	return nil
}

// Refuse records a refused step that changes no request: a callback that failed
// verification, naming the request when id is one.
func (s *Store) Refuse(id, detail string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.reqs[id]; ok {
		s.record(&e.r, "refused", detail)
		return
	}
	s.record(&Request{}, "refused", detail)
}
