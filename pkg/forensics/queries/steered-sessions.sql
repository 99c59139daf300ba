-- title: Steered sessions and what was refused in them
-- description: Sessions the kernel moved into the proxy (flagged workloads, with no change to their connection strings): per session, the flag or selector that steered it, the process the kernel saw, how many statements ran, and how many were refused, masked or held.
-- param: since since 7d  How far back: a duration (24h, 7d) or an RFC 3339 time
-- param: limit int 500  Most rows returned
SELECT
    session_id,
    steered_by,
    any(agent_id) AS agent_id,
    any(db_user) AS db_user,
    any(database) AS database,
    any(process_pid) AS process_pid,
    any(process_comm) AS process_comm,
    any(process_exe) AS process_exe,
    any(process_pod) AS process_pod,
    min(time) AS first_time,
    max(time) AS last_time,
    count() AS statements,
    countIf(decision = 'block') AS blocked,
    countIf(decision = 'mask') AS masked,
    countIf(decision = 'approval_required') AS held,
    substring(anyIf(statement, decision = 'block'), 1, 200) AS a_blocked_statement
FROM audit_events FINAL
WHERE type = 'statement' AND steered = 1
    AND time >= toDateTime({since}, 'UTC')
GROUP BY session_id, steered_by
ORDER BY last_time DESC
LIMIT {limit}
