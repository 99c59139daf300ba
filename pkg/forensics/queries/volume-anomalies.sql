-- title: Volume anomalies against a baseline
-- description: Hours in which a database user ran far more statements or read far more rows than its average hour over the baseline period before the window.
-- param: since since 24h  Window to examine: a duration (24h, 7d) or an RFC 3339 time
-- param: baseline_days int 7  Days before the window that make the baseline
-- param: factor int 3  Report hours above this many times the baseline
-- param: limit int 100  Most rows returned
SELECT
    db_user,
    hour,
    statements,
    rows,
    round(baseline_statements, 1) AS baseline_statements,
    round(baseline_rows, 1) AS baseline_rows,
    round(statements / greatest(baseline_statements, 1), 1) AS statements_ratio,
    round(rows / greatest(baseline_rows, 1), 1) AS rows_ratio
FROM
(
    SELECT db_user, toStartOfHour(minute) AS hour, sum(statements) AS statements, sum(rows_total) AS rows
    FROM audit_activity_1m FINAL
    WHERE type = 'statement' AND minute >= toDateTime({since}, 'UTC')
    GROUP BY db_user, hour
) AS recent
ANY LEFT JOIN
(
    SELECT db_user, sum(statements) / ({baseline_days} * 24) AS baseline_statements, sum(rows_total) / ({baseline_days} * 24) AS baseline_rows
    FROM audit_activity_1m FINAL
    WHERE type = 'statement'
        AND minute >= toDateTime({since}, 'UTC') - {baseline_days} * 86400
        AND minute < toDateTime({since}, 'UTC')
    GROUP BY db_user
) AS baseline USING (db_user)
WHERE statements > {factor} * greatest(baseline_statements, 1) OR rows > {factor} * greatest(baseline_rows, 1)
ORDER BY statements_ratio DESC, rows_ratio DESC
LIMIT {limit}
