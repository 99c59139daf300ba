package discover

import (
	"net/netip"
	"testing"
)

// Titles as PostgreSQL 9.6–17 write them (ps_status.c, BackendInitialize).
func TestParseTitle(t *testing.T) {
	ap := netip.MustParseAddrPort
	tests := []struct {
		name, title, cluster string
		known                bool
		want                 Backend
		ok                   bool
	}{
		{"tcp idle", "postgres: alice shop 10.1.2.3(51234) idle", "", true,
			Backend{User: "alice", Database: "shop", ClientAddr: ap("10.1.2.3:51234"), ClientHost: "10.1.2.3", ClientPort: 51234, State: "idle"}, true},
		{"trailing padding", "postgres: alice shop 10.1.2.3(51234) SELECT   ", "", true,
			Backend{User: "alice", Database: "shop", ClientAddr: ap("10.1.2.3:51234"), ClientHost: "10.1.2.3", ClientPort: 51234, State: "SELECT"}, true},
		{"unix socket", "postgres: postgres postgres [local] idle in transaction", "", true,
			Backend{User: "postgres", Database: "postgres", ClientHost: "[local]", Local: true, State: "idle in transaction"}, true},
		{"ipv6 loopback", "postgres: app db ::1(58352) idle in transaction (aborted)", "", true,
			Backend{User: "app", Database: "db", ClientAddr: ap("[::1]:58352"), ClientHost: "::1", ClientPort: 58352, State: "idle in transaction (aborted)"}, true},
		{"ipv6 with zone", "postgres: app db fe80::1%eth0(40000) idle", "", true,
			Backend{User: "app", Database: "db", ClientAddr: ap("[fe80::1%eth0]:40000"), ClientHost: "fe80::1%eth0", ClientPort: 40000, State: "idle"}, true},
		{"v4-mapped", "postgres: app db ::ffff:10.0.0.7(40000) idle", "", true,
			Backend{User: "app", Database: "db", ClientAddr: ap("10.0.0.7:40000"), ClientHost: "::ffff:10.0.0.7", ClientPort: 40000, State: "idle"}, true},
		{"log_hostname", "postgres: app db web-1.example.internal(40000) UPDATE waiting", "", true,
			Backend{User: "app", Database: "db", ClientHost: "web-1.example.internal", ClientPort: 40000, State: "UPDATE waiting"}, true},
		{"authenticating, no state yet", "postgres: app db 127.0.0.1(40000)", "", true,
			Backend{User: "app", Database: "db", ClientAddr: ap("127.0.0.1:40000"), ClientHost: "127.0.0.1", ClientPort: 40000}, true},
		{"debian cluster name, known", "postgres: 15/main: app db [local] idle", "15/main: ", true,
			Backend{User: "app", Database: "db", ClientHost: "[local]", Local: true, State: "idle"}, true},
		{"cluster name with a space, known", "postgres: vigil test: app db 127.0.0.1(1) idle", "vigil test: ", true,
			Backend{User: "app", Database: "db", ClientAddr: ap("127.0.0.1:1"), ClientHost: "127.0.0.1", ClientPort: 1, State: "idle"}, true},
		{"cluster name, unknown", "postgres: vigil test: app db 127.0.0.1(1) idle", "", false,
			Backend{User: "app", Database: "db", ClientAddr: ap("127.0.0.1:1"), ClientHost: "127.0.0.1", ClientPort: 1, State: "idle"}, true},
		{"database with a space", "postgres: app my shop [local] idle", "", true,
			Backend{User: "app", Database: "my shop", ClientHost: "[local]", Local: true, State: "idle"}, true},
		{"physical walsender", "postgres: walsender repl 10.0.0.9(41000) streaming 0/3000148", "", true,
			Backend{User: "repl", ClientAddr: ap("10.0.0.9:41000"), ClientHost: "10.0.0.9", ClientPort: 41000, Replication: true, State: "streaming 0/3000148"}, true},
		{"logical walsender", "postgres: 15/main: walsender repl shop 10.0.0.9(41000) idle", "15/main: ", true,
			Backend{User: "repl", Database: "shop", ClientAddr: ap("10.0.0.9:41000"), ClientHost: "10.0.0.9", ClientPort: 41000, Replication: true, State: "idle"}, true},
		{"9.x walsender", "postgres: wal sender process repl 10.0.0.9(41000) streaming 0/3000148", "", true,
			Backend{User: "repl", ClientAddr: ap("10.0.0.9:41000"), ClientHost: "10.0.0.9", ClientPort: 41000, Replication: true, State: "streaming 0/3000148"}, true},
		{"checkpointer", "postgres: checkpointer ", "", true, Backend{}, false},
		{"checkpointer with cluster", "postgres: 15/main: checkpointer", "15/main: ", true, Backend{}, false},
		{"autovacuum worker", "postgres: autovacuum worker shop", "", true, Backend{}, false},
		{"parallel worker", "postgres: parallel worker for PID 4242", "", true, Backend{}, false},
		{"logical replication worker", "postgres: logical replication worker for subscription 16399", "", true, Backend{}, false},
		{"fresh child with the postmaster's cmdline", "/usr/lib/postgresql/15/bin/postgres", "", true, Backend{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := parseTitle(tt.title, tt.cluster, tt.known)
			if ok != tt.ok || got != tt.want {
				t.Errorf("parseTitle(%q) = %+v, %v\nwant %+v, %v", tt.title, got, ok, tt.want, tt.ok)
			}
		})
	}
}

