// Package event defines Vigil's audit event: one record per statement (plus the few records
// that describe the trail itself, such as gaps), with the same fields in every sink — local
// JSON lines, ClickHouse columns, `vigil events --json`. Field names are the contract in
// docs/events.md; add fields, never rename them.
package event

import (
	"encoding/json"
	"time"
)

// Type says what an event records. Most are statements; the others describe the trail.
type Type string

const (
	// TypeStatement is one statement executed (or refused) on a database session.
	TypeStatement Type = "statement"
	// TypeGap says that capture or delivery lost data it could not recover: the Detail says
	// what and where, Lost how many records. The trail is never silently incomplete.
	TypeGap Type = "gap"
	// TypeApproval records a step of an approval (requested, approved, denied, expired).
	TypeApproval Type = "approval"
	// TypeAnchor is a signed checkpoint of the hash chain: Signature covers PrevHash and
	// Seq with the agent's private key, so a verifier holding only the public key can tell
	// that the chain up to here is the agent's own.
	TypeAnchor Type = "anchor"
	// TypeFlag records a workload flagged for steering into the proxy, or unflagged: Rule
	// names the flag, Detail says what it selects, who set it, why and until when.
	TypeFlag Type = "flag"
	// TypeFault records a session closed by an internal error (a bug) in Vigil, which kept
	// running: Detail says which side and where. Statements still outstanding on it are
	// recorded as unanswered.
	TypeFault Type = "fault"
	// TypeChain opens a chain: the first event (seq 1) of every chain, written when an
	// agent starts with a state directory that has none yet. ChainID names the chain, KeyID
	// the key that signs it, Detail says so in words. Several chains under one agent id (a
	// reinstall, a pod rescheduled onto an empty volume, a second agent given the same id)
	// are told apart by their chain ids, and each announces itself with one of these.
	TypeChain Type = "chain"
)

// Source says which part of Vigil saw the statement.
const (
	SourceEBPF  = "ebpf"
	SourceProxy = "proxy"
)

// Protocols.
const (
	ProtocolPostgres = "postgres"
	ProtocolMySQL    = "mysql"
)

// Decisions a policy can take. DecisionAllow is also what capture records when no policy
// rule matched.
const (
	DecisionAllow            = "allow"
	DecisionAlert            = "alert"
	DecisionBlock            = "block"
	DecisionMask             = "mask"
	DecisionApprovalRequired = "approval_required"
)

// Process is the client process behind a connection, where the agent can see it (client on
// the same host, or an agent on the application host).
type Process struct {
	PID            int32  `json:"pid,omitempty"`
	UID            *int32 `json:"uid,omitempty"` // pointer: uid 0 (root) is meaningful
	Comm           string `json:"comm,omitempty"`
	Exe            string `json:"exe,omitempty"`
	ContainerID    string `json:"container_id,omitempty"`
	Pod            string `json:"pod,omitempty"` // pod UID, or name where known
	Namespace      string `json:"namespace,omitempty"`
	ServiceAccount string `json:"service_account,omitempty"`
	// Image is the container's image as the runtime names it ("registry/app:1.4.2").
	Image string `json:"image,omitempty"`
	// Labels are the pod's labels, for workload selectors; not recorded (they change,
	// and selectors say what matters about them).
	Labels map[string]string `json:"-"`
	// Cgroup is the process's cgroup v2 path, as in the 0:: line of /proc/PID/cgroup (or
	// as the kernel named its cgroup at connect): the workload steering flags.
	Cgroup string `json:"cgroup,omitempty"`
}

// Identity is a verified principal (OIDC), never a claim the client made about itself.
type Identity struct {
	Issuer  string   `json:"issuer,omitempty"`
	Subject string   `json:"subject,omitempty"`
	Email   string   `json:"email,omitempty"`
	Groups  []string `json:"groups,omitempty"`
}

// Event is one audit record. JSON encoding is deterministic (field order is struct order,
// empty fields omitted, times in UTC), which the hash chain relies on: decoding a stored
// line and encoding it again yields the same bytes.
type Event struct {
	Time     time.Time `json:"time"`
	Type     Type      `json:"type"`
	Source   string    `json:"source,omitempty"`
	Protocol string    `json:"protocol,omitempty"`
	Host     string    `json:"host,omitempty"`
	AgentID  string    `json:"agent_id,omitempty"`
	// ChainID names the hash chain the event belongs to: created with the agent's state
	// directory, so a fresh state directory starts a new chain (at seq 1) even under the
	// same agent id. (agent_id, chain_id, seq) identifies an event. Empty for chains
	// started before chain ids existed.
	ChainID string `json:"chain_id,omitempty"`
	Seq     uint64 `json:"seq"`

	DBUser      string `json:"db_user,omitempty"`
	Database    string `json:"database,omitempty"`
	Application string `json:"application,omitempty"`
	ClientAddr  string `json:"client_addr,omitempty"`
	ServerAddr  string `json:"server_addr,omitempty"`
	SessionID   string `json:"session_id,omitempty"`
	BackendPID  int32  `json:"backend_pid,omitempty"`
	TLS         bool   `json:"tls,omitempty"`
	// Steered: the kernel moved this connection into the proxy (the client dialled the
	// server); SteeredBy names the selector or flag that did.
	Steered   bool   `json:"steered,omitempty"`
	SteeredBy string `json:"steered_by,omitempty"`

	Process  *Process  `json:"process,omitempty"`
	Identity *Identity `json:"identity,omitempty"`

	Statement          string   `json:"statement,omitempty"`
	StatementTruncated bool     `json:"statement_truncated,omitempty"`
	Params             []string `json:"params,omitempty"`
	Fingerprint        string   `json:"fingerprint,omitempty"`
	Kind               string   `json:"kind,omitempty"`
	Tables             []string `json:"tables,omitempty"`

	Rows         int64  `json:"rows"`
	DurationUS   int64  `json:"duration_us"`
	Error        string `json:"error,omitempty"`
	ErrorMessage string `json:"error_message,omitempty"`

	Decision      string   `json:"decision,omitempty"`
	Rule          string   `json:"rule,omitempty"`
	PIIColumns    []string `json:"pii_columns,omitempty"`
	MaskedColumns []string `json:"masked_columns,omitempty"`
	ApprovalID    string   `json:"approval_id,omitempty"`

	// Gap events: how many records were lost and what happened.
	Lost   uint64 `json:"lost,omitempty"`
	Detail string `json:"detail,omitempty"`

	// Anchor events: the signature over the chain so far and the signing key's id.
	Signature string `json:"signature,omitempty"`
	KeyID     string `json:"key_id,omitempty"`

	PrevHash string `json:"prev_hash,omitempty"`
	Hash     string `json:"hash,omitempty"`

	// NoCredentials, never stored, is set by a source that classified Statement and found
	// nothing in it that can hold a credential: the trail's credential redaction, which
	// would have to look for one again, skips it.
	NoCredentials bool `json:"-"`
}

// MarshalJSON pins the time to UTC so that the encoding does not depend on the agent's zone.
func (e Event) MarshalJSON() ([]byte, error) {
	type plain Event
	p := plain(e)
	p.Time = p.Time.UTC()
	return json.Marshal(p)
}

// Canonical is the encoding the hash chain covers: the event with its own hash left out.
func (e Event) Canonical() ([]byte, error) {
	e.Hash = ""
	return e.MarshalJSON()
}
