package main

import (
	"context"
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/slack-go/slack"

	"github.com/vigil-db/vigil/pkg/approval"
	"github.com/vigil-db/vigil/pkg/config"
)

// Approval channels: the notifiers the approval store tells of new requests, and the HTTP
// listener (approvals.callback_listen) their signed decisions come back to. Unlike the
// control socket, whose peer the kernel names, a callback is trusted for its signature
// alone: the receiver that holds the channel's secret vouches for the approver it names.

// callbackSecrets is what the callback listener verifies callbacks with.
type callbackSecrets struct {
	// webhooks holds each webhook's secret by name.
	webhooks map[string][]byte
	// slack is the Slack channel's, when configured.
	slack *slackCallback
	// jira is the Jira channel's, when configured.
	jira *jiraCallback
	// web is the approval page's, when configured.
	web *webPage
}

// webPage is the approval page's configuration and secrets.
type webPage struct {
	cfg          config.WebApprovals
	base         string
	clientSecret string
	// key authenticates the page's cookies: derived from the agent's key, so that sessions
	// outlive a restart and no other file holds a secret.
	key []byte
}

// webCookieKey derives the approval page's cookie key from the agent's key.
func webCookieKey(agent ed25519.PrivateKey) []byte {
	m := hmac.New(sha256.New, agent.Seed())
	m.Write([]byte("vigil approval page cookies v1"))
	return m.Sum(nil)
}

// jiraCallback verifies and maps the Jira channel's webhooks.
type jiraCallback struct {
	secret                    []byte
	approveStatus, denyStatus string
	users                     map[string]string
}

// slackCallback verifies and maps the Slack channel's interaction callbacks.
type slackCallback struct {
	signingSecret string
	users         map[string]string
}

// approvalChannels builds the configured channels, their secrets read from the environment.
func approvalChannels(cfg config.Approvals, agentID string) ([]approval.Channel, callbackSecrets, error) {
	base := cfg.CallbackBase()
	// Each attempt is bounded by the store's context deadline; no redirects to wherever a
	// receiver points.
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	var chans []approval.Channel
	secrets := callbackSecrets{webhooks: map[string][]byte{}}
	for _, w := range cfg.Webhooks {
		secret := os.Getenv(w.SecretEnv)
		if secret == "" {
			return nil, callbackSecrets{}, fmt.Errorf("approvals.webhooks %s: the environment variable %s (secret_env) is empty or unset", w.Name, w.SecretEnv)
		}
		secrets.webhooks[w.Name] = []byte(secret)
		chans = append(chans, &approval.Webhook{
			ChannelName: w.Name, URL: w.URL, Secret: []byte(secret), AgentID: agentID,
			DecisionURL: base + "/v1/webhooks/" + url.PathEscape(w.Name) + "/decision",
			Client:      client,
		})
	}
	if sl := cfg.Slack; sl != nil {
		token, signing := os.Getenv(sl.BotTokenEnv), os.Getenv(sl.SigningSecretEnv)
		if token == "" {
			return nil, callbackSecrets{}, fmt.Errorf("approvals.slack: the environment variable %s (bot_token_env) is empty or unset", sl.BotTokenEnv)
		}
		if signing == "" {
			return nil, callbackSecrets{}, fmt.Errorf("approvals.slack: the environment variable %s (signing_secret_env) is empty or unset", sl.SigningSecretEnv)
		}
		opts := []slack.Option{slack.OptionHTTPClient(client)}
		if sl.APIURL != "" {
			opts = append(opts, slack.OptionAPIURL(strings.TrimSuffix(sl.APIURL, "/")+"/"))
		}
		chans = append(chans, &approval.Slack{ChannelID: sl.Channel, AgentID: agentID, Client: slack.New(token, opts...)})
		secrets.slack = &slackCallback{signingSecret: signing, users: sl.Users}
	}
	if j := cfg.Jira; j != nil {
		token, secret := os.Getenv(j.TokenEnv), os.Getenv(j.WebhookSecretEnv)
		if token == "" {
			return nil, callbackSecrets{}, fmt.Errorf("approvals.jira: the environment variable %s (token_env) is empty or unset", j.TokenEnv)
		}
		if secret == "" {
			return nil, callbackSecrets{}, fmt.Errorf("approvals.jira: the environment variable %s (webhook_secret_env) is empty or unset", j.WebhookSecretEnv)
		}
		chans = append(chans, &approval.Jira{URL: j.URL, Project: j.Project, IssueType: j.IssueType, User: j.User, Token: token, AgentID: agentID, Client: client})
		secrets.jira = &jiraCallback{secret: []byte(secret), approveStatus: j.ApproveStatus, denyStatus: j.DenyStatus, users: j.Users}
	}
	if w := cfg.Web; w != nil {
		secret := os.Getenv(w.ClientSecretEnv)
		if secret == "" {
			return nil, callbackSecrets{}, fmt.Errorf("approvals.web: the environment variable %s (client_secret_env) is empty or unset", w.ClientSecretEnv)
		}
		secrets.web = &webPage{cfg: *w, base: base, clientSecret: secret}
	}
	return chans, secrets, nil
}