func TestClusterPrefix(t *testing.T) {
	tests := []struct {
		title, want string
		ok          bool
	}{
		{"postgres: checkpointer", "", true},
		{"postgres: 15/main: background writer", "15/main: ", true},
		{"postgres: vigil test: logical replication launcher", "vigil test: ", true},
		{"postgres: app db [local] idle", "", false},
		{"postgres: app checkpointer 127.0.0.1(5) idle", "", false},
	}
	for _, tt := range tests {
		got, ok := clusterPrefix(tt.title)
		if got != tt.want || ok != tt.ok {
			t.Errorf("clusterPrefix(%q) = %q, %v; want %q, %v", tt.title, got, ok, tt.want, tt.ok)
		}
	}
}

// A client chooses its user and database names; the client address is the server's part.
func TestParseTitleSpoofedNames(t *testing.T) {
	got, ok := parseTitle("postgres: evil 10.9.9.9(1) shop 127.0.0.1(40000) idle", "", true)
	if !ok || got.ClientAddr != netip.MustParseAddrPort("127.0.0.1:40000") || got.State != "idle" {
		t.Errorf("spoofed address in the user name: %+v", got)
	}
	got, ok = parseTitle("postgres: x [local] y [local] idle", "", true)
	if !ok || !got.Local || got.User != "x" || got.Database != "[local] y" {
		t.Errorf("spoofed [local]: %+v", got)
	}
	got, ok = parseTitle("postgres: x 10.9.9.9(1) [local] SELECT", "", true)
	if !ok || !got.Local || got.ClientAddr.IsValid() {
		t.Errorf("spoofed address on a Unix-socket connection: %+v", got)
	}
}

func FuzzParseTitle(f *testing.F) {
	f.Add("postgres: alice shop 10.1.2.3(51234) idle", "", true)
	f.Add("postgres: 15/main: walsender repl ::1(41000) streaming 0/3000148", "15/main: ", true)
	f.Add("postgres: a: b c [local] idle in transaction (aborted)", "", false)
	f.Fuzz(func(t *testing.T, title, cluster string, known bool) {
		b, ok := parseTitle(title, cluster, known)
		if !ok {
			return
		}
		if b.User == "" || b.ClientHost == "" || (b.Local && (b.ClientPort != 0 || b.ClientAddr.IsValid())) {
			t.Errorf("parseTitle(%q) = %+v", title, b)
		}
		if b.ClientAddr.IsValid() && b.ClientAddr.Port() != b.ClientPort {
			t.Errorf("parseTitle(%q): address %s, port %d", title, b.ClientAddr, b.ClientPort)
		}
	})
}
