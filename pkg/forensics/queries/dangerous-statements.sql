-- title: Dangerous statements, blocked or allowed
-- description: Schema changes, privilege changes, truncations, and every statement a policy did not simply allow (alerted, blocked, masked, held for approval), with who ran it and what was decided.
-- param: since since 7d  How far back: a duration (24h, 7d) or an RFC 3339 time
-- param: decision string ""  Only this decision (allow, alert, block, mask, approval_required); empty for all
-- param: limit int 500  Most rows returned
SELECT
    time,
    agent_id,
    seq,
    decision,
    rule,
    kind,
    db_user,
    if(identity_email != '', identity_email, identity_subject) AS identity,
    process_comm,
    database,
    approval_id,
    error,
    substring(statement, 1, 300) AS statement
FROM audit_events FINAL
WHERE type = 'statement'
    AND time >= toDateTime({since}, 'UTC')
    AND (kind IN ('DDL', 'DCL', 'TRUNCATE', 'DROP', 'ALTER', 'GRANT', 'REVOKE') OR decision NOT IN ('', 'allow'))
    AND ({decision} = '' OR decision = {decision})
ORDER BY time DESC, agent_id, seq DESC
LIMIT {limit}
