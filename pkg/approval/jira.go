package approval

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// The Jira channel. Vigil files each new request as a Jira issue (REST API v2, POST
// /rest/api/2/issue, basic auth with an account's email and API token), labelled with the
// request id. Approvers decide by moving the issue to the approving or the denying status;
// a Jira webhook (jira:issue_updated) tells the agent, signed with the webhook's secret as
// Jira signs them: X-Hub-Signature: sha256=<hex HMAC-SHA256(secret, body)>. Jira vouches for
// the account that made the transition; which approver that is, is the configuration's to
// say, as for Slack.

// HeaderJiraSignature is the header Jira signs webhooks in.
const HeaderJiraSignature = "X-Hub-Signature"

// jiraLabelPrefix marks the issue label that carries the request id.
const jiraLabelPrefix = "vigil-"

// ErrUnknownJiraUser refuses a transition by an account the configuration maps to no approver.
var ErrUnknownJiraUser = errors.New("is not mapped to an approver (approvals.jira.users)")

// Jira is the Jira channel.
type Jira struct {
	// URL is the site's base URL ("https://example.atlassian.net").
	URL string
	// Project is the project key issues are filed in, IssueType their type ("Task").
	Project, IssueType string
	// User and Token authenticate the REST calls (an account's email and API token).
	User, Token string
	AgentID     string
	Client      *http.Client

	issues posts // request id → issue key, for Ended
}

// Name implements Channel.
func (j *Jira) Name() string { return "jira" }

// jiraIssue is the body of POST /rest/api/2/issue.
type jiraIssue struct {
	Fields struct {
		Project struct {
			Key string `json:"key"`
		} `json:"project"`
		Summary     string `json:"summary"`
		Description string `json:"description"`
		IssueType   struct {
			Name string `json:"name"`
		} `json:"issuetype"`
		Labels []string `json:"labels"`
	} `json:"fields"`
}

// Notify implements Channel: one issue created; Jira answers 201 with the issue's key.
func (j *Jira) Notify(ctx context.Context, r Request) error {
	var is jiraIssue
	is.Fields.Project.Key, is.Fields.IssueType.Name = j.Project, j.IssueType
	is.Fields.Summary = fmt.Sprintf("Vigil approval %s: %s on %s (rule %s)", r.ID, r.Requester, r.Database, r.Rule)
	var d strings.Builder
	fmt.Fprintf(&d, "Requester: %s\nDatabase: %s\nRule: %s\n", r.Requester, r.Database, r.Rule)
	if r.DBUser != "" {
		fmt.Fprintf(&d, "Database user: %s\n", r.DBUser)
	}
	if j.AgentID != "" {
		fmt.Fprintf(&d, "Agent: %s\n", j.AgentID)
	}
	fmt.Fprintf(&d, "{noformat}\n%s\n{noformat}\n", strings.ReplaceAll(r.Statement, "{noformat}", "{ noformat }"))
	if len(r.Params) > 0 {
		fmt.Fprintf(&d, "Parameters: %s\n", strings.Join(r.Params, ", "))
	}
	fmt.Fprintf(&d, "Needs %d approver(s)", r.Terms.Required)
	if len(r.Terms.Approvers) > 0 {
		fmt.Fprintf(&d, " from %s", strings.Join(r.Terms.Approvers, ", "))
	}
	fmt.Fprintf(&d, ", by %s.", r.Deadline.UTC().Format(time.RFC3339))
	is.Fields.Description = d.String()
	is.Fields.Labels = []string{"vigil", jiraLabelPrefix + r.ID}
	body, err := json.Marshal(is)
	if err != nil {
		return fmt.Errorf("encoding the issue: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimSuffix(j.URL, "/")+"/rest/api/2/issue", bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("jira request: %w", withoutURL(err))
	}
	req.SetBasicAuth(j.User, j.Token)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	client := j.Client
	if client == nil {
		client = http.DefaultClient
	}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("creating the issue: %w", withoutURL(err))
	}
	defer resp.Body.Close()
	answer, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	if resp.StatusCode != http.StatusCreated {
		return fmt.Errorf("creating the issue: Jira answered HTTP %d", resp.StatusCode)
	}
	var created struct {
		Key string `json:"key"`
	}
	if err := json.Unmarshal(answer, &created); err != nil || created.Key == "" {
		return fmt.Errorf("creating the issue: Jira's answer names no issue key")
	}
	j.issues.put(r.ID, created.Key)
	return nil
}

