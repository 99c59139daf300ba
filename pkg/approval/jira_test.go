package approval

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// jiraAPI is an HTTP server that checks what Jira's REST API checks of an issue creation:
// method, path, basic auth, a JSON body with the project, issue type and summary, and
// answers as Jira does (201 with id, key and self; 400 with errors otherwise). Comments
// (POST /rest/api/2/issue/{key}/comment, a JSON body) go to comments, by issue key.
func jiraAPI(t *testing.T, user, token string, issues chan<- map[string]any, comments ...chan<- [2]string) *httptest.Server {
	var n atomic.Int32
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u, p, ok := r.BasicAuth()
		if key, found := strings.CutSuffix(strings.TrimPrefix(r.URL.Path, "/rest/api/2/issue/"), "/comment"); found && r.Method == http.MethodPost && len(comments) > 0 {
			var c struct {
				Body string `json:"body"`
			}
			if !ok || u != user || p != token {
				http.Error(w, "", http.StatusUnauthorized)
				return
			}
			if err := json.NewDecoder(r.Body).Decode(&c); err != nil || c.Body == "" || r.Header.Get("Content-Type") != "application/json" {
				w.WriteHeader(http.StatusBadRequest)
				_, _ = w.Write([]byte(`{"errorMessages":[],"errors":{"comment":"Comment body can not be empty!"}}`))
				return
			}
			comments[0] <- [2]string{key, c.Body}
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusCreated)
			_ = json.NewEncoder(w).Encode(map[string]string{"id": "10100", "body": c.Body, "self": "http://" + r.Host + r.URL.Path + "/10100"})
			return
		}
		switch {
		case r.Method != http.MethodPost || r.URL.Path != "/rest/api/2/issue":
			http.NotFound(w, r)
			return
		case !ok || u != user || p != token:
			http.Error(w, "", http.StatusUnauthorized)
			return
		case r.Header.Get("Content-Type") != "application/json":
			http.Error(w, "", http.StatusUnsupportedMediaType)
			return
		}
		body, _ := io.ReadAll(r.Body)
		var is struct {
			Fields map[string]any `json:"fields"`
		}
		if err := json.Unmarshal(body, &is); err != nil || is.Fields["summary"] == "" ||
			is.Fields["project"].(map[string]any)["key"] == nil || is.Fields["issuetype"].(map[string]any)["name"] == nil {
			w.WriteHeader(http.StatusBadRequest)
			_, _ = w.Write([]byte(`{"errorMessages":[],"errors":{"project":"project is required"}}`))
			return
		}
		issues <- is.Fields
		key := "OPS-" + string(rune('0'+n.Add(1)))
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		_ = json.NewEncoder(w).Encode(map[string]string{"id": "10000", "key": key, "self": "http://" + r.Host + "/rest/api/2/issue/10000"})
	}))
	t.Cleanup(s.Close)
	return s
}

// TestJiraDelivery: a new request becomes an issue with the request's fields and the
// request id's label, created the way Jira's REST API wants; bad credentials fail the
// delivery, recorded, without the token.
func TestJiraDelivery(t *testing.T) {
	issues := make(chan map[string]any, 4)
	api := jiraAPI(t, "bot@example.com", "jira-token", issues)
	for _, tc := range []struct {
		name, token, wantErr string
	}{
		{name: "created", token: "jira-token"},
		{name: "bad token", token: "wrong-token", wantErr: "HTTP 401"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			ch := &Jira{URL: api.URL + "/", Project: "OPS", IssueType: "Task", User: "bot@example.com", Token: tc.token, AgentID: "db-1"}
			s, err := Open(Options{Dir: t.TempDir(), Key: f.key, Sink: f.ev, Registerer: prometheus.NewRegistry(), Channels: []Channel{ch},
				NotifyAttempts: 2, NotifyTimeout: time.Second, NotifyBackoff: 10 * time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			r, _, err := s.Submit(drop, Terms{Hold: time.Minute, Approvers: []string{"dbas"}})
			if err != nil {
				t.Fatal(err)
			}
			derr := <-s.Delivery(r.ID)
			if tc.wantErr != "" {
				if !errors.Is(derr, ErrUnnotified) || !strings.Contains(derr.Error(), tc.wantErr) {
					t.Errorf("delivery %v, want %q", derr, tc.wantErr)
				}
				if d := f.ev.want(t, "unnotified: jira: "); strings.Contains(d, tc.token) {
					t.Errorf("event leaks the token: %s", d)
				}
				return
			}
			if derr != nil {
				t.Fatal(derr)
			}
			f.ev.want(t, "notified: through jira")
			is := <-issues
			desc, _ := is["description"].(string)
			if is["project"].(map[string]any)["key"] != "OPS" || is["issuetype"].(map[string]any)["name"] != "Task" ||
				!strings.Contains(is["summary"].(string), r.ID) || !strings.Contains(desc, "ALTER TABLE t DROP COLUMN c") ||
				!strings.Contains(desc, "from dbas") || !reflect.DeepEqual(is["labels"], []any{"vigil", "vigil-" + r.ID}) {
				t.Errorf("issue %v", is)
			}
		})
	}
}

// jiraWebhook is the body Jira sends when account moves the issue for id into status.
func jiraWebhook(t *testing.T, event, id, account, status string, at time.Time) []byte {
	t.Helper()
	b, err := json.Marshal(map[string]any{
		"timestamp": at.UnixMilli(), "webhookEvent": event,
		"user":  map[string]string{"accountId": account, "displayName": "Someone"},
		"issue": map[string]any{"key": "OPS-1", "fields": map[string]any{"labels": []string{"vigil", "vigil-" + id}}},
		"changelog": map[string]any{"items": []map[string]string{
			{"field": "assignee", "toString": "Someone"},
			{"field": "status", "fromString": "To Do", "toString": status},
		}},
	})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestVerifyJira: only the webhook's secret over the unaltered body verifies.
func TestVerifyJira(t *testing.T) {
	secret, body := []byte("jira-hook-secret"), []byte(`{"webhookEvent":"jira:issue_updated"}`)
	m := hmac.New(sha256.New, secret)
	m.Write(body)
	sig := "sha256=" + hex.EncodeToString(m.Sum(nil))
	for _, tc := range []struct {
		name, sig string
		body      []byte
		want      error
	}{
		{name: "valid", sig: sig, body: body},
		{name: "altered", sig: sig, body: []byte(`{"webhookEvent":"jira:issue_deleted"}`), want: ErrBadSignature},
		{name: "no prefix", sig: strings.TrimPrefix(sig, "sha256="), body: body, want: ErrBadSignature},
		{name: "none", body: body, want: ErrBadSignature},
		{name: "not hex", sig: "sha256=zz", body: body, want: ErrBadSignature},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := VerifyJira(tc.body, tc.sig, secret); !errors.Is(err, tc.want) {
				t.Errorf("got %v, want %v", err, tc.want)
			}
		})
	}
}

