// Package policy reads Vigil's policy file and decides, for each statement, what to do:
// allow, alert, block, mask or require approval. One engine serves capture (where the
// decision is a label on the audit event) and the enforcement proxy (where it is acted on).
// The policy names environments, principals, sensitive columns and flagged workloads, and
// holds ordered rules; the first rule that matches a statement decides it.
package policy

import (
	"bytes"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/vigil-db/vigil/pkg/mask"
	"go.yaml.in/yaml/v3"
)

// Actions a rule can take.
const (
	ActionAllow           = "allow"
	ActionAlert           = "alert"
	ActionBlock           = "block"
	ActionMask            = "mask"
	ActionRequireApproval = "require_approval"
)

// severity orders actions: a multi-statement message takes its worst statement's decision.
var severity = map[string]int{ActionAllow: 0, ActionAlert: 1, ActionMask: 2, ActionRequireApproval: 3, ActionBlock: 4}

// DefaultEnvironment is the environment of servers and databases that no environment lists,
// unless the policy says otherwise: an unknown database is treated as production.
const DefaultEnvironment = "production"

// Policy is a parsed, validated policy file. Build an Engine from it to decide.
type Policy struct {
	// Name is where the policy came from (a file name, or "default").
	Name string

	Version            int              `yaml:"version"`
	DefaultEnvironment string           `yaml:"default_environment"`
	DefaultAction      string           `yaml:"default_action"`
	Environments       []Environment    `yaml:"environments"`
	Principals         map[string]Group `yaml:"principals"`
	Sensitive          Sensitive        `yaml:"sensitive"`
	Enforce            Enforce          `yaml:"enforce"`
	Rules              []Rule           `yaml:"rules"`

	// Warnings are accepted but noteworthy things about the policy (selectors on data the
	// agent does not report yet).
	Warnings []string `yaml:"-"`
}

// Environment says which servers and databases belong to an environment. Both lists are
// optional; when both are given, both must match.
type Environment struct {
	Name string `yaml:"name"`
	// Servers are "ip:port", "ip", ":port", CIDR blocks ("10.0.0.0/8", optionally with
	// ":port" after them is not supported: use separate entries), or globs over "host:port"
	// and socket paths ("/var/run/postgresql/*").
	Servers []string `yaml:"servers"`
	// Databases are database names or globs.
	Databases []string `yaml:"databases"`
}

// Group is a named set of principals: anyone matching any member list belongs to it.
type Group struct {
	// DBUsers are database user names or globs.
	DBUsers []string `yaml:"db_users"`
	// OIDCGroups are groups from a verified identity (OIDC token).
	OIDCGroups []string `yaml:"oidc_groups"`
	// Emails are verified identity emails or globs ("*@example.com").
	Emails []string `yaml:"emails"`
	// Workloads select client processes.
	Workloads []Workload `yaml:"workloads"`
}

// Workload selects client processes by what the agent knows about them. Every field that is
// set must match. Globs are allowed in string fields.
type Workload struct {
	UID            *int32 `yaml:"uid"`
	Exe            string `yaml:"exe"`
	Comm           string `yaml:"comm"`
	ContainerID    string `yaml:"container_id"`
	Image          string `yaml:"image"`
	Pod            string `yaml:"pod"`
	Namespace      string `yaml:"namespace"`
	ServiceAccount string `yaml:"service_account"`
	// Labels must all be on the client's pod, with these values (globs allowed). The agent
	// reads pods' labels from the Kubernetes API server (identity.pod_labels).
	Labels map[string]string `yaml:"labels"`
}