// Ended implements Follower: a comment on the request's issue says how it ended (POST
// /rest/api/2/issue/{key}/comment; Jira answers 201). The issue's status is the approvers'
// to move: a request decided elsewhere (the CLI, Slack) or expired leaves it where it is,
// with the comment saying why nothing more is needed.
func (j *Jira) Ended(ctx context.Context, r Request) error {
	key, ok := j.issues.take(r.ID)
	if !ok {
		return nil
	}
	body, err := json.Marshal(map[string]string{"body": "Vigil: " + Outcome(r) + "."})
	if err != nil {
		return err
	}
	err = j.post(ctx, "/rest/api/2/issue/"+url.PathEscape(key)+"/comment", body)
	if err != nil {
		j.issues.put(r.ID, key)
		return fmt.Errorf("commenting on %s: %w", key, err)
	}
	return nil
}

// post sends a JSON body to the REST API and wants 201 Created.
func (j *Jira) post(ctx context.Context, path string, body []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimSuffix(j.URL, "/")+path, bytes.NewReader(body))
	if err != nil {
		return withoutURL(err)
	}
	req.SetBasicAuth(j.User, j.Token)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	client := j.Client
	if client == nil {
		client = http.DefaultClient
	}
	resp, err := client.Do(req)
	if err != nil {
		return withoutURL(err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
	if resp.StatusCode != http.StatusCreated {
		return fmt.Errorf("Jira answered HTTP %d", resp.StatusCode)
	}
	return nil
}

// VerifyJira checks a Jira webhook's X-Hub-Signature against secret.
func VerifyJira(body []byte, signature string, secret []byte) error {
	hexSig, ok := strings.CutPrefix(signature, "sha256=")
	got, err := hex.DecodeString(hexSig)
	m := hmac.New(sha256.New, secret)
	m.Write(body)
	if !ok || err != nil || !hmac.Equal(got, m.Sum(nil)) {
		return ErrBadSignature
	}
	return nil
}

// JiraDecision is a verified transition of a request's issue into a deciding status.
type JiraDecision struct {
	ID string
	// Decision is "approve" or "deny".
	Decision string
	// Issue is the issue key, Account the Jira account id that made the transition.
	Issue, Account string
	Approver       Approver
}

// ErrJiraNoDecision is a webhook that decides nothing: another event, another issue, a
// transition into another status. The agent acknowledges it and records nothing.
var ErrJiraNoDecision = errors.New("not a transition into a deciding status")

// ParseJiraWebhook reads a verified Jira webhook body: a jira:issue_updated whose changelog
// moves a Vigil issue into approveStatus or denyStatus. users maps Jira account ids to
// approvers' email addresses. The id, when the issue has one, is returned with any error.
// A webhook whose timestamp is more than window from now is ErrStaleTimestamp.
func ParseJiraWebhook(body []byte, approveStatus, denyStatus string, users map[string]string, now time.Time, window time.Duration) (JiraDecision, error) {
	var p struct {
		Timestamp    int64  `json:"timestamp"`
		WebhookEvent string `json:"webhookEvent"`
		User         struct {
			AccountID string `json:"accountId"`
		} `json:"user"`
		Issue struct {
			Key    string `json:"key"`
			Fields struct {
				Labels []string `json:"labels"`
			} `json:"fields"`
		} `json:"issue"`
		Changelog struct {
			Items []struct {
				Field    string `json:"field"`
				ToString string `json:"toString"`
			} `json:"items"`
		} `json:"changelog"`
	}
	if err := json.Unmarshal(body, &p); err != nil {
		return JiraDecision{}, fmt.Errorf("webhook body: %w", err)
	}
	var d JiraDecision
	d.Issue, d.Account = p.Issue.Key, p.User.AccountID
	for _, l := range p.Issue.Fields.Labels {
		if id, ok := strings.CutPrefix(l, jiraLabelPrefix); ok && strings.HasPrefix(id, "ap-") {
			d.ID = id
		}
	}
	if p.WebhookEvent != "jira:issue_updated" || d.ID == "" {
		return JiraDecision{}, ErrJiraNoDecision
	}
	for _, it := range p.Changelog.Items {
		if it.Field != "status" {
			continue
		}
		switch {
		case strings.EqualFold(it.ToString, approveStatus):
			d.Decision = "approve"
		case strings.EqualFold(it.ToString, denyStatus):
			d.Decision = "deny"
		}
	}
	if d.Decision == "" {
		return JiraDecision{}, ErrJiraNoDecision
	}
	if at := time.UnixMilli(p.Timestamp); p.Timestamp == 0 || now.Sub(at) > window || at.Sub(now) > window {
		return d, ErrStaleTimestamp
	}
	email, ok := users[d.Account]
	if !ok {
		return d, fmt.Errorf("Jira account %q %w", d.Account, ErrUnknownJiraUser)
	}
	d.Approver = Approver{Principal: email, Email: email}
	return d, nil
}
