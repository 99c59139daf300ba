// Package config loads the agent's YAML configuration. Unknown keys and bad values are
// errors that name the file, the line and the field, so a typo never silently turns a
// feature off. Command-line flags override what the file says.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/netip"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Config is the agent's configuration. The zero value plus Defaults() is a working agent:
// local store under StateDir, every PostgreSQL server on the host found by itself.
type Config struct {
	// AgentID names this agent in the trail; default: the host name.
	AgentID string `yaml:"agent_id"`
	// Host is recorded in every event; default: the host name.
	Host string `yaml:"host"`
	// StateDir holds the signing key, the head file and the default local store.
	StateDir string `yaml:"state_dir"`
	// Store is where events go: local:DIR or clickhouse://host:port/db.
	Store string `yaml:"store"`
	// Policy is a policy file; empty: the shipped default policy.
	Policy string `yaml:"policy"`
	// Metrics is the listen address of /metrics and /readyz.
	Metrics string `yaml:"metrics"`
	// Log configures logging.
	Log Log `yaml:"log"`
	// Capture configures the eBPF capture.
	Capture Capture `yaml:"capture"`
	// Audit configures what the trail records.
	Audit Audit `yaml:"audit"`
	// LocalStore tunes the embedded store (also the spool in front of ClickHouse).
	LocalStore LocalStore `yaml:"local_store"`
	// Proxies are enforcement proxy listeners.
	Proxies []Proxy `yaml:"proxies"`
	// Steer lists the workloads whose connections to the proxies' upstream servers the
	// kernel moves into the proxy, with no change to the client.
	Steer []SteerSelector `yaml:"steer"`
	// SteerFail is what happens to flagged workloads while no agent runs: "open" (the
	// default: the steering hooks go with the agent, and their connections reach the
	// servers directly, unenforced) or "closed" (the hooks stay pinned and keep sending them
	// to the proxy's port, where nothing listens: refused until an agent is back).
	SteerFail string `yaml:"steer_fail"`
	// Identity configures how clients are identified.
	Identity Identity `yaml:"identity"`
	// Export tunes shipping the spool to ClickHouse.
	Export Export `yaml:"export"`
	// Approvals configures the control socket that `vigil approvals` talks to.
	Approvals Approvals `yaml:"approvals"`
}

// Approvals configures the approval channel of the proxies.
type Approvals struct {
	// SocketGroup is a group whose members may connect to <state dir>/control.sock to list,
	// approve and deny requests (mode 0660); the state directory must let them reach it.
	// Empty: root only (mode 0600). Who may approve what is the policy's to say: the
	// socket only lets them speak, as the OS user the kernel reports.
	SocketGroup string `yaml:"socket_group"`
	// CallbackListen is the address of the agent's HTTP listener for approval channels'
	// callbacks (a webhook receiver's signed decision). Required with channels.
	CallbackListen string `yaml:"callback_listen"`
	// CallbackURL is that listener as receivers reach it (behind a load balancer, TLS
	// terminated in front); default http://<callback_listen>.
	CallbackURL string `yaml:"callback_url"`
	// Webhooks are generic webhook channels: each new request is POSTed to each, signed.
	Webhooks []Webhook `yaml:"webhooks"`
	// Slack posts each new request to a Slack channel with Approve and Deny buttons.
	Slack *Slack `yaml:"slack"`
	// Jira files each new request as a Jira issue; moving it to a status decides.
	Jira *Jira `yaml:"jira"`
	// Web serves a page for approvers at <callback_url>/approvals, behind an OIDC login.
	Web *WebApprovals `yaml:"web"`
}

// WebApprovals is the approval page: people log in with the identity provider (the
// authorization code flow with PKCE) and approve or deny as the email address in their ID
// token, matched against the rules' approvers as any channel's approver is.
type WebApprovals struct {
	// Issuer is the identity provider's issuer URL; ClientID and the secret in
	// ClientSecretEnv the OAuth client registered for the page.
	Issuer          string `yaml:"issuer"`
	ClientID        string `yaml:"client_id"`
	ClientSecretEnv string `yaml:"client_secret_env"`
	// RedirectURL is the redirect URI registered with the client; default
	// <callback_url>/approvals/callback.
	RedirectURL string `yaml:"redirect_url"`
	// Scopes asked for; default openid and email (openid is always asked for).
	Scopes []string `yaml:"scopes"`
	// GroupsClaim names the ID token claim listing the person's groups, which rules'
	// approver groups match; default "groups".
	GroupsClaim string `yaml:"groups_claim"`
}

