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
	"strconv"
	"strings"
	"time"
)

// The generic webhook. Vigil POSTs a JSON description of each new request to the receiver's
// URL; the receiver (a ticketing system, a chat bot, a small service) authenticates the
// approver its own way and POSTs the decision back to the agent's callback URL. Both
// directions are signed the same way, with a secret the two share:
//
//	X-Vigil-Timestamp: <unix seconds>
//	X-Vigil-Signature: v1=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>
//
// A receiver must check the signature and refuse timestamps older than a few minutes; the
// agent refuses, and records, callbacks whose signature does not verify or whose timestamp
// is more than CallbackWindow away from its clock.

// Header names and the signature's version prefix.
const (
	HeaderTimestamp = "X-Vigil-Timestamp"
	HeaderSignature = "X-Vigil-Signature"
	signaturePrefix = "v1="
)

// CallbackWindow is how far a signed callback's timestamp may be from the agent's clock.
const CallbackWindow = 5 * time.Minute

// Callback refusals.
var (
	ErrBadSignature   = errors.New("signature does not verify")
	ErrStaleTimestamp = errors.New("timestamp outside the accepted window (old or replayed)")
)

// Sign returns the signature headers' values for body at t.
func Sign(secret, body []byte, t time.Time) (timestamp, signature string) {
	timestamp = strconv.FormatInt(t.Unix(), 10)
	return timestamp, signaturePrefix + hex.EncodeToString(mac(secret, timestamp, body))
}

func mac(secret []byte, timestamp string, body []byte) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(timestamp))
	m.Write([]byte{'.'})
	m.Write(body)
	return m.Sum(nil)
}

// VerifySigned checks a signed body: the signature over timestamp and body, then the
// timestamp within window of now. The signature is checked first, so that an unsigned
// caller learns nothing about the clock.
func VerifySigned(secret, body []byte, timestamp, signature string, now time.Time, window time.Duration) error {
	got, err := hex.DecodeString(strings.TrimPrefix(signature, signaturePrefix))
	if !strings.HasPrefix(signature, signaturePrefix) || err != nil || !hmac.Equal(got, mac(secret, timestamp, body)) {
		return ErrBadSignature
	}
	sec, err := strconv.ParseInt(timestamp, 10, 64)
	if err != nil {
		return ErrBadSignature
	}
	if d := now.Sub(time.Unix(sec, 0)); d > window || d < -window {
		return ErrStaleTimestamp
	}
	return nil
}

// WebhookRequest is the body Vigil POSTs for a new request.
type WebhookRequest struct {
	// Type is "approval.requested".
	Type        string    `json:"type"`
	ID          string    `json:"id"`
	Requester   string    `json:"requester"`
	DBUser      string    `json:"db_user,omitempty"`
	Database    string    `json:"database"`
	Statement   string    `json:"statement"`
	Params      []string  `json:"params,omitempty"`
	Fingerprint string    `json:"fingerprint,omitempty"`
	Rule        string    `json:"rule"`
	Created     time.Time `json:"created"`
	Deadline    time.Time `json:"deadline"`
	Approvers   []string  `json:"approvers,omitempty"`
	Required    int       `json:"required"`
	AgentID     string    `json:"agent_id,omitempty"`
	// DecisionURL is where the receiver POSTs a signed WebhookDecision.
	DecisionURL string `json:"decision_url"`
}

// WebhookDecision is the body a receiver POSTs to the decision URL.
type WebhookDecision struct {
	ID string `json:"id"`
	// Decision is "approve" or "deny".
	Decision string `json:"decision"`
	// Approver is the approver's email address, as the receiver authenticated them; the
	// policy's approvers are matched against it.
	Approver string `json:"approver"`
	Reason   string `json:"reason,omitempty"`
}

// Webhook is a generic webhook channel.
type Webhook struct {
	// ChannelName names it in the configuration ("ops").
	ChannelName string
	URL         string
	Secret      []byte
	// DecisionURL is where receivers POST decisions (the agent's callback listener).
	DecisionURL string
	AgentID     string
	Client      *http.Client
	Now         func() time.Time
}

// Name implements Channel.
func (w *Webhook) Name() string { return "webhook " + w.ChannelName }

// Notify implements Channel: one signed POST; any 2xx answer is delivery.
func (w *Webhook) Notify(ctx context.Context, r Request) error {
	body, err := json.Marshal(WebhookRequest{
		Type: "approval.requested", ID: r.ID, Requester: r.Requester, DBUser: r.DBUser, Database: r.Database,
		Statement: r.Statement, Params: r.Params, Fingerprint: r.Fingerprint, Rule: r.Rule,
		Created: r.Created, Deadline: r.Deadline, Approvers: r.Terms.Approvers, Required: r.Terms.Required,
		AgentID: w.AgentID, DecisionURL: w.DecisionURL,
	})
	if err != nil {
		return fmt.Errorf("encoding the webhook body: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.URL, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("webhook request: %w", withoutURL(err))
	}
	now := time.Now
	if w.Now != nil {
		now = w.Now
	}
	ts, sig := Sign(w.Secret, body, now())
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(HeaderTimestamp, ts)
	req.Header.Set(HeaderSignature, sig)
	client := w.Client
	if client == nil {
		client = http.DefaultClient
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("the receiver answered HTTP %d", resp.StatusCode)
	}
	return nil
}
