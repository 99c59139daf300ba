package testch

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vigil-db/vigil/internal/testproc"
)

// ZooKeeperJar is where Debian's zookeeper package installs the server (3.8); its
// manifest names the libraries it needs.
const ZooKeeperJar = "/usr/share/java/zookeeper.jar"

// ClusterReplicated is the name, in every cluster member's remote_servers, of the one
// shard whose replicas are the members.
const ClusterReplicated = "vigil_replicated"

// ZooKeeper is a standalone ZooKeeper run from ZooKeeperJar in a temp directory.
type ZooKeeper struct {
	Dir  string
	Port int
	proc *testproc.Proc
}

// Replicated is a one-shard cluster of replicas and the ZooKeeper they share.
type Replicated struct {
	ZooKeeper *ZooKeeper
	Replicas  []*Server
}

// StartCluster starts ZooKeeper and n ClickHouse servers configured as the n replicas of
// one shard of ClusterReplicated (macros shard=01, replica=r1..rn), and registers the
// shutdown of every process with t.Cleanup, so a failing test leaves none behind.
func StartCluster(t testing.TB, n int) *Replicated {
	t.Helper()
	zk, err := StartZooKeeper()
	if err != nil {
		t.Fatalf("starting ZooKeeper: %v", err)
	}
	t.Cleanup(zk.Stop)
	c := &Replicated{ZooKeeper: zk}
	for i := 0; i < n; i++ {
		s, err := newServer()
		if err != nil {
			t.Fatalf("preparing ClickHouse replica %d: %v", i+1, err)
		}
		t.Cleanup(s.Stop)
		s.repl = &replica{name: fmt.Sprintf("r%d", i+1), zooKeeperPort: zk.Port, clusterReplica: ClusterReplicated}
		if s.repl.interserver, err = FreePort(); err != nil {
			t.Fatal(err)
		}
		c.Replicas = append(c.Replicas, s)
	}
	for _, s := range c.Replicas {
		s.repl.peers = c.Replicas
	}
	for i, s := range c.Replicas {
		if err := s.start(); err != nil {
			t.Fatalf("starting ClickHouse replica %d: %v", i+1, err)
		}
	}
	return c
}

// Addrs is the replicas' host:port list, for a store URL (host1:port1,host2:port2).
func (c *Replicated) Addrs() string {
	var a []string
	for _, s := range c.Replicas {
		a = append(a, s.Addr())
	}
	return strings.Join(a, ",")
}

// StartZooKeeper starts a standalone ZooKeeper on a free loopback port. Call Stop.
func StartZooKeeper() (*ZooKeeper, error) {
	java, err := exec.LookPath("java")
	if err != nil {
		return nil, fmt.Errorf("java not found (apt-get install zookeeper pulls in a JRE): %w", err)
	}
	if _, err := os.Stat(ZooKeeperJar); err != nil {
		return nil, fmt.Errorf("ZooKeeper not installed (apt-get install zookeeper): %w", err)
	}
	dir, err := os.MkdirTemp("", "vigil-zk-")
	if err != nil {
		return nil, err
	}
	z := &ZooKeeper{Dir: dir}
	if z.Port, err = FreePort(); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	// A short tick: sessions of a killed ClickHouse expire in seconds, not the minute a
	// production tick allows.
	cfg := fmt.Sprintf("tickTime=500\ndataDir=%s/data\nclientPort=%d\nclientPortAddress=127.0.0.1\nadmin.enableServer=false\nmaxClientCnxns=0\n", dir, z.Port)
	if err := os.WriteFile(filepath.Join(dir, "zoo.cfg"), []byte(cfg), 0o644); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	logf, err := os.Create(filepath.Join(dir, "zookeeper.log"))
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	defer logf.Close()
	cmd := exec.Command(java, "-Xmx128m", "-XX:+UseSerialGC", "-cp", ZooKeeperJar,
		"org.apache.zookeeper.server.ZooKeeperServerMain", filepath.Join(dir, "zoo.cfg"))
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if z.proc, err = testproc.Start(cmd); err != nil { // dies with the test process
		os.RemoveAll(dir)
		return nil, fmt.Errorf("starting ZooKeeper: %w", err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case <-z.proc.Done():
			b, _ := os.ReadFile(filepath.Join(dir, "zookeeper.log"))
			os.RemoveAll(dir)
			return nil, fmt.Errorf("ZooKeeper exited during start-up: %v\n%s", z.proc.Err(), b)
		default:
		}
		if mode, err := z.mode(); err == nil && mode == "standalone" {
			return z, nil
		}
		if time.Now().After(deadline) {
			z.Stop()
			return nil, errors.New("ZooKeeper did not answer within 30s")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// mode asks the server with the srvr four-letter command (allowed by default).
func (z *ZooKeeper) mode() (string, error) {
	c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(z.Port)), time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Write([]byte("srvr")); err != nil {
		return "", err
	}
	sc := bufio.NewScanner(c)
	for sc.Scan() {
		if m, ok := strings.CutPrefix(sc.Text(), "Mode: "); ok {
			return m, nil
		}
	}
	return "", fmt.Errorf("no mode in srvr answer: %v", sc.Err())
}

// Stop kills ZooKeeper's process group and removes its files.
func (z *ZooKeeper) Stop() {
	if z.proc != nil {
		_ = syscall.Kill(-z.proc.Pid, syscall.SIGKILL)
		<-z.proc.Done()
		z.proc = nil
	}
	_ = os.RemoveAll(z.Dir)
}
