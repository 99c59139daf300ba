-- title: One user's timeline
-- description: Everything one person or account did, in order: matched against the database user, the verified identity's email and subject.
-- param: user string required  Database user, identity email or identity subject
-- param: since since 24h  How far back: a duration (24h, 7d) or an RFC 3339 time
-- param: limit int 1000  Most rows returned
SELECT
    time,
    agent_id,
    seq,
    host,
    db_user,
    if(identity_email != '', identity_email, identity_subject) AS identity,
    process_comm,
    database,
    session_id,
    type,
    kind,
    decision,
    rule,
    rows,
    duration_us,
    error,
    substring(statement, 1, 300) AS statement
FROM audit_events FINAL
WHERE (db_user = {user} OR identity_email = {user} OR identity_subject = {user})
    AND time >= toDateTime({since}, 'UTC')
ORDER BY time, agent_id, seq
LIMIT {limit}