// Jira is the Jira channel: issues created through the REST API, decisions from a Jira
// webhook on issue updates, signed with the webhook's secret.
type Jira struct {
	// URL is the Jira site ("https://example.atlassian.net").
	URL string `yaml:"url"`
	// Project is the key of the project issues are filed in; IssueType their type
	// (default Task).
	Project   string `yaml:"project"`
	IssueType string `yaml:"issue_type"`
	// User is the account the agent files issues as (its email); TokenEnv names the
	// environment variable holding its API token.
	User     string `yaml:"user"`
	TokenEnv string `yaml:"token_env"`
	// WebhookSecretEnv names the environment variable holding the Jira webhook's secret.
	WebhookSecretEnv string `yaml:"webhook_secret_env"`
	// ApproveStatus and DenyStatus are the statuses that approve and deny (default
	// Approved and Rejected).
	ApproveStatus string `yaml:"approve_status"`
	DenyStatus    string `yaml:"deny_status"`
	// Users maps Jira account ids to the approvers' email addresses.
	Users map[string]string `yaml:"users"`
}

// Slack is the Slack channel: a Slack app's bot posts the requests, and Slack sends the
// clicks, signed with the app's signing secret, to the callback listener.
type Slack struct {
	// Channel is the id of the channel requests are posted to ("C0123456789"); the bot
	// must be in it.
	Channel string `yaml:"channel"`
	// BotTokenEnv names the environment variable holding the bot token (xoxb-…).
	BotTokenEnv string `yaml:"bot_token_env"`
	// SigningSecretEnv names the environment variable holding the app's signing secret.
	SigningSecretEnv string `yaml:"signing_secret_env"`
	// Users maps Slack user ids ("U0123456789") to the approvers' email addresses, which
	// the policy's approvers are matched against. A click by anyone else decides nothing.
	Users map[string]string `yaml:"users"`
	// APIURL is Slack's Web API base URL; default https://slack.com/api/ (set for tests).
	APIURL string `yaml:"api_url"`
}

// Webhook is one generic webhook channel.
type Webhook struct {
	// Name names the channel in events, metrics and its decision URL.
	Name string `yaml:"name"`
	// URL receives the signed requests.
	URL string `yaml:"url"`
	// SecretEnv names the environment variable holding the shared HMAC secret, which
	// signs both directions.
	SecretEnv string `yaml:"secret_env"`
}

// What flagged workloads meet while no agent runs (Config.SteerFail).
const (
	SteerFailOpen   = "open"
	SteerFailClosed = "closed"
)

// Values of Identity.PodLabels.
const (
	PodLabelsAuto = "auto"
	PodLabelsOff  = "off"
)

// Export tunes the ClickHouse exporter.
type Export struct {
	// ShutdownTimeout is how long a clean stop keeps shipping the spool to ClickHouse
	// after the trail's last write (default 10s). What is left stays in the spool, is
	// logged with its seq range, and ships at the next start.
	ShutdownTimeout time.Duration `yaml:"shutdown_timeout"`
}

// Log configures logging.
type Log struct {
	Level  string `yaml:"level"`  // debug, info, warn, error
	Format string `yaml:"format"` // json or text
}

// Capture configures the eBPF capture.
type Capture struct {
	// Enabled turns kernel capture on (default true). Off, the agent only proxies.
	Enabled *bool `yaml:"enabled"`
	// Discover finds PostgreSQL servers on the host by their executables (default true).
	// Off, capture watches exactly the Servers listed.
	Discover *bool `yaml:"discover"`
	// DiscoverInterval is how often the host is rescanned for new servers.
	DiscoverInterval time.Duration `yaml:"discover_interval"`
	// Servers are servers named explicitly: in addition to discovered ones, or with
	// Discover off the only ones.
	Servers []Server `yaml:"servers"`
	// MaxStatementBytes caps the statement text kept per event; longer statements are
	// truncated and flagged statement_truncated.
	MaxStatementBytes int `yaml:"max_statement_bytes"`
	// TLS captures TLS connections in plaintext through uprobes on the server (default true).
	TLS *bool `yaml:"tls"`
	// UnixSockets captures Unix-socket connections through syscall tracepoints (default
	// true). Enabling any syscall tracepoint slows every syscall on the host a little; see
	// BENCHMARKS.md.
	UnixSockets *bool `yaml:"unix_sockets"`
	// UnixAlwaysOn keeps the Unix-socket hooks attached all the time. By default they attach
	// when a client connects to a server's socket (a cgroup connect hook sees it) and detach
	// after UnixQuiet without Unix-socket sessions, so TCP traffic does not pay for them
	// while nobody uses the socket; a session so short that it ends before they attach is
	// recorded as a gap event. Always on, nothing is missed, at a host-wide cost.
	UnixAlwaysOn bool          `yaml:"unix_always_on"`
	UnixQuiet    time.Duration `yaml:"unix_quiet"`
	// RingBufferBytes is the size of the kernel→agent ring buffer.
	RingBufferBytes int `yaml:"ring_buffer_bytes"`
	// KeepAcrossRestarts leaves the kernel side of capture (the TCX programs, the ring
	// buffer and its maps) pinned in bpffs when the agent stops or dies, so that it keeps
	// capturing and the next agent on the same state directory drains what it captured
	// meanwhile (default true: a rolling update or a crash is then no blind window). Off,
	// capture stops with the agent, pins an earlier agent left are removed at start, and
	// every restart is a gap event with its time range.
	KeepAcrossRestarts *bool `yaml:"keep_across_restarts"`
}

