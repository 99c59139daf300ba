// Package testch starts throwaway ClickHouse servers from Debian's clickhouse-server (18.16)
// for tests: a temp directory for data and logs, free loopback ports, a generated config (no
// file under /etc is touched or needed at run time). A server can be killed and restarted on
// the same data directory and port, which outage tests need. Stop removes everything; a
// test process killed before it stopped them takes its servers with it.
// StartCluster starts a replicated cluster: two or more servers as replicas of one shard,
// coordinated by a standalone ZooKeeper from Debian's zookeeper package.
package testch

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vigil-db/vigil/internal/testproc"
)

// ServerBin is where Debian installs the server.
const ServerBin = "/usr/sbin/clickhouse-server"

// ClientBin is where Debian installs the command-line client.
const ClientBin = "/usr/bin/clickhouse-client"

// Users the generated users.xml defines besides "default" (no password, all rights).
const (
	// ReadOnlyUser may read but not write or create (readonly=1 profile).
	ReadOnlyUser     = "vigil_ro"
	ReadOnlyPassword = "ro-Pa55"
)

// Cluster is the name of the one-shard, one-replica cluster in the config (this server
// itself), so Distributed tables can be exercised without ZooKeeper.
const Cluster = "vigil_test"

// Server is a running (or killed) throwaway ClickHouse.
type Server struct {
	Dir      string // root temp dir: config, data, logs
	Host     string
	Port     int // native protocol
	HTTPPort int

	mu   sync.Mutex
	proc *testproc.Proc // while running

	repl *replica // set for a member of a StartCluster cluster
}

// replica is what a cluster member's config adds: its macros, its peers and ZooKeeper.
type replica struct {
	name           string
	interserver    int
	zooKeeperPort  int
	peers          []*Server // every replica, this one included
	clusterReplica string    // ClusterReplicated
}

// Start starts a server and registers its shutdown with t.Cleanup. It fails the test when
// ClickHouse cannot be started: a missing server is a broken setup, not a reason to skip.
func Start(t testing.TB) *Server {
	t.Helper()
	s, err := StartServer()
	if err != nil {
		t.Fatalf("starting ClickHouse: %v", err)
	}
	t.Cleanup(s.Stop)
	return s
}

// StartServer starts a server outside of a test (benchmarks). Call Stop.
func StartServer() (*Server, error) {
	s, err := newServer()
	if err != nil {
		return nil, err
	}
	if err := s.start(); err != nil {
		return nil, err
	}
	return s, nil
}

// newServer makes the directories and picks the ports of a server, without starting it.
func newServer() (*Server, error) {
	if _, err := os.Stat(ServerBin); err != nil {
		return nil, fmt.Errorf("clickhouse-server not installed (apt-get install clickhouse-server clickhouse-client): %w", err)
	}
	root, err := os.MkdirTemp("", "vigil-ch-")
	if err != nil {
		return nil, err
	}
	s := &Server{Dir: root, Host: "127.0.0.1"}
	if s.Port, err = FreePort(); err != nil {
		os.RemoveAll(root)
		return nil, err
	}
	if s.HTTPPort, err = FreePort(); err != nil {
		os.RemoveAll(root)
		return nil, err
	}
	for _, d := range []string{"data", "tmp", "user_files", "format_schemas"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			os.RemoveAll(root)
			return nil, err
		}
	}
	return s, nil
}

// start writes the config and starts the server; on failure it removes the directory.
func (s *Server) start() error {
	err := os.WriteFile(filepath.Join(s.Dir, "config.xml"), []byte(s.config()), 0o644)
	if err == nil {
		err = os.WriteFile(filepath.Join(s.Dir, "users.xml"), []byte(usersXML), 0o644)
	}
	if err == nil {
		err = s.Restart()
	}
	if err != nil {
		os.RemoveAll(s.Dir)
	}
	return err
}

