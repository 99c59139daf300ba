package config

import (
	"os"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		name, yaml, wantErr string
	}{
		{"empty", "", ""},
		{"full", "agent_id: a1\nstore: local:/tmp/x\ncapture:\n  servers:\n    - ports: [5432]\n", ""},
		{"typo", "stor: local:/tmp\n", "line 1: field stor not found"},
		{"nested typo", "capture:\n  unix_socket: true\n", "line 2: field unix_socket not found"},
		{"bad store", "store: s3://x\n", "store: \"s3://x\""},
		{"bad redact", "audit:\n  redact: everything\n", "audit.redact"},
		{"server without ports", "capture:\n  servers:\n    - binary: /usr/bin/postgres\n", "capture.servers[0].ports"},
		{"bad type", "capture:\n  max_statement_bytes: lots\n", "line 2"},
		{"steer", "proxies: [{listen: 127.0.0.1:6432, upstream: 127.0.0.1:5432}]\nsteer:\n  - cgroup: /batch.slice\n  - {name: psql, exe: /usr/bin/psql}\n  - uid: 1000\n", ""},
		{"steer two criteria", "proxies: [{listen: a:1, upstream: b:2}]\nsteer:\n  - {cgroup: /x, uid: 0}\n", "steer[0]: give exactly one"},
		{"steer nothing", "proxies: [{listen: a:1, upstream: b:2}]\nsteer:\n  - name: x\n", "steer[0]: give exactly one"},
		{"steer relative cgroup", "proxies: [{listen: a:1, upstream: b:2}]\nsteer:\n  - cgroup: batch.slice\n", "steer[0].cgroup"},
		{"steer relative exe", "proxies: [{listen: a:1, upstream: b:2}]\nsteer:\n  - exe: psql\n", "steer[0].exe"},
		{"steer source", "steer:\n  - {name: office, source: 10.1.2.0/24}\n", ""},
		{"steer loopback source", "steer:\n  - source: 127.0.0.0/8\n", "steer[0].source"},
		{"steer_fail typo", "steer_fail: closd\n", "steer_fail: \"closd\": want open or closed"},
		{"steer unknown key", "steer:\n  - namespce: prod\n", "field namespce not found"},
		{"steer workload", "steer:\n  - {name: billing, namespace: payments, labels: {app: billing}}\n  - image: registry.example.com/etl:*\n", ""},
		{"steer workload and cgroup", "steer:\n  - {namespace: payments, cgroup: /x}\n", "steer[0]: give exactly one"},
		{"steer empty label", "steer:\n  - labels: {\"\": x}\n", "steer[0].labels"},
		{"identity", "identity: {host_root: /proc/1/root, pod_labels: off, node_name: node-1}\n", ""},
		{"identity pod_labels typo", "identity: {pod_labels: of}\n", "identity.pod_labels"},
		{"identity relative host_root", "identity: {host_root: host}\n", "identity.host_root"},
		{"export", "export:\n  shutdown_timeout: 3s\n", ""},
		{"keep across restarts off", "capture:\n  keep_across_restarts: false\n", ""},
		{"keep across restarts typo", "capture:\n  keep_accross_restarts: false\n", "line 2: field keep_accross_restarts not found"},
		{"keep across restarts not a bool", "capture:\n  keep_across_restarts: sometimes\n", "line 2"},
		{"oidc", "proxies:\n  - listen: a:1\n    upstream: b:2\n    auth: oidc\n    oidc:\n      issuer: https://id.example.com\n      client_id: vigil\n      clock_skew: 10s\n      roles:\n        - {group: dba, user: dba_role, password_env: DBA_PW}\n        - {group: '*', user: reader, password_file: /etc/vigil/reader.pw}\n", ""},
		{"proxy limits", "proxies: [{listen: a:1, upstream: b:2, max_connections: 50, max_message_size: 16777216}]\n", ""},
		{"proxy negative limit", "proxies: [{listen: a:1, upstream: b:2, max_connections: -1}]\n", "must not be negative"},
		{"oidc without section", "proxies: [{listen: a:1, upstream: b:2, auth: oidc}]\n", "needs an oidc section"},
		{"oidc section without auth", "proxies: [{listen: a:1, upstream: b:2, oidc: {issuer: https://x, client_id: c}}]\n", "set auth: oidc"},
		{"oidc bad auth", "proxies: [{listen: a:1, upstream: b:2, auth: ldap}]\n", "proxies[0].auth"},
		{"oidc no roles", "proxies: [{listen: a:1, upstream: b:2, auth: oidc, oidc: {issuer: https://x, client_id: c}}]\n", "oidc.roles: at least one"},
		{"oidc no client", "proxies: [{listen: a:1, upstream: b:2, auth: oidc, oidc: {issuer: https://x, roles: [{group: g, user: u}]}}]\n", "oidc.client_id"},
		{"oidc bad issuer", "proxies: [{listen: a:1, upstream: b:2, auth: oidc, oidc: {issuer: x.com, client_id: c, roles: [{group: g, user: u}]}}]\n", "oidc.issuer"},
		{"oidc two passwords", "proxies: [{listen: a:1, upstream: b:2, auth: oidc, oidc: {issuer: https://x, client_id: c, roles: [{group: g, user: u, password_env: A, password_file: /b}]}}]\n", "roles[0]: give password_env or password_file"},
		{"oidc and upstream_user", "proxies: [{listen: a:1, upstream: b:2, upstream_user: u, auth: oidc, oidc: {issuer: https://x, client_id: c, roles: [{group: g, user: u}]}}]\n", "remove upstream_user"},
		{"oidc unknown key", "proxies: [{listen: a:1, upstream: b:2, auth: oidc, oidc: {issuer: https://x, audience: c}}]\n", "field audience not found"},
		{"negative shutdown timeout", "export:\n  shutdown_timeout: -1s\n", "export.shutdown_timeout"},
		{"webhook", "approvals:\n  callback_listen: 127.0.0.1:9478\n  callback_url: https://vigil.example.com\n  webhooks:\n    - {name: ops, url: https://hooks.example.com/x, secret_env: S}\n", ""},
		{"webhook without callback_listen", "approvals:\n  webhooks:\n    - {name: ops, url: https://hooks.example.com/x, secret_env: S}\n", "approvals.callback_listen: required"},
		{"webhook without secret", "approvals:\n  callback_listen: :1\n  webhooks:\n    - {name: ops, url: https://hooks.example.com/x}\n", "approvals.webhooks[0].secret_env"},
		{"webhook bad url", "approvals:\n  callback_listen: :1\n  webhooks:\n    - {name: ops, url: hooks.example.com, secret_env: S}\n", "approvals.webhooks[0].url"},
		{"webhook bad name", "approvals:\n  callback_listen: :1\n  webhooks:\n    - {name: Ops Team, url: http://h/x, secret_env: S}\n", "approvals.webhooks[0].name"},
		{"slack", "approvals:\n  callback_listen: :1\n  slack: {channel: C123, bot_token_env: T, signing_secret_env: S, users: {U1: alice@example.com}}\n", ""},
		{"slack without callback_listen", "approvals:\n  slack: {channel: C123, bot_token_env: T, signing_secret_env: S, users: {U1: alice@example.com}}\n", "approvals.callback_listen: required"},
		{"slack without channel", "approvals:\n  callback_listen: :1\n  slack: {bot_token_env: T, signing_secret_env: S, users: {U1: alice@example.com}}\n", "approvals.slack.channel"},
		{"slack without token", "approvals:\n  callback_listen: :1\n  slack: {channel: C123, signing_secret_env: S, users: {U1: alice@example.com}}\n", "approvals.slack.bot_token_env"},
		{"slack without signing secret", "approvals:\n  callback_listen: :1\n  slack: {channel: C123, bot_token_env: T, users: {U1: alice@example.com}}\n", "approvals.slack.signing_secret_env"},
		{"slack without users", "approvals:\n  callback_listen: :1\n  slack: {channel: C123, bot_token_env: T, signing_secret_env: S}\n", "approvals.slack.users: required"},
		{"slack user not an email", "approvals:\n  callback_listen: :1\n  slack: {channel: C123, bot_token_env: T, signing_secret_env: S, users: {U1: \"os:root\"}}\n", "approvals.slack.users.U1: \"os:root\""},
		{"slack bad api_url", "approvals:\n  callback_listen: :1\n  slack: {channel: C123, bot_token_env: T, signing_secret_env: S, users: {U1: a@b.c}, api_url: slack.com}\n", "approvals.slack.api_url"},
		{"jira", "approvals:\n  callback_listen: :1\n  jira: {url: https://x.atlassian.net, project: OPS, user: bot@x.com, token_env: T, webhook_secret_env: S, users: {acc-1: alice@example.com}}\n", ""},
		{"jira without project", "approvals:\n  callback_listen: :1\n  jira: {url: https://x.atlassian.net, user: bot@x.com, token_env: T, webhook_secret_env: S, users: {acc-1: alice@example.com}}\n", "approvals.jira.project: required"},
		{"jira bad url", "approvals:\n  callback_listen: :1\n  jira: {url: x.atlassian.net, project: OPS, user: bot@x.com, token_env: T, webhook_secret_env: S, users: {acc-1: alice@example.com}}\n", "approvals.jira.url"},
		{"jira same statuses", "approvals:\n  callback_listen: :1\n  jira: {url: https://x.atlassian.net, project: OPS, user: bot@x.com, token_env: T, webhook_secret_env: S, users: {acc-1: a@b.c}, approve_status: Done, deny_status: done}\n", "both \"Done\""},
		{"jira user not an email", "approvals:\n  callback_listen: :1\n  jira: {url: https://x.atlassian.net, project: OPS, user: bot@x.com, token_env: T, webhook_secret_env: S, users: {acc-1: bob}}\n", "approvals.jira.users.acc-1"},
		{"jira without callback_listen", "approvals:\n  jira: {url: https://x.atlassian.net, project: OPS, user: bot@x.com, token_env: T, webhook_secret_env: S, users: {acc-1: a@b.c}}\n", "approvals.callback_listen: required"},
		{"web", "approvals:\n  callback_listen: :1\n  web: {issuer: https://idp.example.com, client_id: vigil, client_secret_env: S}\n", ""},
		{"web without callback_listen", "approvals:\n  web: {issuer: https://idp.example.com, client_id: vigil, client_secret_env: S}\n", "approvals.callback_listen: required"},
		{"web bad issuer", "approvals:\n  callback_listen: :1\n  web: {issuer: idp.example.com, client_id: vigil, client_secret_env: S}\n", "approvals.web.issuer"},
		{"web without client_id", "approvals:\n  callback_listen: :1\n  web: {issuer: https://idp.example.com, client_secret_env: S}\n", "approvals.web.client_id: required"},
		{"web without secret", "approvals:\n  callback_listen: :1\n  web: {issuer: https://idp.example.com, client_id: vigil}\n", "approvals.web.client_secret_env: required"},
		{"web redirect elsewhere", "approvals:\n  callback_listen: :1\n  web: {issuer: https://idp.example.com, client_id: vigil, client_secret_env: S, redirect_url: https://x/cb}\n", "approvals.web.redirect_url"},
		{"web bad scope", "approvals:\n  callback_listen: :1\n  web: {issuer: https://idp.example.com, client_id: vigil, client_secret_env: S, scopes: [\"a b\"]}\n", "approvals.web.scopes[1]"},
		{"webhook twice", "approvals:\n  callback_listen: :1\n  webhooks:\n    - {name: a, url: http://h/x, secret_env: S}\n    - {name: a, url: http://h/y, secret_env: S}\n", "approvals.webhooks[1].name: \"a\" is used twice"},
		{"bad callback_url", "approvals:\n  callback_url: vigil.example.com\n", "approvals.callback_url"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse([]byte(tc.yaml), "vigil.yaml")
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				if c.Capture.MaxStatementBytes != 1<<20 || !*c.Capture.Enabled {
					t.Fatalf("defaults not applied: %+v", c.Capture)
				}
				if want := !strings.Contains(tc.yaml, "keep_across_restarts: false"); *c.Capture.KeepAcrossRestarts != want {
					t.Fatalf("capture.keep_across_restarts %v, want %v", *c.Capture.KeepAcrossRestarts, want)
				}
				if c.Export.ShutdownTimeout <= 0 {
					t.Fatalf("export.shutdown_timeout %v", c.Export.ShutdownTimeout)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !strings.HasPrefix(err.Error(), "vigil.yaml") {
				t.Fatalf("error = %v, want one naming the file and containing %q", err, tc.wantErr)
			}
		})
	}
}