// Server names a database server explicitly: the process listening on one of Ports.
type Server struct {
	Protocol string   `yaml:"protocol"` // postgres
	Ports    []uint16 `yaml:"ports"`
	// Binary is the server's executable, for one under another name than postgres; other
	// servers running it are not named by it.
	Binary string `yaml:"binary"`
}

// Audit configures what the trail records.
type Audit struct {
	// RecordParams records bind parameters (default true).
	RecordParams *bool `yaml:"record_params"`
	// Redact is "none" (default) or "literals": statement text with constants replaced
	// by placeholders, so values never reach the trail.
	Redact string `yaml:"redact"`
	// QueueEvents bounds the in-memory queue between capture and the store.
	QueueEvents int `yaml:"queue_events"`
	// AnchorInterval is the least time between signed anchors in the chain (the signed head
	// file is rewritten on every flush regardless).
	AnchorInterval time.Duration `yaml:"anchor_interval"`
	// BatchWait is how long the trail collects events before it writes them as one batch
	// (sooner when a full batch is queued): the events' delay to the store.
	BatchWait time.Duration `yaml:"batch_wait"`
}

// LocalStore tunes the embedded store. Zero values take the store's defaults.
type LocalStore struct {
	// SegmentBytes rotates segments at this size (default 64 MiB).
	SegmentBytes int64 `yaml:"segment_bytes"`
	// MaxBytes caps the directory (default 1 GiB): the oldest segments go first; as a
	// spool, losing unshipped events is recorded as a gap event.
	MaxBytes int64 `yaml:"max_bytes"`
	// SyncInterval 0 fsyncs every batch before it counts as stored; above 0, fsync runs at
	// most that often (a machine crash can then lose that much).
	SyncInterval time.Duration `yaml:"sync_interval"`
}

// Proxy is one enforcement proxy listener.
type Proxy struct {
	Listen   string `yaml:"listen"`
	Upstream string `yaml:"upstream"`
	// TLSCert and TLSKey enable TLS towards clients.
	TLSCert string `yaml:"tls_cert"`
	TLSKey  string `yaml:"tls_key"`
	// UpstreamTLS makes every upstream connection TLS (required, verified against the
	// system roots unless UpstreamCA names a CA bundle).
	UpstreamTLS bool   `yaml:"upstream_tls"`
	UpstreamCA  string `yaml:"upstream_ca"`
	// CatalogUser is the login the proxy uses on side connections to read pg_catalog
	// (which table and column a result column comes from); default postgres.
	// CatalogPasswordEnv names the environment variable holding its password, so the
	// secret never sits in the file.
	CatalogUser        string `yaml:"catalog_user"`
	CatalogPasswordEnv string `yaml:"catalog_password_env"`
	// UpstreamUser terminates authentication at the proxy: it logs in upstream as this
	// user (any method the server asks for: SCRAM, md5, password), with the password in the
	// environment variable UpstreamPasswordEnv. Clients then authenticate to the proxy
	// with the password in ClientPasswordEnv (sent in cleartext: give the proxy a TLS
	// certificate), or not at all when it is unset. Unset: authentication passes through.
	UpstreamUser        string `yaml:"upstream_user"`
	UpstreamPasswordEnv string `yaml:"upstream_password_env"`
	ClientPasswordEnv   string `yaml:"client_password_env"`
	// Auth "oidc" makes people log in with an OIDC ID token as their password (from
	// `vigil login`), verified against OIDC; unset: as above.
	Auth string `yaml:"auth"`
	OIDC *OIDC  `yaml:"oidc"`
	// MaxConnections caps the proxy's concurrent client sessions; the next one gets FATAL
	// 53300 before any upstream connection is opened. Zero: 1000.
	MaxConnections int `yaml:"max_connections"`
	// MaxMessageSize caps one message the proxy holds to inspect (a statement, a row it
	// masks), in bytes; larger ones end the session with 54000. Zero: 64 MiB.
	MaxMessageSize int `yaml:"max_message_size"`
}

