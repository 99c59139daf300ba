-- title: Session replay
-- description: Every statement of one database session in the order it ran, with results, timings and decisions.
-- param: session string required  Session id as recorded in events
-- param: limit int 10000  Most rows returned
SELECT
    time,
    agent_id,
    seq,
    db_user,
    database,
    kind,
    decision,
    rule,
    rows,
    duration_us,
    error,
    error_message,
    statement,
    params
FROM audit_events FINAL
WHERE session_id = {session}
ORDER BY agent_id, seq
LIMIT {limit}