func TestParseProxyFlag(t *testing.T) {
	p, err := ParseProxyFlag("127.0.0.1:6432=127.0.0.1:5432")
	if err != nil || p.Listen != "127.0.0.1:6432" || p.Upstream != "127.0.0.1:5432" {
		t.Fatalf("got %+v, %v", p, err)
	}
	for _, bad := range []string{"", "x", "=y", "x="} {
		if _, err := ParseProxyFlag(bad); err == nil {
			t.Errorf("ParseProxyFlag(%q): want error", bad)
		}
	}
}

// TestDaemonSetConfig: the configuration the shipped DaemonSet gives its agents loads.
func TestDaemonSetConfig(t *testing.T) {
	f, err := os.Open("../../deploy/kubernetes/daemonset.yaml")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dec := yaml.NewDecoder(f)
	for {
		var doc struct {
			Kind string            `yaml:"kind"`
			Data map[string]string `yaml:"data"`
		}
		if err := dec.Decode(&doc); err != nil {
			t.Fatalf("no ConfigMap with vigil.yaml in the DaemonSet's manifest: %v", err)
		}
		if doc.Kind != "ConfigMap" || doc.Data["vigil.yaml"] == "" {
			continue
		}
		c, err := Parse([]byte(doc.Data["vigil.yaml"]), "daemonset.yaml vigil.yaml")
		if err != nil {
			t.Fatal(err)
		}
		if c.Identity.HostRoot != "/proc/1/root" {
			t.Errorf("identity.host_root %q: the agent in its pod would read its own root for pods' identities", c.Identity.HostRoot)
		}
		return
	}
}