// serveCallbacks answers channel callbacks on l until ctx ends.
func serveCallbacks(ctx context.Context, l net.Listener, store *approval.Store, secrets callbackSecrets, reg prometheus.Registerer, log *slog.Logger) error {
	defer l.Close()
	results := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "vigil_approval_callbacks_total",
		Help: "Approval channel callbacks by channel and result: accepted (a decision recorded, or a login to the approval page), refused (bad signature, stale timestamp, malformed; the approval page's POSTs without the session, its CSRF token or the page's origin, and failed logins), failed (the decision was not taken: not pending, not an approver, ...).",
	}, []string{"channel", "result"})
	var names []string
	for name := range secrets.webhooks {
		names = append(names, "webhook "+name)
	}
	if secrets.slack != nil {
		names = append(names, "slack")
	}
	if secrets.jira != nil {
		names = append(names, "jira")
	}
	if secrets.web != nil {
		names = append(names, "web")
	}
	for _, name := range names {
		for _, r := range []string{"accepted", "refused", "failed"} {
			results.WithLabelValues(name, r)
		}
	}
	if reg != nil {
		if err := reg.Register(results); err != nil {
			return fmt.Errorf("callback metrics: %w", err)
		}
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/webhooks/{name}/decision", func(w http.ResponseWriter, r *http.Request) {
		name := r.PathValue("name")
		channel := "webhook " + name
		secret, ok := secrets.webhooks[name]
		if !ok {
			httpError(w, http.StatusNotFound, fmt.Errorf("no webhook channel %q", name))
			return
		}
		body, err := io.ReadAll(io.LimitReader(r.Body, 1<<16))
		if err != nil {
			httpError(w, http.StatusBadRequest, fmt.Errorf("reading the request: %w", err))
			return
		}
		var d approval.WebhookDecision
		decodeErr := json.Unmarshal(body, &d)
		// Verified before anything in the body is believed; the id, if any, only names
		// the request the refusal is recorded on.
		cb := callback{w, store, results, channel}
		if err := approval.VerifySigned(secret, body, r.Header.Get(approval.HeaderTimestamp), r.Header.Get(approval.HeaderSignature), time.Now(), approval.CallbackWindow); err != nil {
			cb.refuse(d.ID, "refused", " from "+r.RemoteAddr, http.StatusUnauthorized, err)
			return
		}
		if decodeErr == nil && (d.Decision != "approve" && d.Decision != "deny") {
			decodeErr = fmt.Errorf("decision %q: want approve or deny", d.Decision)
		}
		if decodeErr == nil && !approval.IsEmail(d.Approver) {
			decodeErr = fmt.Errorf("approver %q: want the approver's email address", d.Approver)
		}
		if decodeErr != nil {
			cb.refuse(d.ID, "refused", "", http.StatusBadRequest, decodeErr)
			return
		}
		cb.decide(d.ID, d.Decision, approval.Approver{Principal: d.Approver, Email: d.Approver}, d.Reason)
	})
	if sc := secrets.slack; sc != nil {
		mux.HandleFunc("POST /v1/slack/interactions", func(w http.ResponseWriter, r *http.Request) {
			serveSlack(w, r, sc, store, results)
		})
	}
	if jc := secrets.jira; jc != nil {
		mux.HandleFunc("POST /v1/jira/webhook", func(w http.ResponseWriter, r *http.Request) {
			serveJira(w, r, jc, store, results)
		})
	}
	if wp := secrets.web; wp != nil {
		web, err := approval.NewWeb(approval.WebOptions{
			Store: store, Issuer: wp.cfg.Issuer, ClientID: wp.cfg.ClientID, ClientSecret: wp.clientSecret,
			RedirectURL: wp.cfg.RedirectURL, Scopes: wp.cfg.Scopes, GroupsClaim: wp.cfg.GroupsClaim,
			BaseURL: wp.base, Key: wp.key, Logger: log,
			Count: func(result string) { results.WithLabelValues("web", result).Inc() },
		})
		if err != nil {
			return err
		}
		mux.Handle("/approvals", web)
		mux.Handle("/approvals/", web)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second, WriteTimeout: 10 * time.Second}
	stop := context.AfterFunc(ctx, func() { srv.Close() })
	defer stop()
	log.Info("approval callbacks listening", "addr", l.Addr().String())
	if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("approval callbacks: %w", err)
	}
	return nil
}

