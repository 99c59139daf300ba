package clickhouse

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"

	ch "github.com/ClickHouse/clickhouse-go/v2"
)

// Signed heads in the store. The trail signs a head after every flush (pkg/audit); the
// exporter publishes it here once the store holds the event it names, so that `vigil
// verify --store clickhouse://…` on another machine can check that nothing was cut from a
// chain's tail with only the agents' public keys. The package keeps the head as the file
// held it: it reads only the fields that key it, and the verifier checks the signature.

// publishedHead is a head read from the head file, with the bytes to publish.
type publishedHead struct {
	AgentID string `json:"agent_id"`
	ChainID string `json:"chain_id"`
	Seq     uint64 `json:"seq"`
	raw     []byte
}

// readHeadFile reads the head file; nil when there is none yet.
func readHeadFile(path string) (*publishedHead, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var h publishedHead
	if err := json.Unmarshal(b, &h); err != nil {
		return nil, fmt.Errorf("head file %s: %w", path, err)
	}
	h.raw = b
	return &h, nil
}

// headQueue holds heads read but not yet published, oldest first. Bounded: while
// ClickHouse refuses, older heads give way to newer ones (the newest covers the most).
type headQueue struct{ q []publishedHead }

const maxQueuedHeads = 64

func (hq *headQueue) push(h publishedHead) {
	if n := len(hq.q); n > 0 && hq.q[n-1].Seq >= h.Seq && hq.q[n-1].ChainID == h.ChainID {
		return // not newer than the last one read
	}
	if len(hq.q) == maxQueuedHeads {
		hq.q = append(hq.q[:0], hq.q[1:]...)
	}
	hq.q = append(hq.q, h)
}

// popUpTo removes the heads at or below seq and returns the newest of them.
func (hq *headQueue) popUpTo(seq uint64) (publishedHead, bool) {
	i := 0
	for i < len(hq.q) && hq.q[i].Seq <= seq {
		i++
	}
	if i == 0 {
		return publishedHead{}, false
	}
	h := hq.q[i-1]
	hq.q = append(hq.q[:0], hq.q[i:]...)
	return h, true
}

// retry puts back a head whose publishing failed.
func (hq *headQueue) retry(h publishedHead) {
	hq.q = append([]publishedHead{h}, hq.q...)
	if len(hq.q) > maxQueuedHeads {
		hq.q = hq.q[:maxQueuedHeads]
	}
}

// PublishHead stores a chain's signed head (head, as the head file holds it). The table
// keeps the newest head per chain.
func (s *Store) PublishHead(ctx context.Context, agentID, chainID string, seq uint64, head []byte) error {
	s.mu.Lock()
	migrated := s.migrated
	s.mu.Unlock()
	if !migrated {
		if _, err := s.Migrate(ctx); err != nil {
			return err
		}
	}
	l, err := s.Layout(ctx)
	if err != nil {
		return err
	}
	if l.Cluster != "" && l.Features.DistributedSyncSetting != "" {
		// On the shards before a verifier looks, not queued on this node.
		ctx = ch.Context(ctx, ch.WithSettings(ch.Settings{l.Features.DistributedSyncSetting: 1}))
	}
	b, err := s.conn.PrepareBatch(ctx, "INSERT INTO "+l.Table(TableHeads)+" (agent_id, chain_id, seq, published, head)")
	if err != nil {
		return fmt.Errorf("publishing the signed head: %w", err)
	}
	if err := b.Append(agentID, chainID, seq, time.Now().UTC().Truncate(time.Second), string(head)); err != nil {
		_ = b.Abort()
		return fmt.Errorf("publishing the signed head: %w", err)
	}
	if err := b.Send(); err != nil {
		return fmt.Errorf("publishing the signed head: %w", err)
	}
	return nil
}

// SignedHeads returns the published heads, the newest per chain, as the head files held
// them (see audit.ParseHead). A store from before schema 5 has none.
func (s *Store) SignedHeads(ctx context.Context) ([][]byte, error) {
	l, err := s.Layout(ctx)
	if err != nil {
		return nil, err
	}
	rows, err := s.conn.Query(ctx, "SELECT head FROM "+l.Table(TableHeads)+" FINAL ORDER BY agent_id, chain_id")
	if isUnknownTable(err) {
		return nil, nil
	}
	if err != nil {
		return nil, describe(fmt.Errorf("reading the signed heads: %w", err), s.cfg)
	}
	defer rows.Close()
	var out [][]byte
	for rows.Next() {
		var h string
		if err := rows.Scan(&h); err != nil {
			return nil, fmt.Errorf("reading the signed heads: %w", err)
		}
		out = append(out, []byte(h))
	}
	return out, rows.Err()
}
