package approval

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/slack-go/slack"
	"github.com/slack-go/slack/slacktest"
	"github.com/vigil-db/vigil/internal/testslack"
)

// signSlack returns the headers Slack sends with body at t.
func signSlack(secret string, body []byte, t time.Time) http.Header {
	ts := strconv.FormatInt(t.Unix(), 10)
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte("v0:" + ts + ":"))
	m.Write(body)
	h := http.Header{}
	h.Set("X-Slack-Request-Timestamp", ts)
	h.Set("X-Slack-Signature", "v0="+hex.EncodeToString(m.Sum(nil)))
	return h
}

// interaction is the body of a click on action by user, as Slack POSTs it.
func interaction(t *testing.T, typ, action, id, user string) []byte {
	t.Helper()
	p, err := json.Marshal(map[string]any{
		"type": typ, "user": map[string]string{"id": user, "name": "someone"},
		"response_url": "https://hooks.slack.com/actions/T1/1/x",
		"actions":      []map[string]string{{"type": "button", "action_id": action, "block_id": "vigil_decision", "value": id}},
	})
	if err != nil {
		t.Fatal(err)
	}
	return []byte(url.Values{"payload": {string(p)}}.Encode())
}

// TestVerifySlack: an interaction callback verifies only with the app's signing secret,
// unaltered, signed with the timestamp it carries, and within Slack's 5 minutes.
func TestVerifySlack(t *testing.T) {
	const secret = "slack-signing-secret"
	body := interaction(t, "block_actions", SlackActionApprove, "ap-1", "U1")
	now := time.Now()
	for _, tc := range []struct {
		name   string
		header func() http.Header
		body   []byte
		want   error
	}{
		{name: "valid", header: func() http.Header { return signSlack(secret, body, now) }},
		{name: "valid, 4 minutes old", header: func() http.Header { return signSlack(secret, body, now.Add(-4*time.Minute)) }},
		{name: "other secret", header: func() http.Header { return signSlack("other", body, now) }, want: ErrBadSignature},
		{name: "altered body", header: func() http.Header { return signSlack(secret, body, now) },
			body: interaction(t, "block_actions", SlackActionApprove, "ap-2", "U1"), want: ErrBadSignature},
		{name: "other timestamp", header: func() http.Header {
			h := signSlack(secret, body, now)
			h.Set("X-Slack-Request-Timestamp", strconv.FormatInt(now.Unix()+1, 10))
			return h
		}, want: ErrBadSignature},
		{name: "no signature", header: func() http.Header {
			h := signSlack(secret, body, now)
			h.Del("X-Slack-Signature")
			return h
		}, want: ErrBadSignature},
		{name: "no v0 prefix", header: func() http.Header {
			h := signSlack(secret, body, now)
			h.Set("X-Slack-Signature", strings.TrimPrefix(h.Get("X-Slack-Signature"), "v0="))
			return h
		}, want: ErrBadSignature},
		{name: "old", header: func() http.Header { return signSlack(secret, body, now.Add(-6*time.Minute)) }, want: ErrStaleTimestamp},
		{name: "from the future", header: func() http.Header { return signSlack(secret, body, now.Add(6*time.Minute)) }, want: ErrStaleTimestamp},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := body
			if tc.body != nil {
				b = tc.body
			}
			if err := VerifySlack(tc.header(), b, secret); !errors.Is(err, tc.want) {
				t.Errorf("got %v, want %v", err, tc.want)
			}
		})
	}
}

