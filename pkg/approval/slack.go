package approval

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/slack-go/slack"
)

// The Slack channel. Vigil posts each new request to a Slack channel with the bot's token
// (chat.postMessage), as a message with Approve and Deny buttons whose value is the request
// id. A click comes back as Slack's interaction callback to the agent's callback listener:
// a form POST of payload=<JSON>, signed with the Slack app's signing secret
// (X-Slack-Signature: v0=<hex HMAC-SHA256(secret, "v0:<timestamp>:<body>")>,
// X-Slack-Request-Timestamp). Slack vouches only for the Slack user who clicked; which
// approver that is, is the configuration's to say (SlackInteraction's users): a Slack user
// it does not name decides nothing.

// Action ids of the message's buttons.
const (
	SlackActionApprove = "vigil_approve"
	SlackActionDeny    = "vigil_deny"
)

// ErrUnknownSlackUser refuses a click by a Slack user the configuration maps to no approver.
var ErrUnknownSlackUser = errors.New("is not mapped to an approver (approvals.slack.users)")

// Slack is the Slack channel.
type Slack struct {
	// ChannelID is where requests are posted ("C0123456789").
	ChannelID string
	// Client posts with the bot token.
	Client  *slack.Client
	AgentID string

	posts posts // request id → the message's channel and timestamp, for Ended
}

// Name implements Channel.
func (s *Slack) Name() string { return "slack" }

// Notify implements Channel: one chat.postMessage.
func (s *Slack) Notify(ctx context.Context, r Request) error {
	text, blocks := SlackMessage(r, s.AgentID)
	channel, ts, err := s.Client.PostMessageContext(ctx, s.ChannelID, slack.MsgOptionText(text, false), slack.MsgOptionBlocks(blocks...))
	if err != nil {
		return fmt.Errorf("chat.postMessage: %w", withoutURL(err))
	}
	s.posts.put(r.ID, channel+"\x00"+ts)
	return nil
}

// Ended implements Follower: the request's message is updated (chat.update) to say how it
// ended, without its buttons.
func (s *Slack) Ended(ctx context.Context, r Request) error {
	ref, ok := s.posts.take(r.ID)
	if !ok {
		return nil // not posted by this agent process (or its post failed)
	}
	channel, ts, _ := strings.Cut(ref, "\x00")
	text, blocks := SlackMessage(r, s.AgentID)
	outcome := Outcome(r)
	ended := []slack.Block{blocks[0], slack.NewContextBlock("vigil_outcome",
		slack.NewTextBlockObject(slack.MarkdownType, "*"+slackEscape(outcome)+"*", false, false))}
	if _, _, _, err := s.Client.UpdateMessageContext(ctx, channel, ts, slack.MsgOptionText(text+": "+outcome, false), slack.MsgOptionBlocks(ended...)); err != nil {
		s.posts.put(r.ID, ref) // for the next attempt
		return fmt.Errorf("chat.update: %w", withoutURL(err))
	}
	return nil
}

// posts remembers where a channel told of each request, until it has shown the outcome.
// It lives in memory: after a restart, requests posted before it keep their buttons (a
// click on a decided request is refused, and says so).
type posts struct {
	mu sync.Mutex
	m  map[string]string
}

// maxPosts bounds the requests remembered: pending requests are few, and a channel that
// loses the oldest only leaves their messages as they were.
const maxPosts = 4096

func (p *posts) put(id, ref string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.m == nil {
		p.m = make(map[string]string)
	}
	if len(p.m) >= maxPosts {
		for k := range p.m {
			delete(p.m, k)
			break
		}
	}
	p.m[id] = ref
}

func (p *posts) take(id string) (string, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	ref, ok := p.m[id]
	delete(p.m, id)
	return ref, ok
}