// OIDC is the identity provider a proxy with auth: oidc trusts, and the upstream roles its
// people get.
type OIDC struct {
	// Issuer is the issuer URL (as tokens carry it); ClientID the OAuth client people log
	// in with, which ID tokens carry as their audience.
	Issuer   string `yaml:"issuer"`
	ClientID string `yaml:"client_id"`
	// GroupsClaim names the token claim listing the person's groups; default "groups".
	GroupsClaim string `yaml:"groups_claim"`
	// ClockSkew tolerates clocks apart by this much (default 30s; negative: none).
	ClockSkew time.Duration `yaml:"clock_skew"`
	// Roles map a group to the upstream login its members' sessions use, first match
	// in this order; group "*" matches every verified person.
	Roles []OIDCRole `yaml:"roles"`
}

// OIDCRole is one group's upstream login. The password comes from an environment variable
// or a file (its first line), never from this file.
type OIDCRole struct {
	Group        string `yaml:"group"`
	User         string `yaml:"user"`
	PasswordEnv  string `yaml:"password_env"`
	PasswordFile string `yaml:"password_file"`
}

// SteerSelector flags the workloads it matches, by one criterion: a selector with several
// would leave unclear whether they all must match or any, so each is its own selector.
type SteerSelector struct {
	// Name identifies the selector in events and metrics; default "steer[i]".
	Name string `yaml:"name"`
	// Cgroup is a cgroup v2 path as in the 0:: line of /proc/PID/cgroup; it flags the
	// processes in that cgroup and below it (a Kubernetes pod's, a systemd unit's).
	Cgroup string `yaml:"cgroup"`
	// Exe is an executable's absolute path, as it is executed.
	Exe string `yaml:"exe"`
	// UID flags every process of a user.
	UID *uint32 `yaml:"uid"`
	// Source flags remote clients from a network (CIDR), whose connections arriving at a
	// proxied server's port on this host are handed to the proxy.
	Source string `yaml:"source"`
	// Workload flags containers by what they are; every field it sets must match (globs
	// allowed), as in the policy's workload selectors. The agent finds matching containers
	// among the host's processes every few seconds and flags each one's cgroup.
	Workload WorkloadSelector `yaml:",inline"`
}

// WorkloadSelector selects containers by their Kubernetes identity or image.
type WorkloadSelector struct {
	Namespace      string            `yaml:"namespace"`
	Pod            string            `yaml:"pod"`
	ServiceAccount string            `yaml:"service_account"`
	Labels         map[string]string `yaml:"labels"`
	ContainerID    string            `yaml:"container_id"`
	Image          string            `yaml:"image"`
}

// IsZero reports whether the selector sets nothing.
func (w *WorkloadSelector) IsZero() bool {
	return (w.Namespace == "" && w.Pod == "" && w.ServiceAccount == "" && len(w.Labels) == 0 &&
		w.ContainerID == "" && w.Image == "")
}

// Identity configures how the agent learns who a client is.
type Identity struct {
	// HostRoot is where the host's root filesystem is visible to the agent: "/" (the
	// default) on the host, "/proc/1/root" in a container with hostPID, as the DaemonSet
	// runs it. Container runtimes' bundles (pod, namespace, image) and the kubelet's volumes
	// (service account) are read under it.
	HostRoot string `yaml:"host_root"`
	// PodLabels reads pods' labels from the Kubernetes API server, for selectors on
	// labels: "auto" (the default: when the agent runs in a pod, with its service account,
	// which must be allowed to list pods) or "off".
	PodLabels string `yaml:"pod_labels"`
	// NodeName is this node's name in Kubernetes, whose pods are listed; default
	// $NODE_NAME (the DaemonSet sets it from spec.nodeName).
	NodeName string `yaml:"node_name"`
}

