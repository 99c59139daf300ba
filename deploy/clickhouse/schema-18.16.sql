-- Rendered by pkg/store/clickhouse (go test -run TestRenderedSchemaFiles -update); do not edit.
-- Vigil applies this itself at start-up and with `vigil store migrate`. Retention here: 365 days.

CREATE TABLE IF NOT EXISTS vigil.vigil_schema_migrations (
    version UInt32,
    name String,
    applied_at DateTime('UTC')
) ENGINE = ReplacingMergeTree()
ORDER BY version
SETTINGS index_granularity = 8192;

CREATE TABLE IF NOT EXISTS vigil.audit_events (
    time DateTime('UTC'),
    time_ns UInt32,
    type String,
    source String,
    protocol String,
    host String,
    agent_id String,
    chain_id String,
    seq UInt64,
    db_user String,
    database String,
    application String,
    client_addr String,
    server_addr String,
    session_id String,
    backend_pid Int32,
    tls UInt8,
    steered UInt8,
    steered_by String,
    has_process UInt8,
    process_pid Int32,
    process_uid Nullable(Int32),
    process_comm String,
    process_exe String,
    process_container_id String,
    process_pod String,
    process_namespace String,
    process_service_account String,
    process_image String,
    process_cgroup String,
    has_identity UInt8,
    identity_issuer String,
    identity_subject String,
    identity_email String,
    identity_groups Array(String),
    statement String,
    statement_truncated UInt8,
    params Array(String),
    fingerprint String,
    kind String,
    tables Array(String),
    rows Int64,
    duration_us Int64,
    error String,
    error_message String,
    decision String,
    rule String,
    pii_columns Array(String),
    masked_columns Array(String),
    approval_id String,
    lost UInt64,
    detail String,
    signature String,
    key_id String,
    prev_hash String,
    hash String
) ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMMDD(time)
PRIMARY KEY (toStartOfHour(time), agent_id, seq)
ORDER BY (toStartOfHour(time), agent_id, seq, chain_id)
SETTINGS index_granularity = 8192;

CREATE TABLE IF NOT EXISTS vigil.audit_activity_1m (
    minute DateTime('UTC'),
    agent_id String,
    chain_id String,
    type String,
    decision String,
    kind String,
    database String,
    db_user String,
    first_seq UInt64,
    statements UInt64,
    errors UInt64,
    rows_total Int64,
    duration_us_sum Int64,
    duration_us_max Int64,
    pii_statements UInt64,
    pii_columns_total UInt64,
    masked_columns_total UInt64,
    lost_total UInt64
) ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMMDD(minute)
PRIMARY KEY (minute, agent_id, type, decision, kind, database, db_user, first_seq)
ORDER BY (minute, agent_id, type, decision, kind, database, db_user, first_seq, chain_id)
SETTINGS index_granularity = 8192;

CREATE MATERIALIZED VIEW IF NOT EXISTS vigil.audit_activity_1m_mv TO vigil.audit_activity_1m AS
SELECT toStartOfMinute(time) AS minute, agent_id, chain_id, type, decision, kind, database, db_user,
    min(seq) AS first_seq, count() AS statements, countIf(error != '') AS errors, sum(rows) AS rows_total,
    sum(duration_us) AS duration_us_sum, max(duration_us) AS duration_us_max,
    countIf(notEmpty(pii_columns)) AS pii_statements, sum(length(pii_columns)) AS pii_columns_total,
    sum(length(masked_columns)) AS masked_columns_total, sum(lost) AS lost_total
FROM vigil.audit_events
GROUP BY minute, agent_id, chain_id, type, decision, kind, database, db_user;

CREATE TABLE IF NOT EXISTS vigil.audit_actor_pairs (
    agent_id String,
    process_comm String,
    process_exe String,
    db_user String,
    database String,
    first_seen AggregateFunction(min, DateTime('UTC')),
    last_seen AggregateFunction(max, DateTime('UTC'))
) ENGINE = AggregatingMergeTree()
ORDER BY (db_user, database, process_exe, process_comm, agent_id)
SETTINGS index_granularity = 8192;

CREATE MATERIALIZED VIEW IF NOT EXISTS vigil.audit_actor_pairs_mv TO vigil.audit_actor_pairs AS
SELECT agent_id, process_comm, process_exe, db_user, database,
    minState(toDateTime(time, 'UTC')) AS first_seen, maxState(toDateTime(time, 'UTC')) AS last_seen
FROM vigil.audit_events
WHERE type = 'statement'
GROUP BY agent_id, process_comm, process_exe, db_user, database;

CREATE TABLE IF NOT EXISTS vigil.vigil_heads (
    agent_id String,
    chain_id String,
    seq UInt64,
    published DateTime('UTC'),
    head String
) ENGINE = ReplacingMergeTree(seq)
ORDER BY (agent_id, chain_id)
SETTINGS index_granularity = 8192;
