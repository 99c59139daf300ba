package clickhouse

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/vigil-db/vigil/internal/testch"
	"github.com/vigil-db/vigil/pkg/audit"
	"github.com/vigil-db/vigil/pkg/event"
	"github.com/vigil-db/vigil/pkg/store"
)

// TestClusterReplicaKilled: two ClickHouse replicas of one shard and a ZooKeeper. The
// store migrates ON CLUSTER (creating the database too) and the exporter ships a live,
// hash-chained trail through the Distributed table while the replica it talks to (the
// first in the URL) is killed and later restarted. Every event is then on both replicas
// exactly once, the rollups count each once, and the chain verifies.
func TestClusterReplicaKilled(t *testing.T) {
	if testing.Short() {
		t.Skip("takes about 20 seconds")
	}
	c := testch.StartCluster(t, 2)
	ctx := context.Background()
	start := time.Now()
	st, cfg := openCluster(t, c)
	t.Logf("migrated ON CLUSTER in %v", time.Since(start).Round(time.Millisecond))
	for _, r := range c.Replicas {
		if n := queryUint(t, r, "SELECT count() FROM system.tables WHERE database = 'vigil'"); n != 12 {
			t.Fatalf("replica %s has %d tables in vigil, want 12 (5 tables, each local and Distributed, and 2 views)", r.Addr(), n)
		}
	}

	dir := t.TempDir()
	sp := openSpool(t, filepath.Join(dir, "spool"))
	defer sp.Close()
	trail, err := audit.New(audit.Config{Host: "h", AgentID: "agent-1", StateDir: filepath.Join(dir, "state"), AnchorInterval: time.Second}, sp, nil)
	if err != nil {
		t.Fatal(err)
	}
	x, err := NewExporter(st, sp, ExporterConfig{Dir: filepath.Join(dir, "export"), BatchRows: 2000, BatchInterval: 100 * time.Millisecond,
		MaxBackoff: 500 * time.Millisecond}, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	tctx, stopTrail := context.WithCancel(ctx)
	trailDone := make(chan error, 1)
	go func() { trailDone <- trail.Run(tctx) }()
	xctx, stopExporter := context.WithCancel(ctx)
	xDone := make(chan error, 1)
	go func() { xDone <- x.Run(xctx) }()

	// 1,000 statements a second for 12 seconds; the first replica is away from 3s to 7s.
	r1 := c.Replicas[0]
	start = time.Now()
	killed, restarted := false, false
	n := 0
	for time.Since(start) < 12*time.Second {
		for i := 0; i < 10; i++ {
			n++
			trail.Emit(&event.Event{Time: time.Now(), Type: event.TypeStatement, Source: event.SourceEBPF, Protocol: event.ProtocolPostgres,
				DBUser: "app", Database: "shop", Kind: "SELECT", Tables: []string{"orders"}, Rows: 1, DurationUS: int64(n % 1000),
				Statement: fmt.Sprintf("SELECT * FROM orders WHERE id = %d", n), Decision: event.DecisionAllow})
		}
		time.Sleep(10 * time.Millisecond)
		if !killed && time.Since(start) > 3*time.Second {
			r1.Kill()
			killed = true
			t.Logf("replica r1 killed at %v, shipped %d", time.Since(start).Round(time.Millisecond), x.Shipped())
		}
		if !restarted && time.Since(start) > 7*time.Second {
			t.Logf("replica r1 restarting at %v, shipped %d", time.Since(start).Round(time.Millisecond), x.Shipped())
			if err := r1.Restart(); err != nil {
				t.Fatal(err)
			}
			restarted = true
		}
	}
	stopTrail()
	if err := <-trailDone; err != nil {
		t.Fatal(err)
	}
	last, _ := sp.Last()
	waitFor(t, 30*time.Second, "the exporter to catch up", func() bool { return x.Shipped() == last })
	t.Logf("caught up %v after the load (%d events)", time.Since(start)-12*time.Second, last)
	stopExporter()
	if err := <-xDone; err != nil {
		t.Fatal(err)
	}
	// Whether an insert was in flight when the replica died is timing: without one, the
	// driver dials the other replica and nothing fails. TestClusterResentBatchFeedsRollups
	// covers the resend deterministically.
	t.Logf("retryable errors while a replica was away: %v", value(t, x.m.errors.WithLabelValues("retryable")))

	var want uint64
	if err := sp.Read(ctx, store.Query{}, func(*event.Event) error { want++; return nil }); err != nil {
		t.Fatal(err)
	}
	for _, r := range c.Replicas {
		syncReplica(t, r)
		for _, q := range []struct{ what, sql string }{
			{"FINAL count", "SELECT count() FROM vigil.audit_events_local FINAL"},
			{"distinct seqs", "SELECT uniqExact(agent_id, seq) FROM vigil.audit_events_local"},
			{"rollup statements", "SELECT sum(statements) FROM vigil.audit_activity_1m_local FINAL"},
		} {
			if got := queryUint(t, r, q.sql); got != want {
				t.Errorf("replica %s: %s = %d, want %d", r.Addr(), q.what, got, want)
			}
		}
		t.Logf("replica %s: %d events exactly once (%d physical rows before merges)", r.Addr(), want,
			queryUint(t, r, "SELECT count() FROM vigil.audit_events_local"))
	}

	trust, err := audit.LoadTrust(filepath.Join(dir, "state"))
	if err != nil {
		t.Fatal(err)
	}
	rep, err := audit.Verify(ctx, st, trust)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK() {
		for _, p := range rep.Problems {
			t.Log(p)
		}
		t.Fatal("the hash chain does not verify through the Distributed table")
	}
	if len(rep.Chains) != 1 || rep.Chains[0].Events != want {
		t.Errorf("verify read %+v, want %d events of one agent", rep.Chains, want)
	}

	// An agent that starts while a replica is away migrates (nothing to do) and ships: an
	// ON CLUSTER statement would wait for the missing replica (distributed_ddl_task_timeout,
	// 180s), so a current schema runs none.
	c.Replicas[1].Kill()
	st2, err := Open(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer st2.Close()
	mctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	start = time.Now()
	if applied, err := st2.Migrate(mctx); err != nil || len(applied) > 0 {
		t.Fatalf("Migrate with a replica away: applied %v, %v", applied, err)
	}
	if err := st2.Append(mctx, []*event.Event{fullEvent(1)}); err != nil {
		t.Fatalf("insert with a replica away: %v", err)
	}
	t.Logf("migrated and inserted with a replica away in %v", time.Since(start).Round(time.Millisecond))
}

// TestClusterResentBatchFeedsRollups: a replica that dies after committing a batch's
// events block but before its views' blocks leaves the rollups without the batch, and the
// exporter then resends it (through another replica). Replicated tables drop a block they
// have already seen, and a dropped block feeds no view, so the rollups lost the batch for
// good (CI saw 110 of 10,933 statements missing). Reproduced here without a kill: the
// views are detached while the batch first lands.
func TestClusterResentBatchFeedsRollups(t *testing.T) {
	if testing.Short() {
		t.Skip("starts ZooKeeper and two ClickHouse servers")
	}
	c := testch.StartCluster(t, 2)
	ctx := context.Background()
	st, _ := openCluster(t, c)
	var batch []*event.Event
	for seq := uint64(1); seq <= 50; seq++ {
		batch = append(batch, fullEvent(seq))
	}
	views := []string{"vigil.audit_activity_1m_local_mv", "vigil.audit_actor_pairs_local_mv"}
	for _, r := range c.Replicas {
		for _, v := range views {
			if out, err := r.Query("DETACH TABLE " + v); err != nil {
				t.Fatalf("detaching %s: %v %s", v, err, out)
			}
		}
	}
	if err := st.Append(ctx, batch); err != nil {
		t.Fatal(err)
	}
	for _, r := range c.Replicas {
		for _, v := range views {
			if out, err := r.Query("ATTACH TABLE " + v); err != nil {
				t.Fatalf("attaching %s: %v %s", v, err, out)
			}
		}
	}
	if err := st.Append(ctx, batch); err != nil { // the exporter's retry: the same batch
		t.Fatal(err)
	}
	for _, r := range c.Replicas {
		syncReplica(t, r)
		for _, q := range []struct {
			what, sql string
			want      uint64
		}{
			{"FINAL count", "SELECT count() FROM vigil.audit_events_local FINAL", 50},
			{"rollup statements", "SELECT sum(statements) FROM vigil.audit_activity_1m_local FINAL", 50},
			{"actor pairs", "SELECT count() FROM (SELECT db_user FROM vigil.audit_actor_pairs_local GROUP BY agent_id, process_comm, process_exe, db_user, database)", 1},
		} {
			if got := queryUint(t, r, q.sql); got != q.want {
				t.Errorf("replica %s: %s = %d, want %d", r.Addr(), q.what, got, q.want)
			}
		}
	}
}

// openCluster opens the store on every replica of c (the first one first) and migrates it
// ON CLUSTER; the store closes when the test ends.
func openCluster(t *testing.T, c *testch.Replicated) (*Store, Config) {
	t.Helper()
	cfg, err := ParseURL(fmt.Sprintf("clickhouse://default@%s/vigil?cluster=%s&dial_timeout=1s", c.Addrs(), testch.ClusterReplicated))
	if err != nil {
		t.Fatal(err)
	}
	st, err := Open(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	if _, err := st.Migrate(context.Background()); err != nil {
		t.Fatal(err)
	}
	return st, cfg
}

// syncReplica waits until replica r has fetched every part of the tables the tests count.
func syncReplica(t *testing.T, r *testch.Server) {
	t.Helper()
	for _, tbl := range []string{"audit_events_local", "audit_activity_1m_local", "audit_actor_pairs_local"} {
		if out, err := r.Query("SYSTEM SYNC REPLICA vigil." + tbl); err != nil {
			t.Fatalf("%s: %v %s", tbl, err, out)
		}
	}
}
