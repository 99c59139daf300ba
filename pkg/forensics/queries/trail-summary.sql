-- title: Trail summary per chain
-- description: For each chain (agent id and chain id; several chains can share an agent id), the seq range and number of events stored, how many seqs are missing, how many rows are retried copies not yet merged away (harmless: every query reads each seq once), the losses it declared and its last signed anchor.
-- param: since since 30d  Events after this: a duration (24h, 7d) or an RFC 3339 time
SELECT
    agent_id,
    chain_id,
    host,
    first_seq,
    last_seq,
    events,
    last_seq - first_seq + 1 - events AS missing,
    physical_rows - events AS unmerged_copies,
    declared_lost,
    last_anchor_seq,
    first_time,
    last_time
FROM
(
    SELECT
        agent_id,
        chain_id,
        any(host) AS host,
        min(seq) AS first_seq,
        max(seq) AS last_seq,
        count() AS events,
        sumIf(lost, type = 'gap') AS declared_lost,
        maxIf(seq, type = 'anchor') AS last_anchor_seq,
        min(time) AS first_time,
        max(time) AS last_time
    FROM audit_events FINAL
    WHERE time >= toDateTime({since}, 'UTC')
    GROUP BY agent_id, chain_id
) AS trail
ANY LEFT JOIN
(
    SELECT agent_id, chain_id, count() AS physical_rows
    FROM audit_events
    WHERE time >= toDateTime({since}, 'UTC')
    GROUP BY agent_id, chain_id
) AS physical USING (agent_id, chain_id)
ORDER BY agent_id, chain_id