// Restart starts the server process on the existing data directory and ports and waits
// until it answers queries.
func (s *Server) Restart() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc != nil {
		return errors.New("testch: server already running")
	}
	logf, err := os.OpenFile(filepath.Join(s.Dir, "stdout.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.Command(ServerBin, "--config-file="+filepath.Join(s.Dir, "config.xml"))
	cmd.Dir = s.Dir
	cmd.Stdout, cmd.Stderr = logf, logf
	// Own process group: a test's SIGINT must not reach the server before Stop does.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	proc, err := testproc.Start(cmd) // dies with the test process, killed or not
	logf.Close()
	if err != nil {
		return err
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		select {
		case <-proc.Done():
			return fmt.Errorf("clickhouse-server exited during start-up: %v\n%s", proc.Err(), s.tailLog())
		default:
		}
		if _, err := s.query("SELECT 1"); err == nil {
			s.proc = proc
			return nil
		}
		if time.Now().After(deadline) {
			_ = proc.Signal(syscall.SIGKILL)
			<-proc.Done()
			return fmt.Errorf("clickhouse-server did not answer on port %d within 60s\n%s", s.Port, s.tailLog())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Kill ends the server with SIGKILL (no clean shutdown) and waits until its port is closed.
// Data stays; Restart brings it back.
func (s *Server) Kill() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc == nil {
		return
	}
	_ = syscall.Kill(-s.proc.Pid, syscall.SIGKILL)
	<-s.proc.Done()
	s.proc = nil
	for i := 0; i < 200; i++ {
		c, err := net.DialTimeout("tcp", s.Addr(), 100*time.Millisecond)
		if err != nil {
			return
		}
		c.Close()
		time.Sleep(50 * time.Millisecond)
	}
}

// Stop kills the server and removes its files.
func (s *Server) Stop() {
	s.Kill()
	_ = os.RemoveAll(s.Dir)
}

// Addr is host:port of the native protocol.
func (s *Server) Addr() string { return net.JoinHostPort(s.Host, strconv.Itoa(s.Port)) }

// DSN is a clickhouse:// URL for the default user and database db.
func (s *Server) DSN(db string) string {
	return fmt.Sprintf("clickhouse://default@%s/%s", s.Addr(), db)
}

// Query runs sql with clickhouse-client as the default user and returns its TSV output.
func (s *Server) Query(sql string) (string, error) { return s.query(sql) }

func (s *Server) query(sql string) (string, error) {
	cmd := exec.Command(ClientBin, "--host", s.Host, "--port", strconv.Itoa(s.Port), "--query", sql)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("clickhouse-client %q: %v: %s", sql, err, out)
	}
	return strings.TrimSpace(string(out)), nil
}

func (s *Server) tailLog() string {
	b, _ := os.ReadFile(filepath.Join(s.Dir, "stdout.log"))
	e, _ := os.ReadFile(filepath.Join(s.Dir, "server.err.log"))
	b = append(b, e...)
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// FreePort returns a loopback TCP port that was free a moment ago.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// config is a minimal server config: small caches (the machine is shared), UTC, and a
// one-node cluster pointing at this server.
func (s *Server) config() string {
	return fmt.Sprintf(`<?xml version="1.0"?>
<yandex>
  <logger><level>warning</level><log>%[1]s/server.log</log><errorlog>%[1]s/server.err.log</errorlog><size>10M</size><count>1</count></logger>
  <tcp_port>%[2]d</tcp_port>
  <http_port>%[3]d</http_port>
  <listen_host>127.0.0.1</listen_host>
  <max_connections>128</max_connections>
  <max_concurrent_queries>64</max_concurrent_queries>
  <uncompressed_cache_size>67108864</uncompressed_cache_size>
  <mark_cache_size>67108864</mark_cache_size>
  <path>%[1]s/data/</path>
  <tmp_path>%[1]s/tmp/</tmp_path>
  <user_files_path>%[1]s/user_files/</user_files_path>
  <format_schema_path>%[1]s/format_schemas/</format_schema_path>
  <users_config>users.xml</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <timezone>UTC</timezone>
  <mlock_executable>false</mlock_executable>
  <remote_servers>
    <%[4]s><shard><replica><host>127.0.0.1</host><port>%[2]d</port></replica></shard></%[4]s>%[5]s
  </remote_servers>%[6]s
</yandex>
`, s.Dir, s.Port, s.HTTPPort, Cluster, s.replicatedCluster(), s.replicaConfig())
}

// replicatedCluster is the ClusterReplicated entry of remote_servers: one shard whose
// replicas are the cluster's servers. internal_replication: an insert through a
// Distributed table goes to one replica, and ReplicatedMergeTree copies it to the others.
func (s *Server) replicatedCluster() string {
	if s.repl == nil {
		return ""
	}
	var b strings.Builder
	fmt.Fprintf(&b, "\n    <%s><shard><internal_replication>true</internal_replication>", s.repl.clusterReplica)
	for _, p := range s.repl.peers {
		fmt.Fprintf(&b, "<replica><host>127.0.0.1</host><port>%d</port></replica>", p.Port)
	}
	fmt.Fprintf(&b, "</shard></%s>", s.repl.clusterReplica)
	return b.String()
}

// replicaConfig: ZooKeeper, the macros the replicated tables' paths use, the distributed
// DDL queue (ON CLUSTER), and the interserver port replicas fetch parts from each other on.
func (s *Server) replicaConfig() string {
	if s.repl == nil {
		return ""
	}
	return fmt.Sprintf(`
  <interserver_http_port>%d</interserver_http_port>
  <interserver_http_host>127.0.0.1</interserver_http_host>
  <zookeeper><node><host>127.0.0.1</host><port>%d</port></node><session_timeout_ms>4000</session_timeout_ms></zookeeper>
  <macros><shard>01</shard><replica>%s</replica></macros>
  <distributed_ddl><path>/clickhouse/task_queue/ddl</path></distributed_ddl>`, s.repl.interserver, s.repl.zooKeeperPort, s.repl.name)
}

const usersXML = `<?xml version="1.0"?>
<yandex>
  <profiles>
    <default><max_memory_usage>2000000000</max_memory_usage></default>
    <readonly><readonly>1</readonly></readonly>
  </profiles>
  <users>
    <default><password></password><networks><ip>127.0.0.1</ip><ip>::1</ip></networks><profile>default</profile><quota>default</quota></default>
    <` + ReadOnlyUser + `><password>` + ReadOnlyPassword + `</password><networks><ip>127.0.0.1</ip><ip>::1</ip></networks><profile>readonly</profile><quota>default</quota></` + ReadOnlyUser + `>
  </users>
  <quotas><default><interval><duration>3600</duration><queries>0</queries><errors>0</errors><result_rows>0</result_rows><read_rows>0</read_rows><execution_time>0</execution_time></interval></default></quotas>
</yandex>
`
