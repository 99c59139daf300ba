package testch

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestKillRestartKeepsData(t *testing.T) {
	s := Start(t)
	steps := []struct{ sql, want string }{
		{"SELECT version()", "18.16"},
		{"CREATE TABLE default.t (x UInt8) ENGINE = MergeTree() ORDER BY x", ""},
		{"INSERT INTO default.t (x) VALUES (7)", ""},
	}
	for _, st := range steps {
		out, err := s.Query(st.sql)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(out, st.want) {
			t.Fatalf("%s = %q, want prefix %q", st.sql, out, st.want)
		}
	}
	s.Kill()
	if _, err := s.Query("SELECT 1"); err == nil {
		t.Fatal("killed server still answers")
	}
	if err := s.Restart(); err != nil {
		t.Fatal(err)
	}
	if out, err := s.Query("SELECT sum(x) FROM default.t"); err != nil || out != "7" {
		t.Fatalf("after restart: %q %v", out, err)
	}
}

// TestClusterReplicates: ON CLUSTER DDL runs on every replica through ZooKeeper's queue,
// and a row inserted on one replica reaches the other.
func TestClusterReplicates(t *testing.T) {
	c := StartCluster(t, 2)
	r1, r2 := c.Replicas[0], c.Replicas[1]
	for _, sql := range []string{
		"CREATE DATABASE IF NOT EXISTS d ON CLUSTER " + ClusterReplicated,
		"CREATE TABLE d.t ON CLUSTER " + ClusterReplicated + " (x UInt8) ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/d/t', '{replica}') ORDER BY x",
		"INSERT INTO d.t (x) VALUES (7)",
	} {
		if out, err := r1.Query(sql); err != nil {
			t.Fatalf("%s: %v %s", sql, err, out)
		}
	}
	if _, err := r2.Query("SYSTEM SYNC REPLICA d.t"); err != nil {
		t.Fatal(err)
	}
	if out, err := r2.Query("SELECT sum(x) FROM d.t"); err != nil || out != "7" {
		t.Fatalf("on the second replica: %q %v", out, err)
	}
}

// The main goroutine keeps the main thread: a goroutine that exits locked to the main
// thread leaves it wedged rather than ended, and TestOutlivesStartingThread needs its
// starting thread to end.
func init() { runtime.LockOSThread() }

// TestOutlivesStartingThread: the servers live as long as the test process, not as long
// as the OS thread that happened to start them (the parent-death signal that ends them with
// the process is sent when that thread exits; a goroutine that exits locked to its thread
// ends the thread).
func TestOutlivesStartingThread(t *testing.T) {
	type started struct {
		ch  *Server
		zk  *ZooKeeper
		err error
	}
	res := make(chan started, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with the goroutine
		zk, err := StartZooKeeper()
		if err != nil {
			res <- started{err: err}
			return
		}
		ch, err := StartServer()
		res <- started{ch, zk, err}
	}()
	r := <-res
	if r.zk != nil {
		t.Cleanup(r.zk.Stop)
	}
	if r.err != nil {
		t.Fatal(r.err)
	}
	t.Cleanup(r.ch.Stop)
	time.Sleep(500 * time.Millisecond)
	if _, err := r.ch.Query("SELECT 1"); err != nil {
		t.Errorf("ClickHouse died with the thread that started it: %v", err)
	}
	if _, err := r.zk.mode(); err != nil {
		t.Errorf("ZooKeeper died with the thread that started it: %v", err)
	}
}

// helperEnv makes the test binary, re-executed, start ZooKeeper and a ClickHouse server,
// print their pids and wait to be killed: a fuzz worker the fuzzing engine kills.
const helperEnv = "TESTCH_HELPER"

// TestDiesWithParent: a process killed with SIGKILL, which runs no cleanup, takes its
// servers with it.
func TestDiesWithParent(t *testing.T) {
	if os.Getenv(helperEnv) == "1" {
		zk, err := StartZooKeeper()
		if err != nil {
			fmt.Println("error:", err)
			os.Exit(1)
		}
		ch, err := StartServer()
		if err != nil {
			fmt.Println("error:", err)
			os.Exit(1)
		}
		fmt.Printf("servers %d %d %s %s\n", zk.proc.Pid, ch.proc.Pid, zk.Dir, ch.Dir)
		time.Sleep(time.Minute)
		os.Exit(1)
	}
	helper := exec.Command(os.Args[0], "-test.run=^TestDiesWithParent$", "-test.count=1")
	helper.Env = append(os.Environ(), helperEnv+"=1")
	helper.Stderr = os.Stderr
	out, err := helper.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := helper.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = helper.Wait() }()
	var zkPid, chPid int
	var zkDir, chDir string
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		if _, err := fmt.Sscanf(sc.Text(), "servers %d %d %s %s", &zkPid, &chPid, &zkDir, &chDir); err == nil {
			break
		}
		t.Log(sc.Text())
	}
	if chPid == 0 {
		_ = helper.Process.Kill()
		t.Fatal("the helper printed no servers")
	}
	t.Cleanup(func() {
		// Whatever survived (the test failed): not left to run on the host.
		_ = syscall.Kill(-zkPid, syscall.SIGKILL)
		_ = syscall.Kill(-chPid, syscall.SIGKILL)
		_ = os.RemoveAll(zkDir)
		_ = os.RemoveAll(chDir)
	})
	if err := helper.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for alive(zkPid) || alive(chPid) {
		if time.Now().After(deadline) {
			t.Fatalf("ZooKeeper (alive %v) or ClickHouse (alive %v) still runs 5s after its test process was killed", alive(zkPid), alive(chPid))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// alive: the process exists and is no zombie (its parent gone, a zombie waits for whoever
// reaps orphans, which is not this test).
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	return len(f) > 0 && f[0] != "Z" && f[0] != "X"
}