// Sensitive says which result columns are PII and how to mask them.
type Sensitive struct {
	// MaskByDefault masks detected PII for proxied connections unless the deciding rule
	// grants raw access (raw: true). Default true. When false, only rules with action mask
	// turn masking on.
	MaskByDefault *bool `yaml:"mask_by_default"`
	// Detectors enables value detectors by name (mask.DetectorNames); default all. An empty
	// list turns detection off.
	Detectors *[]string `yaml:"detectors"`
	// Strategy masks detected values and columns without their own strategy. Default full.
	Strategy *mask.Strategy `yaml:"strategy"`
	// TokenKeyEnv names the environment variable holding the key of the token strategy.
	TokenKeyEnv string `yaml:"token_key_env"`
	// Columns lists sensitive columns by table and name patterns. They come before the
	// dictionary and the catalog's tags, and extend the dictionary.
	Columns []SensitiveColumns `yaml:"columns"`
	// Dictionary configures the shipped dictionary of PII column names.
	Dictionary Dictionary `yaml:"dictionary"`
	// Discovery configures sampling of values to find PII columns.
	Discovery Discovery `yaml:"discovery"`
	// CleanFunctions names pg_catalog functions whose result may leave unmasked although
	// it is computed from a sensitive column (length, octet_length, ...): a policy choice,
	// none by default. count, EXISTS and IS [NOT] NULL always pass.
	CleanFunctions []string `yaml:"clean_functions"`
}

// SensitiveColumns marks columns of matching tables as PII.
type SensitiveColumns struct {
	// Tables are table names or globs; empty means any table.
	Tables []string `yaml:"tables"`
	// Columns are column names or globs ("*ssn*").
	Columns  []string       `yaml:"columns"`
	Strategy *mask.Strategy `yaml:"strategy"`
}

// Enforce lists the workloads whose database connections the agent steers into the proxy.
type Enforce struct {
	Workloads []Workload `yaml:"workloads"`
	// Principals are groups (from principals) whose connections are steered.
	Principals []string `yaml:"principals"`
}

// Rule is one ordered rule: when Match matches a statement, Action decides it.
type Rule struct {
	Name    string `yaml:"name"`
	Match   Match  `yaml:"match"`
	Action  string `yaml:"action"`
	Message string `yaml:"message"`
	// Raw grants unmasked results to statements this rule allows.
	Raw bool `yaml:"raw"`
	// Approval says how a require_approval rule's approvals work (defaults without it).
	Approval *Approval `yaml:"approval"`
	// Flag, on a rule that capture sees matched (a workload that talks to a server
	// directly), flags that workload: its next connections are steered into the proxy.
	Flag *RuleFlag `yaml:"flag"`
}

// RuleFlag is what a rule's match does to the workload behind it (adaptive enforcement).
type RuleFlag struct {
	// For is how long the workload stays flagged (default 1h).
	For time.Duration `yaml:"for"`
	// Terminate ends the workload's open sessions to the server too (pg_terminate_backend
	// through the agent's catalog login), so that they reconnect, through the proxy.
	Terminate bool `yaml:"terminate"`
}

// DefaultFlagFor is how long a rule's flag lasts without a for.
const DefaultFlagFor = time.Hour

// Approval configures a require_approval rule.
type Approval struct {
	// Hold is how long the proxy holds a statement waiting for approval before failing it;
	// zero (the default) refuses it at once with the request id, to be run again once
	// approved.
	Hold time.Duration `yaml:"hold"`
	// Approvers are principal group names from the principals section or "os:USER"
	// names; empty: anyone but the requester who can reach the agent's control socket.
	Approvers []string `yaml:"approvers"`
	// Required is how many distinct approvers must approve (default 1).
	Required int `yaml:"required"`
	// Expiry is how long a grant stays valid (default 15m).
	Expiry time.Duration `yaml:"expiry"`
	// Uses is how many times a grant lets its statement run (default 1).
	Uses int `yaml:"uses"`
}

// Approver is someone approving a statement, as the agent knows them.
type Approver struct {
	// OSUser is the login name behind the control socket ("" when unknown).
	OSUser string
	UID    *int32
	Email  string
	Groups []string
}