// TestParseSlackInteraction: a click maps to a decision on the button's request by the
// approver the configuration names for the Slack user; anything else is an error, with the
// request id when there is one.
func TestParseSlackInteraction(t *testing.T) {
	users := map[string]string{"U1": "alice@example.com"}
	for _, tc := range []struct {
		name    string
		body    []byte
		want    SlackDecision
		wantErr string
	}{
		{name: "approve", body: interaction(t, "block_actions", SlackActionApprove, "ap-1", "U1"),
			want: SlackDecision{ID: "ap-1", Decision: "approve", User: "U1", UserName: "someone", Approver: Approver{Principal: "alice@example.com", Email: "alice@example.com"}}},
		{name: "deny", body: interaction(t, "block_actions", SlackActionDeny, "ap-1", "U1"),
			want: SlackDecision{ID: "ap-1", Decision: "deny", User: "U1", UserName: "someone", Approver: Approver{Principal: "alice@example.com", Email: "alice@example.com"}}},
		{name: "unmapped user", body: interaction(t, "block_actions", SlackActionApprove, "ap-1", "U2"),
			want: SlackDecision{ID: "ap-1", Decision: "approve", User: "U2", UserName: "someone"}, wantErr: "Slack user U2 (someone) is not mapped"},
		{name: "no user", body: interaction(t, "block_actions", SlackActionApprove, "ap-1", ""),
			want: SlackDecision{ID: "ap-1", Decision: "approve", UserName: "someone"}, wantErr: "no user"},
		{name: "other action", body: interaction(t, "block_actions", "something_else", "ap-1", "U1"), wantErr: "no Approve or Deny action"},
		{name: "other type", body: interaction(t, "view_submission", SlackActionApprove, "ap-1", "U1"), wantErr: `interaction type "view_submission"`},
		{name: "no payload", body: []byte("token=x"), wantErr: "no payload"},
		{name: "not JSON", body: []byte("payload=%7Bnope"), wantErr: "interaction payload"},
		{name: "not a form", body: []byte("payload=%zz"), wantErr: "interaction body"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseSlackInteraction(tc.body, users)
			if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("error %v, want %q", err, tc.wantErr)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

// TestSlackDelivery: a new request is posted to the channel with Approve and Deny buttons
// carrying the request id; with Slack unreachable the request stays pending and the
// failure is recorded and counted after the bounded retries.
func TestSlackDelivery(t *testing.T) {
	srv := slacktest.NewTestServer()
	srv.Start()
	defer srv.Stop()
	feed := testslack.Messages(t, srv)
	down := slacktest.NewTestServer()
	down.Start()
	down.Stop()
	for _, tc := range []struct {
		name   string
		apiURL string
		fails  bool
	}{
		{name: "posted", apiURL: srv.GetAPIURL()},
		{name: "Slack unreachable", apiURL: down.GetAPIURL(), fails: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			ch := &Slack{ChannelID: "C123", AgentID: "db-1", Client: slack.New("xoxb-test-token", slack.OptionAPIURL(tc.apiURL))}
			s, err := Open(Options{Dir: t.TempDir(), Key: f.key, Sink: f.ev, Registerer: prometheus.NewRegistry(), Channels: []Channel{ch},
				NotifyAttempts: 2, NotifyTimeout: time.Second, NotifyBackoff: 10 * time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			r, _, err := s.Submit(drop, Terms{Hold: time.Minute, Approvers: []string{"dbas"}})
			if err != nil {
				t.Fatal(err)
			}
			var derr error
			select {
			case derr = <-s.Delivery(r.ID):
			case <-time.After(5 * time.Second):
				t.Fatal("no delivery outcome within 5s")
			}
			var m dto.Metric
			if err := s.notifyFailures.WithLabelValues("slack").Write(&m); err != nil {
				t.Fatal(err)
			}
			if tc.fails {
				if !errors.Is(derr, ErrUnnotified) || m.GetCounter().GetValue() != 1 {
					t.Errorf("delivery %v, %v failures counted", derr, m.GetCounter().GetValue())
				}
				if d := f.ev.want(t, "unnotified: slack: chat.postMessage: "); strings.Contains(d, "xoxb-") {
					t.Errorf("event leaks the token: %s", d)
				}
				if cur, _ := s.Get(r.ID); cur.Status != StatusPending {
					t.Errorf("request is %s, want pending", cur.Status)
				}
				return
			}
			if derr != nil {
				t.Fatalf("delivery: %v", derr)
			}
			f.ev.want(t, "notified: through slack")
			var msg slack.Message
			select {
			case msg = <-feed:
			case <-time.After(5 * time.Second):
				t.Fatal("slacktest saw no message")
			}
			if msg.Channel != "C123" || !strings.Contains(msg.Text, r.ID) || len(msg.Blocks.BlockSet) != 2 {
				t.Fatalf("message %+v", msg)
			}
			section, ok := msg.Blocks.BlockSet[0].(*slack.SectionBlock)
			if !ok || !strings.Contains(section.Text.Text, "ALTER TABLE t DROP COLUMN c") || !strings.Contains(section.Text.Text, "db:alice") ||
				!strings.Contains(section.Text.Text, "from dbas") {
				t.Errorf("section %+v", msg.Blocks.BlockSet[0])
			}
			actions, ok := msg.Blocks.BlockSet[1].(*slack.ActionBlock)
			if !ok || len(actions.Elements.ElementSet) != 2 {
				t.Fatalf("actions %+v", msg.Blocks.BlockSet[1])
			}
			for i, want := range []string{SlackActionApprove, SlackActionDeny} {
				b, ok := actions.Elements.ElementSet[i].(*slack.ButtonBlockElement)
				if !ok || b.ActionID != want || b.Value != r.ID {
					t.Errorf("button %d: %+v, want %s for %s", i, actions.Elements.ElementSet[i], want, r.ID)
				}
			}
		})
	}
}

// TestSlackMessageShowsOutcome: once a request is decided (here from the CLI, not Slack),
// its message is updated through chat.update to say how it ended, and its buttons are gone,
// so nobody clicks on a decided request.
func TestSlackMessageShowsOutcome(t *testing.T) {
	updates := make(chan url.Values, 4)
	srv := slacktest.NewTestServer(func(c slacktest.Customize) {
		// chat.update as Slack's Web API takes it: a form with the bot's token (a field or
		// the Authorization header), the message's channel and ts, and the new text and blocks.
		c.Handle("/chat.update", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			if err := r.ParseForm(); err != nil || (r.Header.Get("Authorization") != "Bearer xoxb-test-token" && r.Form.Get("token") != "xoxb-test-token") {
				_, _ = w.Write([]byte(`{"ok":false,"error":"invalid_auth"}`))
				return
			}
			if r.Form.Get("channel") == "" || r.Form.Get("ts") == "" {
				_, _ = w.Write([]byte(`{"ok":false,"error":"message_not_found"}`))
				return
			}
			updates <- r.Form
			_ = json.NewEncoder(w).Encode(map[string]any{"ok": true, "channel": r.Form.Get("channel"), "ts": r.Form.Get("ts"), "text": r.Form.Get("text")})
		})
	})
	srv.Start()
	defer srv.Stop()
	f := newFixture(t)
	ch := &Slack{ChannelID: "C123", AgentID: "db-1", Client: slack.New("xoxb-test-token", slack.OptionAPIURL(srv.GetAPIURL()))}
	s, err := Open(Options{Dir: t.TempDir(), Key: f.key, Sink: f.ev, Registerer: prometheus.NewRegistry(), Channels: []Channel{ch},
		NotifyAttempts: 2, NotifyTimeout: time.Second, NotifyBackoff: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, want string
		end        func(id string) error
	}{
		{"approved", "Approved by os:bob: looks fine", func(id string) error { _, err := s.Approve(id, bob, "looks fine"); return err }},
		{"denied", "Denied by os:carol: not today", func(id string) error { _, err := s.Deny(id, carol, "not today"); return err }},
		{"withdrawn", "Withdrawn: the client cancelled", func(id string) error {
			_, err := s.Withdraw(id, StatusWithdrawn, "withdrawn: the client cancelled")
			return err
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, _, err := s.Submit(drop, Terms{Hold: time.Minute})
			if err != nil {
				t.Fatal(err)
			}
			if err := <-s.Delivery(r.ID); err != nil {
				t.Fatal(err)
			}
			if err := tc.end(r.ID); err != nil {
				t.Fatal(err)
			}
			var u url.Values
			select {
			case u = <-updates:
			case <-time.After(5 * time.Second):
				t.Fatal("no chat.update")
			}
			var blocks slack.Blocks
			if err := json.Unmarshal([]byte(u.Get("blocks")), &blocks); err != nil {
				t.Fatalf("blocks %q: %v", u.Get("blocks"), err)
			}
			if u.Get("channel") != "C123" || !strings.Contains(u.Get("text"), tc.want) || !strings.Contains(u.Get("blocks"), tc.want) {
				t.Errorf("update %v, want %q", u, tc.want)
			}
			for _, b := range blocks.BlockSet {
				if b.BlockType() == slack.MBTAction {
					t.Errorf("the decided request's message still has its buttons: %s", u.Get("blocks"))
				}
			}
		})
	}
}
