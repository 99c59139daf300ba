package approval

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// TestVerifySigned: a signed body verifies only with its secret, unaltered, with its own
// timestamp, and within the window either side of the clock.
func TestVerifySigned(t *testing.T) {
	secret, body := []byte("s3cret"), []byte(`{"id":"ap-1","decision":"approve"}`)
	now := time.Unix(1_800_000_000, 0)
	ts, sig := Sign(secret, body, now)
	for _, tc := range []struct {
		name           string
		secret, body   []byte
		timestamp, sig string
		at             time.Time
		want           error
	}{
		{name: "valid", want: nil},
		{name: "valid, 4 minutes late", at: now.Add(4 * time.Minute)},
		{name: "other secret", secret: []byte("other"), want: ErrBadSignature},
		{name: "altered body", body: []byte(`{"id":"ap-1","decision":"deny"}`), want: ErrBadSignature},
		{name: "other timestamp", timestamp: "1800000001", want: ErrBadSignature},
		{name: "no signature", sig: "-", want: ErrBadSignature},
		{name: "no prefix", sig: strings.TrimPrefix(sig, "v1="), want: ErrBadSignature},
		{name: "old", at: now.Add(6 * time.Minute), want: ErrStaleTimestamp},
		{name: "from the future", at: now.Add(-6 * time.Minute), want: ErrStaleTimestamp},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, b, x, g, at := secret, body, ts, sig, now
			if tc.secret != nil {
				s = tc.secret
			}
			if tc.body != nil {
				b = tc.body
			}
			if tc.timestamp != "" {
				x = tc.timestamp
			}
			if tc.sig == "-" {
				g = ""
			} else if tc.sig != "" {
				g = tc.sig
			}
			if !tc.at.IsZero() {
				at = tc.at
			}
			if err := VerifySigned(s, b, x, g, at, CallbackWindow); !errors.Is(err, tc.want) {
				t.Errorf("got %v, want %v", err, tc.want)
			}
		})
	}
}

// TestWebhookDelivery: a new request is POSTed to a real HTTP receiver, signed, with the
// request's fields and the decision URL; a receiver that fails or is too slow is retried a
// bounded number of times, the request stays pending, the failure is recorded, counted and
// reported by Delivery without leaking the URL.
func TestWebhookDelivery(t *testing.T) {
	secret := []byte("hook-secret")
	var got atomic.Value
	ok := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if err := VerifySigned(secret, body, r.Header.Get(HeaderTimestamp), r.Header.Get(HeaderSignature), time.Now(), CallbackWindow); err != nil {
			http.Error(w, err.Error(), http.StatusUnauthorized)
			return
		}
		var wr WebhookRequest
		if err := json.Unmarshal(body, &wr); err != nil || r.Header.Get("Content-Type") != "application/json" {
			http.Error(w, "bad body", http.StatusBadRequest)
			return
		}
		got.Store(wr)
	}))
	defer ok.Close()
	var failedCalls, slowCalls atomic.Int32
	failing := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		failedCalls.Add(1)
		http.Error(w, "down for maintenance", http.StatusServiceUnavailable)
	}))
	defer failing.Close()
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		slowCalls.Add(1)
		select {
		case <-r.Context().Done():
		case <-time.After(time.Second): // well past the attempts' timeout
		}
	}))
	defer slow.Close()

	for _, tc := range []struct {
		name    string
		url     string
		calls   *atomic.Int32
		wantErr string
	}{
		{name: "delivered", url: ok.URL + "/hook?token=secret-in-url"},
		{name: "receiver fails", url: failing.URL + "/hook?token=secret-in-url", calls: &failedCalls, wantErr: "HTTP 503"},
		{name: "receiver too slow", url: slow.URL + "/hook?token=secret-in-url", calls: &slowCalls, wantErr: "timed out"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			reg := prometheus.NewRegistry()
			hook := &Webhook{ChannelName: "ops", URL: tc.url, Secret: secret, DecisionURL: "https://vigil.example.com/v1/webhooks/ops/decision", AgentID: "db-1"}
			s, err := Open(Options{Dir: t.TempDir(), Key: f.key, Sink: f.ev, Registerer: reg, Channels: []Channel{hook},
				NotifyAttempts: 3, NotifyTimeout: 200 * time.Millisecond, NotifyBackoff: 10 * time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			st := drop
			st.ShownParams = []string{"7"}
			start := time.Now()
			r, _, err := s.Submit(st, Terms{Hold: time.Minute, Approvers: []string{"dbas"}})
			if err != nil {
				t.Fatal(err)
			}
			var derr error
			select {
			case derr = <-s.Delivery(r.ID):
			case <-time.After(5 * time.Second):
				t.Fatal("no delivery outcome within 5s")
			}
			if took := time.Since(start); took > 2*time.Second {
				t.Errorf("delivery took %v", took)
			}
			if cur, _ := s.Get(r.ID); cur.Status != StatusPending {
				t.Errorf("request is %s after delivery, want pending", cur.Status)
			}
			var m dto.Metric
			if err := s.notifyFailures.WithLabelValues("webhook ops").Write(&m); err != nil {
				t.Fatal(err)
			}
			failures := m.GetCounter().GetValue()
			if tc.wantErr == "" {
				if derr != nil {
					t.Fatalf("delivery: %v", derr)
				}
				wr, _ := got.Load().(WebhookRequest)
				if wr.Type != "approval.requested" || wr.ID != r.ID || wr.Requester != "db:alice" || wr.Database != "app" ||
					wr.Statement != drop.Display || wr.Rule != "ddl" || wr.AgentID != "db-1" || wr.Required != 1 ||
					len(wr.Params) != 1 || wr.Params[0] != "7" || wr.DecisionURL != hook.DecisionURL || wr.Deadline.IsZero() {
					t.Errorf("receiver got %+v", wr)
				}
				if failures != 0 {
					t.Errorf("%v failures counted", failures)
				}
				f.ev.want(t, "notified: through webhook ops")
				return
			}
			if !errors.Is(derr, ErrUnnotified) || !strings.Contains(derr.Error(), tc.wantErr) || strings.Contains(derr.Error(), "secret-in-url") {
				t.Errorf("delivery error %v, want %q without the URL", derr, tc.wantErr)
			}
			if n := tc.calls.Load(); n != 3 {
				t.Errorf("%d attempts, want 3", n)
			}
			if failures != 1 {
				t.Errorf("%v failures counted, want 1", failures)
			}
			d := f.ev.want(t, "unnotified: webhook ops: ")
			if strings.Contains(d, "secret-in-url") || strings.Contains(d, string(secret)) {
				t.Errorf("event leaks the URL or secret: %s", d)
			}
		})
	}
}

// want returns the first recorded detail that starts with prefix.
func (s *events) want(t *testing.T, prefix string) string {
	t.Helper()
	for _, d := range s.details() {
		if strings.HasPrefix(d, prefix) {
			return d
		}
	}
	t.Errorf("no event %q in %q", prefix, s.details())
	return ""
}
