-- title: Top talkers
-- description: The database users and client processes with the most statements, rows and database time.
-- param: since since 24h  How far back: a duration (24h, 7d) or an RFC 3339 time
-- param: limit int 20  Most rows returned
SELECT
    db_user,
    process_comm,
    process_exe,
    database,
    count() AS statements,
    sum(rows) AS rows,
    round(sum(duration_us) / 1000000, 3) AS db_seconds,
    countIf(error != '') AS errors,
    countIf(decision NOT IN ('', 'allow')) AS not_allowed
FROM audit_events FINAL
WHERE type = 'statement' AND time >= toDateTime({since}, 'UTC')
GROUP BY db_user, process_comm, process_exe, database
ORDER BY statements DESC, rows DESC
LIMIT {limit}
