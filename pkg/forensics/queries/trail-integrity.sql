-- title: Trail integrity: gaps, broken links and declared losses
-- description: Per chain (agent id and chain id: a fresh state directory under an existing agent id is a new chain, from seq 1), the seq ranges missing from the trail, events whose prev_hash is not the hash of the event before them, and the losses the agent itself recorded as gap events. An empty result over the whole trail means every seq is present and linked; `vigil verify` also checks hashes and signatures.
-- param: since since 30d  Events after this: a duration (24h, 7d) or an RFC 3339 time
-- param: limit int 1000  Most rows returned
SELECT agent_id, chain_id, problem, from_seq, to_seq, detail
FROM
(
    SELECT
        agent_id,
        chain_id,
        'missing' AS problem,
        toUInt64(prev_seq + 1) AS from_seq,
        toUInt64(seq - 1) AS to_seq,
        concat(toString(seq - prev_seq - 1), ' events absent') AS detail
    FROM
    (
        SELECT agent_id, chain_id, arrayMap(x -> x.1, t) AS seqs, arrayMap(x -> x.2, t) AS prevs, arrayMap(x -> x.3, t) AS hashes
        FROM
        (
            SELECT agent_id, chain_id, arraySort(groupArray((seq, prev_hash, hash))) AS t
            FROM audit_events FINAL
            WHERE time >= toDateTime({since}, 'UTC')
            GROUP BY agent_id, chain_id
        )
    )
    ARRAY JOIN seqs AS seq, arrayPushFront(arrayPopBack(seqs), toUInt64(0)) AS prev_seq, arrayEnumerate(seqs) AS i
    WHERE i > 1 AND seq - prev_seq > 1

    UNION ALL

    SELECT
        agent_id,
        chain_id,
        'broken_link' AS problem,
        seq AS from_seq,
        seq AS to_seq,
        concat('prev_hash ', prev_hash, ' is not the hash of seq ', toString(seq - 1), ' (', prev_event_hash, ')') AS detail
    FROM
    (
        SELECT agent_id, chain_id, arrayMap(x -> x.1, t) AS seqs, arrayMap(x -> x.2, t) AS prevs, arrayMap(x -> x.3, t) AS hashes
        FROM
        (
            SELECT agent_id, chain_id, arraySort(groupArray((seq, prev_hash, hash))) AS t
            FROM audit_events FINAL
            WHERE time >= toDateTime({since}, 'UTC')
            GROUP BY agent_id, chain_id
        )
    )
    ARRAY JOIN seqs AS seq, prevs AS prev_hash, arrayPushFront(arrayPopBack(seqs), toUInt64(0)) AS prev_seq,
        arrayPushFront(arrayPopBack(hashes), '') AS prev_event_hash, arrayEnumerate(seqs) AS i
    WHERE i > 1 AND seq = prev_seq + 1 AND prev_hash != prev_event_hash

    UNION ALL

    SELECT agent_id, chain_id, 'declared_loss' AS problem, seq AS from_seq, seq AS to_seq, concat(toString(lost), ' lost: ', detail) AS detail
    FROM audit_events FINAL
    WHERE type = 'gap' AND time >= toDateTime({since}, 'UTC')
)
ORDER BY agent_id, chain_id, from_seq
LIMIT {limit}
