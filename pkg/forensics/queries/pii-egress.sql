-- title: PII that left the database
-- description: PII columns returned to clients, one row per column, delivery (raw or masked), database user, identity and process, with statement and row counts. Raw rows of PII that a policy should have masked show up here first.
-- param: since since 24h  How far back: a duration (24h, 7d) or an RFC 3339 time
-- param: limit int 200  Most rows returned
SELECT
    pii_column,
    if(has(masked_columns, pii_column), 'masked', 'raw') AS delivery,
    db_user,
    if(identity_email != '', identity_email, identity_subject) AS identity,
    process_comm,
    process_exe,
    database,
    count() AS statements,
    sum(rows) AS rows,
    max(time) AS last_seen
FROM audit_events FINAL
ARRAY JOIN pii_columns AS pii_column
WHERE type = 'statement' AND time >= toDateTime({since}, 'UTC')
GROUP BY pii_column, delivery, db_user, identity, process_comm, process_exe, database
ORDER BY delivery DESC, rows DESC
LIMIT {limit}