// SlackMessage is the message for r: a fallback text (notifications, clients without
// blocks) and the blocks, the request described and its two buttons.
func SlackMessage(r Request, agentID string) (string, []slack.Block) {
	text := fmt.Sprintf("Vigil: approval %s requested by %s on %s (rule %q)", r.ID, r.Requester, r.Database, r.Rule)
	var b strings.Builder
	fmt.Fprintf(&b, "*Approval requested* `%s`\n*Requester:* %s", r.ID, slackEscape(r.Requester))
	if r.DBUser != "" {
		fmt.Fprintf(&b, " (database user %s)", slackEscape(r.DBUser))
	}
	fmt.Fprintf(&b, "\n*Database:* %s   *Rule:* %s", slackEscape(r.Database), slackEscape(r.Rule))
	if agentID != "" {
		fmt.Fprintf(&b, "   *Agent:* %s", slackEscape(agentID))
	}
	// Slack rejects a section's text over 3000 characters; the statement is cut, the
	// request id still names the whole of it.
	stmt := r.Statement
	if len(stmt) > 2000 {
		stmt = strings.ToValidUTF8(stmt[:2000], "") + " …"
	}
	fmt.Fprintf(&b, "\n```%s```", slackEscape(strings.ReplaceAll(stmt, "```", "` ` `")))
	if len(r.Params) > 0 {
		fmt.Fprintf(&b, "\n*Parameters:* %s", slackEscape(strings.Join(r.Params, ", ")))
	}
	fmt.Fprintf(&b, "\n*Needs:* %d approver(s)", r.Terms.Required)
	if len(r.Terms.Approvers) > 0 {
		fmt.Fprintf(&b, " from %s", slackEscape(strings.Join(r.Terms.Approvers, ", ")))
	}
	if !r.Deadline.IsZero() {
		fmt.Fprintf(&b, ", by %s", r.Deadline.UTC().Format(time.RFC3339))
	}
	approve := slack.NewButtonBlockElement(SlackActionApprove, r.ID, slack.NewTextBlockObject(slack.PlainTextType, "Approve", false, false))
	approve.Style = slack.StylePrimary
	deny := slack.NewButtonBlockElement(SlackActionDeny, r.ID, slack.NewTextBlockObject(slack.PlainTextType, "Deny", false, false))
	deny.Style = slack.StyleDanger
	return text, []slack.Block{
		slack.NewSectionBlock(slack.NewTextBlockObject(slack.MarkdownType, b.String(), false, false), nil, nil),
		slack.NewActionBlock("vigil_decision", approve, deny),
	}
}

// slackEscape escapes what Slack's mrkdwn reads as markup: &, < and > (links, mentions).
func slackEscape(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;").Replace(s)
}

// SlackDecision is a verified click on one of the message's buttons.
type SlackDecision struct {
	ID string
	// Decision is "approve" or "deny".
	Decision string
	// User is the Slack user id who clicked, UserName their Slack name, as Slack reports.
	User, UserName string
	// Approver is who the configuration maps User to; empty for an unmapped user.
	Approver Approver
}

// VerifySlack checks a Slack request's signature and timestamp (Slack's 5 minutes) with
// the signing secret: ErrBadSignature or ErrStaleTimestamp.
func VerifySlack(header http.Header, body []byte, signingSecret string) error {
	sv, err := slack.NewSecretsVerifier(header, signingSecret)
	if errors.Is(err, slack.ErrExpiredTimestamp) {
		return ErrStaleTimestamp
	}
	if err != nil {
		return ErrBadSignature
	}
	if _, err := sv.Write(body); err != nil {
		return ErrBadSignature
	}
	if sv.Ensure() != nil {
		return ErrBadSignature
	}
	return nil
}

// ParseSlackInteraction reads a verified interaction callback's body (payload=<JSON>): a
// block_actions click on an Approve or Deny button. users maps Slack user ids to approvers'
// email addresses; an unmapped user yields a decision with no Approver and an
// ErrUnknownSlackUser error. The id, when the payload has one, is returned with any error,
// so that the refusal is recorded on the request.
func ParseSlackInteraction(body []byte, users map[string]string) (SlackDecision, error) {
	form, err := url.ParseQuery(string(body))
	if err != nil {
		return SlackDecision{}, fmt.Errorf("interaction body: %w", err)
	}
	payload := form.Get("payload")
	if payload == "" {
		return SlackDecision{}, errors.New("interaction body: no payload")
	}
	var cb slack.InteractionCallback
	if err := json.Unmarshal([]byte(payload), &cb); err != nil {
		return SlackDecision{}, fmt.Errorf("interaction payload: %w", err)
	}
	if cb.Type != slack.InteractionTypeBlockActions {
		return SlackDecision{}, fmt.Errorf("interaction type %q: want block_actions", cb.Type)
	}
	var d SlackDecision
	for _, a := range cb.ActionCallback.BlockActions {
		if a.ActionID == SlackActionApprove || a.ActionID == SlackActionDeny {
			d.Decision, d.ID = map[string]string{SlackActionApprove: "approve", SlackActionDeny: "deny"}[a.ActionID], a.Value
			break
		}
	}
	if d.Decision == "" {
		return SlackDecision{}, errors.New("interaction: no Approve or Deny action")
	}
	d.User, d.UserName = cb.User.ID, cb.User.Name
	if d.User == "" {
		return d, errors.New("interaction: no user")
	}
	email, ok := users[d.User]
	if !ok {
		return d, fmt.Errorf("Slack user %s (%s) %w", d.User, d.UserName, ErrUnknownSlackUser)
	}
	d.Approver = Approver{Principal: email, Email: email}
	return d, nil
}
