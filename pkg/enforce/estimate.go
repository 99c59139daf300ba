package enforce

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/vigil-db/vigil/pkg/policy"
)

// Blast radius from the planner. When a decision depends on how many rows an UPDATE, DELETE
// or MERGE would touch (policy.Decision.NeedsEstimate), the proxy asks the server: EXPLAIN
// without ANALYZE (nothing runs) on a catalog side connection to the session's database,
// with the Bind's parameters for the extended protocol, and reads the target's
// pg_class.reltuples. It runs in a READ ONLY transaction as the session's own role (SET
// LOCAL ROLE), so that planning, which may evaluate immutable functions, cannot do more than
// the client itself could, and under a statement timeout. Whatever fails yields an Estimate
// with Err, which the policy treats as over every threshold.

// estimateTimeout bounds the whole exchange; EXPLAIN itself gets estimateStatementTimeout.
const (
	estimateTimeout          = 5 * time.Second
	estimateStatementTimeout = 2 * time.Second
)

// estimate asks the planner about sql with the given parameters (nil for a Query).
func (c *catalog) estimate(ss *session, sql string, params [][]byte, formats []int16, oids []uint32) *policy.Estimate {
	est, err := c.explain(ss, sql, params, formats, oids)
	if err != nil {
		c.srv.m.estimates.WithLabelValues("error").Inc()
		ss.srv.log.Warn("planner estimate failed; the statement counts as over the policy's thresholds",
			"session_id", ss.id, "err", err)
		return &policy.Estimate{Err: err.Error()}
	}
	c.srv.m.estimates.WithLabelValues("ok").Inc()
	return est
}

func (c *catalog) explain(ss *session, sql string, params [][]byte, formats []int16, oids []uint32) (*policy.Estimate, error) {
	ctx, cancel := context.WithTimeout(ss.context(), estimateTimeout)
	defer cancel()
	d := c.db(ss.upstream, ss.database)
	conn, err := c.acquire(ctx, ss, d)
	if err != nil {
		return nil, err
	}
	if len(oids) != len(params) {
		oids = make([]uint32, len(params)) // the server infers them, as for an untyped Parse
	}
	est, err := explainOn(ctx, conn, ss.user, sql, params, formats, oids)
	// Always leave the transaction; a connection whose state is unknown is closed.
	if _, rbErr := conn.Exec(ctx, "ROLLBACK").ReadAll(); rbErr != nil {
		d.discard(conn)
	} else {
		d.release(conn)
	}
	return est, err
}

func explainOn(ctx context.Context, conn *pgconn.PgConn, role, sql string, params [][]byte, formats []int16, oids []uint32) (*policy.Estimate, error) {
	setup := fmt.Sprintf("BEGIN READ ONLY; SET LOCAL statement_timeout = %d; SET LOCAL ROLE %s",
		estimateStatementTimeout.Milliseconds(), quoteIdent(role))
	if _, err := conn.Exec(ctx, setup).ReadAll(); err != nil {
		return nil, fmt.Errorf("EXPLAIN as role %s: %w", role, explainErr(err))
	}
	// ExecParams: one statement only, whatever the text holds.
	res := conn.ExecParams(ctx, "EXPLAIN (FORMAT JSON, VERBOSE) "+sql, params, oids, formats, nil).Read()
	if res.Err != nil {
		return nil, fmt.Errorf("EXPLAIN: %w", explainErr(res.Err))
	}
	if len(res.Rows) != 1 || len(res.Rows[0]) != 1 {
		return nil, errors.New("EXPLAIN: unexpected result shape")
	}
	var plans []struct {
		Plan planNode `json:"Plan"`
	}
	if err := json.Unmarshal(res.Rows[0][0], &plans); err != nil || len(plans) != 1 {
		return nil, fmt.Errorf("EXPLAIN: reading the JSON plan: %v", err)
	}
	// The statement's target is the widest ModifyTable (a data-modifying CTE adds others).
	var target *planNode
	var rows float64
	plans[0].Plan.walk(func(n *planNode) {
		if n.NodeType != "ModifyTable" {
			return
		}
		r := n.PlanRows
		for i := range n.Plans {
			r = max(r, n.Plans[i].PlanRows)
		}
		if target == nil || r > rows {
			target, rows = n, r
		}
	})
	if target == nil {
		return nil, errors.New("EXPLAIN: the plan modifies no table")
	}
	tr := conn.ExecParams(ctx, `SELECT c.reltuples FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = $1 AND c.relname = $2`, [][]byte{[]byte(target.Schema), []byte(target.Relation)}, nil, nil, nil).Read()
	if tr.Err != nil {
		return nil, fmt.Errorf("reading the size of %s.%s: %w", target.Schema, target.Relation, explainErr(tr.Err))
	}
	if len(tr.Rows) != 1 {
		return nil, fmt.Errorf("no table %s.%s in pg_class", target.Schema, target.Relation)
	}
	tuples, err := strconv.ParseFloat(string(tr.Rows[0][0]), 64)
	if err != nil {
		return nil, fmt.Errorf("reltuples of %s.%s: %w", target.Schema, target.Relation, err)
	}
	return &policy.Estimate{Rows: rows, Table: target.Schema + "." + target.Relation, TableRows: tuples}, nil
}

// explainErr keeps what a client may be told of a server error: its SQLSTATE and message.
func explainErr(err error) error {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return fmt.Errorf("%s (SQLSTATE %s)", pe.Message, pe.Code)
	}
	return err
}

// planNode is the part of EXPLAIN (FORMAT JSON, VERBOSE) the estimate reads.
type planNode struct {
	NodeType string     `json:"Node Type"`
	Relation string     `json:"Relation Name"`
	Schema   string     `json:"Schema"`
	PlanRows float64    `json:"Plan Rows"`
	Plans    []planNode `json:"Plans"`
}

func (n *planNode) walk(f func(*planNode)) {
	f(n)
	for i := range n.Plans {
		n.Plans[i].walk(f)
	}
}