// serveSlack answers one Slack interaction callback: a click on a request's Approve or Deny
// button, signed by Slack, by a Slack user the configuration maps to an approver.
func serveSlack(w http.ResponseWriter, r *http.Request, sc *slackCallback, store *approval.Store, results *prometheus.CounterVec) {
	const channel = "slack"
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		httpError(w, http.StatusBadRequest, fmt.Errorf("reading the request: %w", err))
		return
	}
	d, parseErr := approval.ParseSlackInteraction(body, sc.users)
	// Verified before anything in the body is believed; the id, if any, only names the
	// request the refusal is recorded on.
	cb := callback{w, store, results, channel}
	if err := approval.VerifySlack(r.Header, body, sc.signingSecret); err != nil {
		cb.refuse(d.ID, "refused", " from "+r.RemoteAddr, http.StatusUnauthorized, err)
		return
	}
	switch {
	case errors.Is(parseErr, approval.ErrUnknownSlackUser):
		// Slack vouches for the click; the configuration names no approver for the user.
		cb.refuse(d.ID, "failed", "", http.StatusForbidden, parseErr)
		return
	case parseErr != nil:
		cb.refuse(d.ID, "refused", "", http.StatusBadRequest, parseErr)
		return
	}
	cb.decide(d.ID, d.Decision, d.Approver, "through Slack as "+d.User)
}

// serveJira answers one Jira webhook: an issue update, signed with the webhook's secret,
// that decides when it moves a request's issue into the approving or denying status.
func serveJira(w http.ResponseWriter, r *http.Request, jc *jiraCallback, store *approval.Store, results *prometheus.CounterVec) {
	const channel = "jira"
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		httpError(w, http.StatusBadRequest, fmt.Errorf("reading the request: %w", err))
		return
	}
	d, parseErr := approval.ParseJiraWebhook(body, jc.approveStatus, jc.denyStatus, jc.users, time.Now(), approval.CallbackWindow)
	cb := callback{w, store, results, channel}
	if err := approval.VerifyJira(body, r.Header.Get(approval.HeaderJiraSignature), jc.secret); err != nil {
		cb.refuse(d.ID, "refused", " from "+r.RemoteAddr, http.StatusUnauthorized, err)
		return
	}
	switch {
	case errors.Is(parseErr, approval.ErrJiraNoDecision):
		// Jira sends every update of the issues its webhook watches; most decide nothing.
		w.WriteHeader(http.StatusNoContent)
		return
	case errors.Is(parseErr, approval.ErrStaleTimestamp):
		cb.refuse(d.ID, "refused", " from "+r.RemoteAddr, http.StatusUnauthorized, parseErr)
		return
	case errors.Is(parseErr, approval.ErrUnknownJiraUser):
		cb.refuse(d.ID, "failed", "", http.StatusForbidden, parseErr)
		return
	case parseErr != nil:
		cb.refuse(d.ID, "refused", "", http.StatusBadRequest, parseErr)
		return
	}
	cb.decide(d.ID, d.Decision, d.Approver, "through Jira issue "+d.Issue)
}

// callback is one channel's decision arriving: it records a refusal on the request the
// callback names, or applies the decision, and counts either by channel and result.
type callback struct {
	w       http.ResponseWriter
	store   *approval.Store
	results *prometheus.CounterVec
	channel string
}

// refuse answers status and records the refusal on request id (if the body named one);
// result is "refused" (not believed) or "failed" (believed, but deciding nothing).
func (c callback) refuse(id, result, detail string, status int, err error) {
	c.results.WithLabelValues(c.channel, result).Inc()
	c.store.Refuse(id, fmt.Sprintf("refused: callback through %s%s: %v", c.channel, detail, err))
	httpError(c.w, status, err)
}

// decide approves or denies request id as approver, with reason.
func (c callback) decide(id, decision string, approver approval.Approver, reason string) {
	do := c.store.Deny
	if decision == "approve" {
		do = c.store.Approve
	}
	got, err := do(id, approver, reason)
	result := "accepted"
	if err != nil {
		result = "failed"
	}
	c.results.WithLabelValues(c.channel, result).Inc()
	writeDecision(c.w, approver, got, err)
}
