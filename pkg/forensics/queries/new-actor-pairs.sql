-- title: Process and database user pairs never seen before
-- description: Combinations of client process and database user (per database and agent) whose first statement falls in the window: a new tool, script or stolen credential shows up here.
-- param: since since 24h  Pairs first seen after this: a duration (24h, 7d) or an RFC 3339 time
-- param: limit int 200  Most rows returned
SELECT
    db_user,
    process_comm,
    process_exe,
    database,
    agent_id,
    first_seen,
    last_seen
FROM
(
    SELECT
        db_user,
        process_comm,
        process_exe,
        database,
        agent_id,
        minMerge(first_seen) AS first_seen,
        maxMerge(last_seen) AS last_seen
    FROM audit_actor_pairs
    GROUP BY db_user, process_comm, process_exe, database, agent_id
)
WHERE first_seen >= toDateTime({since}, 'UTC')
ORDER BY first_seen DESC
LIMIT {limit}
