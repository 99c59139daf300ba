-- Rendered by pkg/store/clickhouse (go test -run TestRenderedSchemaFiles -update); do not edit.
-- Vigil applies this itself at start-up and with `vigil store migrate`. Retention here: 365 days.

CREATE TABLE IF NOT EXISTS vigil.vigil_schema_migrations_local ON CLUSTER vigil (
    version UInt32,
    name String,
    applied_at DateTime('UTC')
) ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/vigil/vigil_schema_migrations_local', '{replica}')
ORDER BY version
SETTINGS index_granularity = 8192;

CREATE TABLE IF NOT EXISTS vigil.vigil_schema_migrations ON CLUSTER vigil AS vigil.vigil_schema_migrations_local ENGINE = Distributed(vigil, vigil, vigil_schema_migrations_local, version);

CREATE TABLE IF NOT EXISTS vigil.audit_events_local ON CLUSTER vigil (
    time DateTime64(9, 'UTC') CODEC(Delta, ZSTD(1)),
    type LowCardinality(String),
    source LowCardinality(String),
    protocol LowCardinality(String),
    host LowCardinality(String),
    agent_id LowCardinality(String),
    chain_id LowCardinality(String),
    seq UInt64 CODEC(Delta, ZSTD(1)),
    db_user LowCardinality(String),
    database LowCardinality(String),
    application LowCardinality(String),
    client_addr String,
    server_addr LowCardinality(String),
    session_id String CODEC(ZSTD(1)),
    backend_pid Int32,
    tls UInt8,
    steered UInt8,
    steered_by LowCardinality(String),
    has_process UInt8,
    process_pid Int32,
    process_uid Nullable(Int32),
    process_comm LowCardinality(String),
    process_exe LowCardinality(String),
    process_container_id LowCardinality(String),
    process_pod LowCardinality(String),
    process_namespace LowCardinality(String),
    process_service_account LowCardinality(String),
    process_image LowCardinality(String),
    process_cgroup LowCardinality(String),
    has_identity UInt8,
    identity_issuer LowCardinality(String),
    identity_subject LowCardinality(String),
    identity_email LowCardinality(String),
    identity_groups Array(String),
    statement String CODEC(ZSTD(3)),
    statement_truncated UInt8,
    params Array(String) CODEC(ZSTD(3)),
    fingerprint String,
    kind LowCardinality(String),
    tables Array(String),
    rows Int64,
    duration_us Int64,
    error LowCardinality(String),
    error_message String,
    decision LowCardinality(String),
    rule LowCardinality(String),
    pii_columns Array(String),
    masked_columns Array(String),
    approval_id String,
    lost UInt64,
    detail String,
    signature String,
    key_id LowCardinality(String),
    prev_hash String,
    hash String,
    INDEX idx_tables tables TYPE bloom_filter(0.01) GRANULARITY 4,
    INDEX idx_db_user db_user TYPE set(1000) GRANULARITY 4,
    INDEX idx_session session_id TYPE bloom_filter(0.01) GRANULARITY 4,
    INDEX idx_decision decision TYPE set(16) GRANULARITY 4
) ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/vigil/audit_events_local', '{replica}')
PARTITION BY toYYYYMMDD(time)
PRIMARY KEY (toStartOfHour(time), agent_id, seq)
ORDER BY (toStartOfHour(time), agent_id, seq, chain_id)
TTL toDateTime(time) + INTERVAL 365 DAY
SETTINGS index_granularity = 8192;

CREATE TABLE IF NOT EXISTS vigil.audit_events ON CLUSTER vigil AS vigil.audit_events_local ENGINE = Distributed(vigil, vigil, audit_events_local, cityHash64(agent_id));

