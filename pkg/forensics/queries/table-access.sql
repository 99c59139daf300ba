-- title: Who touched a table
-- description: Every database user, verified identity and client process that read or wrote a table, with the kinds of statement, the decisions taken and when they were first and last seen.
-- param: table string required  Table as recorded in events (for example public.customers)
-- param: since since 7d  How far back: a duration (24h, 7d) or an RFC 3339 time
-- param: limit int 100  Most rows returned
SELECT
    db_user,
    if(identity_email != '', identity_email, identity_subject) AS identity,
    process_comm,
    process_exe,
    database,
    kind,
    decision,
    count() AS statements,
    sum(rows) AS rows,
    min(time) AS first_seen,
    max(time) AS last_seen
FROM audit_events FINAL
WHERE type = 'statement' AND has(tables, {table}) AND time >= toDateTime({since}, 'UTC')
GROUP BY db_user, identity, process_comm, process_exe, database, kind, decision
ORDER BY statements DESC, db_user
LIMIT {limit}
