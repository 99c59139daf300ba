package testch

import (
	"strings"
	"testing"
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