// DefaultStore is the store when none is configured: the local store under the state
// directory.
func DefaultStore(stateDir string) string {
	return "local:" + strings.TrimSuffix(stateDir, "/") + "/events"
}

// Default returns the configuration used when no file is given.
func Default() *Config {
	c := &Config{}
	c.applyDefaults()
	return c
}

// Load reads a YAML file. Unknown keys are errors.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading config: %w", err)
	}
	return Parse(data, path)
}

// Parse parses YAML from data; name is used in error messages.
func Parse(data []byte, name string) (*Config, error) {
	c := &Config{}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	// io.EOF: an empty file means all defaults.
	if err := dec.Decode(c); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%s: %s", name, strings.TrimPrefix(err.Error(), "yaml: "))
	}
	if err := c.Complete(); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return c, nil
}

// Complete fills what is unset with defaults and validates the result. Call it again after
// changing a loaded configuration (command-line overrides).
func (c *Config) Complete() error {
	c.applyDefaults()
	return c.Validate()
}

func (c *Config) applyDefaults() {
	host, _ := os.Hostname()
	if c.Host == "" {
		c.Host = host
	}
	if c.AgentID == "" {
		c.AgentID = c.Host
	}
	if c.StateDir == "" {
		c.StateDir = "/var/lib/vigil"
	}
	if c.Store == "" {
		c.Store = DefaultStore(c.StateDir)
	}
	if c.Metrics == "" {
		c.Metrics = "127.0.0.1:9477"
	}
	if c.Log.Level == "" {
		c.Log.Level = "info"
	}
	if c.Log.Format == "" {
		c.Log.Format = "json"
	}
	t := true
	if c.Capture.Enabled == nil {
		c.Capture.Enabled = &t
	}
	if c.Capture.Discover == nil {
		c.Capture.Discover = &t
	}
	if c.Capture.TLS == nil {
		c.Capture.TLS = &t
	}
	if c.Capture.UnixSockets == nil {
		c.Capture.UnixSockets = &t
	}
	if c.Capture.KeepAcrossRestarts == nil {
		c.Capture.KeepAcrossRestarts = &t
	}
	if c.Capture.UnixQuiet == 0 {
		c.Capture.UnixQuiet = 30 * time.Second
	}
	if c.Capture.DiscoverInterval == 0 {
		c.Capture.DiscoverInterval = 2 * time.Second
	}
	if c.Capture.MaxStatementBytes == 0 {
		c.Capture.MaxStatementBytes = 1 << 20
	}
	if c.Capture.RingBufferBytes == 0 {
		c.Capture.RingBufferBytes = 16 << 20
	}
	if c.Audit.RecordParams == nil {
		c.Audit.RecordParams = &t
	}
	if c.Audit.Redact == "" {
		c.Audit.Redact = "none"
	}
	if c.Audit.QueueEvents == 0 {
		c.Audit.QueueEvents = 65536
	}
	if c.Audit.BatchWait == 0 {
		c.Audit.BatchWait = 20 * time.Millisecond
	}
	if c.Audit.AnchorInterval == 0 {
		c.Audit.AnchorInterval = 10 * time.Second
	}
	if c.SteerFail == "" {
		c.SteerFail = SteerFailOpen
	}
	if c.Identity.HostRoot == "" {
		c.Identity.HostRoot = "/"
	}
	if c.Identity.PodLabels == "" {
		c.Identity.PodLabels = PodLabelsAuto
	}
	if c.Identity.NodeName == "" {
		c.Identity.NodeName = os.Getenv("NODE_NAME")
	}
	for i := range c.Steer {
		if c.Steer[i].Name == "" {
			c.Steer[i].Name = fmt.Sprintf("steer[%d]", i)
		}
	}
	if c.Export.ShutdownTimeout == 0 {
		c.Export.ShutdownTimeout = 10 * time.Second
	}
	for i := range c.Capture.Servers {
		if c.Capture.Servers[i].Protocol == "" {
			c.Capture.Servers[i].Protocol = "postgres"
		}
	}
}