// TestParseJiraWebhook: a transition into the approving or denying status decides, by the
// approver the configuration names for the account; other events decide nothing.
func TestParseJiraWebhook(t *testing.T) {
	users := map[string]string{"acc-1": "alice@example.com"}
	now := time.Now()
	alice := Approver{Principal: "alice@example.com", Email: "alice@example.com"}
	for _, tc := range []struct {
		name string
		body []byte
		want JiraDecision
		err  error
	}{
		{name: "approved", body: jiraWebhook(t, "jira:issue_updated", "ap-1", "acc-1", "Approved", now),
			want: JiraDecision{ID: "ap-1", Decision: "approve", Issue: "OPS-1", Account: "acc-1", Approver: alice}},
		{name: "rejected, other case", body: jiraWebhook(t, "jira:issue_updated", "ap-1", "acc-1", "REJECTED", now),
			want: JiraDecision{ID: "ap-1", Decision: "deny", Issue: "OPS-1", Account: "acc-1", Approver: alice}},
		{name: "unmapped account", body: jiraWebhook(t, "jira:issue_updated", "ap-1", "acc-9", "Approved", now),
			want: JiraDecision{ID: "ap-1", Decision: "approve", Issue: "OPS-1", Account: "acc-9"}, err: ErrUnknownJiraUser},
		{name: "old", body: jiraWebhook(t, "jira:issue_updated", "ap-1", "acc-1", "Approved", now.Add(-10*time.Minute)),
			want: JiraDecision{ID: "ap-1", Decision: "approve", Issue: "OPS-1", Account: "acc-1"}, err: ErrStaleTimestamp},
		{name: "other status", body: jiraWebhook(t, "jira:issue_updated", "ap-1", "acc-1", "In Progress", now), err: ErrJiraNoDecision},
		{name: "other event", body: jiraWebhook(t, "jira:issue_created", "ap-1", "acc-1", "Approved", now), err: ErrJiraNoDecision},
		{name: "not a Vigil issue", body: jiraWebhook(t, "jira:issue_updated", "", "acc-1", "Approved", now), err: ErrJiraNoDecision},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseJiraWebhook(tc.body, "Approved", "Rejected", users, now, CallbackWindow)
			if !errors.Is(err, tc.err) {
				t.Fatalf("error %v, want %v", err, tc.err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
	if _, err := ParseJiraWebhook([]byte("{nope"), "Approved", "Rejected", users, now, CallbackWindow); err == nil || !strings.Contains(err.Error(), "webhook body") {
		t.Errorf("malformed body: %v", err)
	}
}

// TestJiraCommentsOutcome: once a request ends, its issue gets a comment saying how.
func TestJiraCommentsOutcome(t *testing.T) {
	issues := make(chan map[string]any, 4)
	comments := make(chan [2]string, 4)
	api := jiraAPI(t, "bot@example.com", "jira-token", issues, comments)
	f := newFixture(t)
	ch := &Jira{URL: api.URL, Project: "OPS", IssueType: "Task", User: "bot@example.com", Token: "jira-token"}
	s, err := Open(Options{Dir: t.TempDir(), Key: f.key, Sink: f.ev, Registerer: prometheus.NewRegistry(), Channels: []Channel{ch},
		NotifyAttempts: 2, NotifyTimeout: time.Second, NotifyBackoff: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	r, _, err := s.Submit(drop, Terms{Hold: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if err := <-s.Delivery(r.ID); err != nil {
		t.Fatal(err)
	}
	<-issues
	if _, err := s.Withdraw(r.ID, StatusExpired, "expired: no decision within the 1m0s hold"); err != nil {
		t.Fatal(err)
	}
	select {
	case c := <-comments:
		if c[0] != "OPS-1" || c[1] != "Vigil: Expired: no decision within the 1m0s hold." {
			t.Errorf("comment %q", c)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no comment on the issue")
	}
}
