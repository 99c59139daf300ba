-- title: Who received PII raw, through which workload
-- description: The PII egress ledger, raw side: per sensitive column that left unmasked (pii_columns minus masked_columns), who received it (identity, database user), through which workload (process, executable, container, pod, service account), how many statements and rows, and when last. Answers "who received raw card numbers this week" with --param column=%card% (also %pan%); columns are "table.column" as the proxy names them.
-- param: since since 7d  How far back: a duration (24h, 7d) or an RFC 3339 time
-- param: column string ""  A LIKE pattern over the column name, case-insensitive (%card%); empty: every PII column
-- param: limit int 200  Most rows returned
SELECT
    raw_column,
    if(identity_email != '', identity_email, identity_subject) AS identity,
    db_user,
    database,
    process_comm,
    process_exe,
    process_container_id,
    process_pod,
    process_service_account,
    count() AS statements,
    sum(rows) AS rows,
    min(time) AS first_seen,
    max(time) AS last_seen
FROM audit_events FINAL
ARRAY JOIN pii_columns AS raw_column
WHERE type = 'statement' AND time >= toDateTime({since}, 'UTC') AND NOT has(masked_columns, raw_column)
    AND ({column} = '' OR lower(raw_column) LIKE lower({column}))
GROUP BY raw_column, identity, db_user, database, process_comm, process_exe, process_container_id, process_pod, process_service_account
ORDER BY rows DESC, last_seen DESC
LIMIT {limit}