CREATE TABLE IF NOT EXISTS vigil.audit_activity_1m_local ON CLUSTER vigil (
    minute DateTime('UTC'),
    agent_id LowCardinality(String),
    chain_id LowCardinality(String),
    type LowCardinality(String),
    decision LowCardinality(String),
    kind LowCardinality(String),
    database LowCardinality(String),
    db_user LowCardinality(String),
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
) ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/vigil/audit_activity_1m_local', '{replica}')
PARTITION BY toYYYYMMDD(minute)
PRIMARY KEY (minute, agent_id, type, decision, kind, database, db_user, first_seq)
ORDER BY (minute, agent_id, type, decision, kind, database, db_user, first_seq, chain_id)
TTL toDateTime(minute) + INTERVAL 365 DAY
SETTINGS index_granularity = 8192;

CREATE TABLE IF NOT EXISTS vigil.audit_activity_1m ON CLUSTER vigil AS vigil.audit_activity_1m_local ENGINE = Distributed(vigil, vigil, audit_activity_1m_local, rand());

CREATE MATERIALIZED VIEW IF NOT EXISTS vigil.audit_activity_1m_local_mv ON CLUSTER vigil TO vigil.audit_activity_1m_local AS
SELECT toStartOfMinute(time) AS minute, agent_id, chain_id, type, decision, kind, database, db_user,
    min(seq) AS first_seq, count() AS statements, countIf(error != '') AS errors, sum(rows) AS rows_total,
    sum(duration_us) AS duration_us_sum, max(duration_us) AS duration_us_max,
    countIf(notEmpty(pii_columns)) AS pii_statements, sum(length(pii_columns)) AS pii_columns_total,
    sum(length(masked_columns)) AS masked_columns_total, sum(lost) AS lost_total
FROM vigil.audit_events_local
GROUP BY minute, agent_id, chain_id, type, decision, kind, database, db_user;

CREATE TABLE IF NOT EXISTS vigil.audit_actor_pairs_local ON CLUSTER vigil (
    agent_id LowCardinality(String),
    process_comm LowCardinality(String),
    process_exe LowCardinality(String),
    db_user LowCardinality(String),
    database LowCardinality(String),
    first_seen AggregateFunction(min, DateTime('UTC')),
    last_seen AggregateFunction(max, DateTime('UTC'))
) ENGINE = ReplicatedAggregatingMergeTree('/clickhouse/tables/{shard}/vigil/audit_actor_pairs_local', '{replica}')
ORDER BY (db_user, database, process_exe, process_comm, agent_id)
SETTINGS index_granularity = 8192;

CREATE TABLE IF NOT EXISTS vigil.audit_actor_pairs ON CLUSTER vigil AS vigil.audit_actor_pairs_local ENGINE = Distributed(vigil, vigil, audit_actor_pairs_local, rand());

CREATE MATERIALIZED VIEW IF NOT EXISTS vigil.audit_actor_pairs_local_mv ON CLUSTER vigil TO vigil.audit_actor_pairs_local AS
SELECT agent_id, process_comm, process_exe, db_user, database,
    minState(toDateTime(time, 'UTC')) AS first_seen, maxState(toDateTime(time, 'UTC')) AS last_seen
FROM vigil.audit_events_local
WHERE type = 'statement'
GROUP BY agent_id, process_comm, process_exe, db_user, database;

CREATE TABLE IF NOT EXISTS vigil.vigil_heads_local ON CLUSTER vigil (
    agent_id LowCardinality(String),
    chain_id LowCardinality(String),
    seq UInt64,
    published DateTime('UTC'),
    head String
) ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/vigil/vigil_heads_local', '{replica}', seq)
ORDER BY (agent_id, chain_id)
SETTINGS index_granularity = 8192;

CREATE TABLE IF NOT EXISTS vigil.vigil_heads ON CLUSTER vigil AS vigil.vigil_heads_local ENGINE = Distributed(vigil, vigil, vigil_heads_local, cityHash64(agent_id));

ALTER TABLE vigil.audit_events_local ON CLUSTER vigil MODIFY TTL toDateTime(time) + INTERVAL 365 DAY;

ALTER TABLE vigil.audit_activity_1m_local ON CLUSTER vigil MODIFY TTL minute + INTERVAL 365 DAY;