// Match is a rule's condition. Every field that is set must hold; within a list, any entry
// may match. An empty Match matches everything.
type Match struct {
	Sources      []string `yaml:"sources"`
	Protocols    []string `yaml:"protocols"`
	Environments []string `yaml:"environments"`
	Databases    []string `yaml:"databases"`
	// Principals are group names from the principals section.
	Principals []string `yaml:"principals"`
	DBUsers    []string `yaml:"db_users"`
	// Groups are verified identity (OIDC) groups.
	Groups       []string   `yaml:"groups"`
	Workloads    []Workload `yaml:"workloads"`
	Applications []string   `yaml:"applications"`
	// Kinds are statement kinds (SELECT, DDL, ...).
	Kinds []string `yaml:"kinds"`
	// Commands are command tags or globs ("DROP *", "ALTER TABLE", "CREATE FUNCTION").
	Commands []string `yaml:"commands"`
	// Tables match tables read or written; Writes only tables written.
	Tables []string `yaml:"tables"`
	Writes []string `yaml:"writes"`
	// Columns match referenced columns by name, or "table.column".
	Columns []string `yaml:"columns"`
	// Functions match called functions with or without schema.
	Functions []string `yaml:"functions"`
	// Variables match settings changed by SET/RESET/set_config.
	Variables []string `yaml:"variables"`
	// Flags match statement flags (sqlparse.FlagNames); any listed flag suffices.
	Flags []string `yaml:"flags"`
	// NoEffectiveWhere matches UPDATE/DELETE/MERGE that touch every row.
	NoEffectiveWhere *bool `yaml:"no_effective_where"`
	// EstimatedRowsOver and EstimatedShareOver match UPDATE, DELETE and MERGE that the
	// server's planner expects to touch more rows than this, or more than this share (0 to
	// 1) of the target table's rows (pg_class.reltuples). Only the proxy can ask the
	// planner; a statement it could not get an estimate for matches (fail closed). Capture
	// never matches them.
	EstimatedRowsOver  *float64 `yaml:"estimated_rows_over"`
	EstimatedShareOver *float64 `yaml:"estimated_share_over"`
	// When is a CEL expression over statement, principal, environment, database, source,
	// protocol; see docs/policy.md.
	When string `yaml:"when"`
}

//go:embed default.yaml
var defaultYAML []byte

// DefaultYAML is the shipped default policy's text.
func DefaultYAML() []byte { return bytes.Clone(defaultYAML) }

// Default is the shipped default policy: every database counts as production, the default
// guardrails are on, and detected PII is masked for proxied connections.
func Default() *Policy {
	p, err := Parse(defaultYAML, "default")
	if err != nil {
		panic(fmt.Sprintf("the embedded default policy is invalid: %v", err))
	}
	return p
}

// Load reads and parses a policy file.
func Load(path string) (*Policy, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading policy: %w", err)
	}
	return Parse(data, path)
}

// Parse parses and validates a policy; name (usually the file name) prefixes errors, which
// give the line and the field at fault.
func Parse(data []byte, name string) (*Policy, error) {
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, fmt.Errorf("%s: %s", name, strings.TrimPrefix(err.Error(), "yaml: "))
	}
	p := &Policy{}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(p); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("%s: empty policy", name)
		}
		return nil, fmt.Errorf("%s: %s", name, yamlError(err))
	}
	p.Name = name
	v := validator{name: name, root: &root}
	v.policy(p)
	if len(v.errs) > 0 {
		return nil, errors.Join(v.errs...)
	}
	p.Warnings = v.warnings
	return p, nil
}

// yamlError rewords the decoder's messages ("line 5: field foo not found in type
// policy.Rule") into the policy's vocabulary.
func yamlError(err error) string {
	var te *yaml.TypeError
	if errors.As(err, &te) {
		msgs := make([]string, 0, len(te.Errors))
		for _, e := range te.Errors {
			e = strings.Replace(e, " not found in type ", " is not known in ", 1)
			e = strings.ReplaceAll(e, "policy.", "")
			msgs = append(msgs, e)
		}
		return strings.Join(msgs, "; ")
	}
	return strings.TrimPrefix(err.Error(), "yaml: ")
}