// Validate checks values that parse but make no sense.
func (c *Config) Validate() error {
	var errs []error
	if !strings.HasPrefix(c.Store, "local:") && !strings.HasPrefix(c.Store, "clickhouse://") {
		errs = append(errs, fmt.Errorf("store: %q: want local:DIR or clickhouse://host:port/db", c.Store))
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		errs = append(errs, fmt.Errorf("log.level: %q: want debug, info, warn or error", c.Log.Level))
	}
	switch c.Log.Format {
	case "json", "text":
	default:
		errs = append(errs, fmt.Errorf("log.format: %q: want json or text", c.Log.Format))
	}
	switch c.Audit.Redact {
	case "none", "literals":
	default:
		errs = append(errs, fmt.Errorf("audit.redact: %q: want none or literals", c.Audit.Redact))
	}
	if c.Capture.MaxStatementBytes < 64 {
		errs = append(errs, fmt.Errorf("capture.max_statement_bytes: %d is too small (minimum 64)", c.Capture.MaxStatementBytes))
	}
	if c.Export.ShutdownTimeout < 0 {
		errs = append(errs, fmt.Errorf("export.shutdown_timeout: %v: must not be negative", c.Export.ShutdownTimeout))
	}
	for i, s := range c.Capture.Servers {
		if s.Protocol != "postgres" {
			errs = append(errs, fmt.Errorf("capture.servers[%d].protocol: %q: only postgres is supported", i, s.Protocol))
		}
		if len(s.Ports) == 0 {
			errs = append(errs, fmt.Errorf("capture.servers[%d].ports: at least one port is required", i))
		}
	}
	for i, p := range c.Proxies {
		if p.Listen == "" || p.Upstream == "" {
			errs = append(errs, fmt.Errorf("proxies[%d]: listen and upstream are required", i))
		}
		if (p.TLSCert == "") != (p.TLSKey == "") {
			errs = append(errs, fmt.Errorf("proxies[%d]: tls_cert and tls_key go together", i))
		}
		if p.UpstreamUser == "" && (p.UpstreamPasswordEnv != "" || p.ClientPasswordEnv != "") {
			errs = append(errs, fmt.Errorf("proxies[%d]: upstream_password_env and client_password_env terminate authentication and need upstream_user", i))
		}
		if p.MaxConnections < 0 || p.MaxMessageSize < 0 {
			errs = append(errs, fmt.Errorf("proxies[%d]: max_connections and max_message_size must not be negative (0: the default)", i))
		}
		errs = append(errs, p.validateAuth(i)...)
	}
	errs = append(errs, c.Approvals.validate()...)
	if c.Identity.PodLabels != PodLabelsAuto && c.Identity.PodLabels != PodLabelsOff {
		errs = append(errs, fmt.Errorf("identity.pod_labels: %q: want auto or off", c.Identity.PodLabels))
	}
	if !strings.HasPrefix(c.Identity.HostRoot, "/") {
		errs = append(errs, fmt.Errorf("identity.host_root: %q: want an absolute path", c.Identity.HostRoot))
	}
	if c.SteerFail != SteerFailOpen && c.SteerFail != SteerFailClosed {
		errs = append(errs, fmt.Errorf("steer_fail: %q: want open or closed", c.SteerFail))
	}
	names := map[string]bool{}
	for i, sel := range c.Steer {
		n := 0
		for _, set := range []bool{sel.Cgroup != "", sel.Exe != "", sel.UID != nil, sel.Source != "", !sel.Workload.IsZero()} {
			if set {
				n++
			}
		}
		if n != 1 {
			errs = append(errs, fmt.Errorf("steer[%d]: give exactly one of cgroup, exe, uid, source, or workload fields (namespace, pod, service_account, labels, container_id, image) (got %d); list a selector per criterion", i, n))
		}
		if sel.Cgroup != "" && !strings.HasPrefix(sel.Cgroup, "/") {
			errs = append(errs, fmt.Errorf("steer[%d].cgroup: %q: want a path from the cgroup root, as in the 0:: line of /proc/PID/cgroup", i, sel.Cgroup))
		}
		if sel.Source != "" {
			if p, err := netip.ParsePrefix(sel.Source); err != nil || p.Addr().Unmap().IsLoopback() {
				errs = append(errs, fmt.Errorf("steer[%d].source: %q: want a network of remote clients such as 10.1.2.0/24 (loopback clients are local: select them by cgroup, exe or uid)", i, sel.Source))
			}
		}
		if sel.Exe != "" && !strings.HasPrefix(sel.Exe, "/") {
			errs = append(errs, fmt.Errorf("steer[%d].exe: %q: want an absolute path", i, sel.Exe))
		}
		for k := range sel.Workload.Labels {
			if k == "" {
				errs = append(errs, fmt.Errorf("steer[%d].labels: a label selector needs a label name", i))
			}
		}
		if names[sel.Name] {
			errs = append(errs, fmt.Errorf("steer[%d].name: %q is used twice", i, sel.Name))
		}
		names[sel.Name] = true
	}
	return errors.Join(errs...)
}

