-- title: Approval decisions
-- description: Every step of every approval (requested, approved, denied, expired) and the statements that ran under one, newest first.
-- param: since since 7d  How far back: a duration (24h, 7d) or an RFC 3339 time
-- param: approval string ""  Only this approval id; empty for all
-- param: limit int 500  Most rows returned
SELECT
    time,
    approval_id,
    type,
    decision,
    rule,
    detail,
    db_user,
    if(identity_email != '', identity_email, identity_subject) AS identity,
    database,
    fingerprint,
    substring(statement, 1, 300) AS statement
FROM audit_events FINAL
WHERE (type = 'approval' OR approval_id != '')
    AND time >= toDateTime({since}, 'UTC')
    AND ({approval} = '' OR approval_id = {approval})
ORDER BY time DESC, agent_id, seq DESC
LIMIT {limit}