func (p *Proxy) validateAuth(i int) []error {
	var errs []error
	switch p.Auth {
	case "":
		if p.OIDC != nil {
			errs = append(errs, fmt.Errorf("proxies[%d].oidc: set auth: oidc to use it", i))
		}
		return errs
	case "oidc":
	default:
		return []error{fmt.Errorf("proxies[%d].auth: %q: want oidc (or leave it unset)", i, p.Auth)}
	}
	if p.UpstreamUser != "" || p.UpstreamPasswordEnv != "" || p.ClientPasswordEnv != "" {
		errs = append(errs, fmt.Errorf("proxies[%d]: auth: oidc maps people to upstream roles in oidc.roles; remove upstream_user, upstream_password_env and client_password_env", i))
	}
	o := p.OIDC
	if o == nil {
		return append(errs, fmt.Errorf("proxies[%d]: auth: oidc needs an oidc section (issuer, client_id, roles)", i))
	}
	if !strings.HasPrefix(o.Issuer, "https://") && !strings.HasPrefix(o.Issuer, "http://") {
		errs = append(errs, fmt.Errorf("proxies[%d].oidc.issuer: %q: want the issuer's URL", i, o.Issuer))
	}
	if o.ClientID == "" {
		errs = append(errs, fmt.Errorf("proxies[%d].oidc.client_id: required (the audience of the ID tokens)", i))
	}
	if len(o.Roles) == 0 {
		errs = append(errs, fmt.Errorf("proxies[%d].oidc.roles: at least one group → upstream user mapping is required", i))
	}
	for j, r := range o.Roles {
		if r.Group == "" || r.User == "" {
			errs = append(errs, fmt.Errorf("proxies[%d].oidc.roles[%d]: group and user are required", i, j))
		}
		if r.PasswordEnv != "" && r.PasswordFile != "" {
			errs = append(errs, fmt.Errorf("proxies[%d].oidc.roles[%d]: give password_env or password_file, not both", i, j))
		}
	}
	return errs
}

// ParseProxyFlag parses --proxy LISTEN=UPSTREAM.
func ParseProxyFlag(s string) (Proxy, error) {
	listen, upstream, ok := strings.Cut(s, "=")
	if !ok || listen == "" || upstream == "" {
		return Proxy{}, fmt.Errorf("--proxy %q: want LISTEN=UPSTREAM, e.g. 127.0.0.1:6432=127.0.0.1:5432", s)
	}
	return Proxy{Listen: listen, Upstream: upstream}, nil
}

func (a *Approvals) validate() []error {
	var errs []error
	seen := map[string]bool{}
	for i, w := range a.Webhooks {
		if w.Name == "" || strings.Trim(w.Name, "abcdefghijklmnopqrstuvwxyz0123456789-_") != "" {
			errs = append(errs, fmt.Errorf("approvals.webhooks[%d].name: %q: want lower-case letters, digits, - and _", i, w.Name))
		}
		if seen[w.Name] {
			errs = append(errs, fmt.Errorf("approvals.webhooks[%d].name: %q is used twice", i, w.Name))
		}
		seen[w.Name] = true
		if u, err := url.Parse(w.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			errs = append(errs, fmt.Errorf("approvals.webhooks[%d].url: want an http:// or https:// URL", i))
		}
		if w.SecretEnv == "" {
			errs = append(errs, fmt.Errorf("approvals.webhooks[%d].secret_env: required (the variable holding the HMAC secret)", i))
		}
	}
	if sl := a.Slack; sl != nil {
		if sl.Channel == "" {
			errs = append(errs, errors.New("approvals.slack.channel: required (the id of the channel requests are posted to)"))
		}
		if sl.BotTokenEnv == "" {
			errs = append(errs, errors.New("approvals.slack.bot_token_env: required (the variable holding the bot token)"))
		}
		if sl.SigningSecretEnv == "" {
			errs = append(errs, errors.New("approvals.slack.signing_secret_env: required (the variable holding the app's signing secret)"))
		}
		if len(sl.Users) == 0 {
			errs = append(errs, errors.New("approvals.slack.users: required (Slack user id → approver email; clicks by anyone else decide nothing)"))
		}
		errs = append(errs, approverEmails("approvals.slack.users", sl.Users)...)
		if sl.APIURL != "" {
			if u, err := url.Parse(sl.APIURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				errs = append(errs, fmt.Errorf("approvals.slack.api_url: %q: want an http:// or https:// URL", sl.APIURL))
			}
		}
	}
	if j := a.Jira; j != nil {
		if u, err := url.Parse(j.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			errs = append(errs, fmt.Errorf("approvals.jira.url: %q: want the site's http:// or https:// URL", j.URL))
		}
		for _, f := range []struct{ key, v string }{{"project", j.Project}, {"user", j.User}, {"token_env", j.TokenEnv}, {"webhook_secret_env", j.WebhookSecretEnv}} {
			if f.v == "" {
				errs = append(errs, fmt.Errorf("approvals.jira.%s: required", f.key))
			}
		}
		if j.IssueType == "" {
			j.IssueType = "Task"
		}
		if j.ApproveStatus == "" {
			j.ApproveStatus = "Approved"
		}
		if j.DenyStatus == "" {
			j.DenyStatus = "Rejected"
		}
		if strings.EqualFold(j.ApproveStatus, j.DenyStatus) {
			errs = append(errs, fmt.Errorf("approvals.jira: approve_status and deny_status are both %q", j.ApproveStatus))
		}
		if len(j.Users) == 0 {
			errs = append(errs, errors.New("approvals.jira.users: required (Jira account id → approver email; transitions by anyone else decide nothing)"))
		}
		errs = append(errs, approverEmails("approvals.jira.users", j.Users)...)
	}
	if (len(a.Webhooks) > 0 || a.Slack != nil || a.Jira != nil || a.Web != nil) && a.CallbackListen == "" {
		errs = append(errs, errors.New("approvals.callback_listen: required with webhooks, slack, jira or web (their decisions come back to it)"))
	}
	if a.CallbackURL != "" {
		if u, err := url.Parse(a.CallbackURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
			errs = append(errs, fmt.Errorf("approvals.callback_url: %q: want an http:// or https:// URL", a.CallbackURL))
		}
	}
	if a.Web != nil {
		errs = append(errs, a.Web.validate(a.CallbackBase())...)
	}
	return errs
}

// CallbackBase is the callback listener's URL as receivers and browsers reach it, without a
// trailing slash: callback_url, or http://<callback_listen>.
func (a *Approvals) CallbackBase() string {
	base := a.CallbackURL
	if base == "" {
		base = "http://" + a.CallbackListen
	}
	return strings.TrimSuffix(base, "/")
}

func (w *WebApprovals) validate(base string) []error {
	var errs []error
	if u, err := url.Parse(w.Issuer); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		errs = append(errs, fmt.Errorf("approvals.web.issuer: %q: want the identity provider's issuer URL", w.Issuer))
	}
	if w.ClientID == "" {
		errs = append(errs, errors.New("approvals.web.client_id: required (the OAuth client registered for the page)"))
	}
	if w.ClientSecretEnv == "" {
		errs = append(errs, errors.New("approvals.web.client_secret_env: required (the variable holding the client's secret)"))
	}
	if w.RedirectURL == "" {
		w.RedirectURL = base + "/approvals/callback"
	}
	if u, err := url.Parse(w.RedirectURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || !strings.HasSuffix(u.Path, "/approvals/callback") {
		errs = append(errs, fmt.Errorf("approvals.web.redirect_url: %q: want the callback listener's /approvals/callback as browsers reach it", w.RedirectURL))
	}
	if !slices.Contains(w.Scopes, "openid") {
		if len(w.Scopes) == 0 {
			w.Scopes = []string{"openid", "email"}
		} else {
			w.Scopes = append([]string{"openid"}, w.Scopes...)
		}
	}
	for i, s := range w.Scopes {
		if s == "" || strings.ContainsAny(s, " \t\r\n\"\\") {
			errs = append(errs, fmt.Errorf("approvals.web.scopes[%d]: %q: want a scope name", i, s))
		}
	}
	if w.GroupsClaim == "" {
		w.GroupsClaim = "groups"
	}
	return errs
}

// approverEmails checks a map from a channel's user ids to approvers' email addresses.
func approverEmails(path string, users map[string]string) []error {
	var errs []error
	for _, id := range slices.Sorted(maps.Keys(users)) {
		email := users[id]
		if at := strings.IndexByte(email, '@'); at <= 0 || at != strings.LastIndexByte(email, '@') || at == len(email)-1 || strings.ContainsAny(email, " \t\r\n:") {
			errs = append(errs, fmt.Errorf("%s.%s: %q: want the approver's email address", path, id, email))
		}
	}
	return errs
}
