-- Database and users for Vigil on a ClickHouse with SQL access control (20.x and later).
-- On 18.16, define the same users in users.xml. Replace the passwords.
CREATE DATABASE IF NOT EXISTS vigil;

-- The agents: run migrations (create tables and views; ALTER covers MODIFY TTL and dropping
-- expired partitions)
-- and insert events.
CREATE USER IF NOT EXISTS vigil_writer IDENTIFIED WITH sha256_password BY 'change-me-writer';
GRANT CREATE TABLE, CREATE VIEW, ALTER, INSERT, SELECT ON vigil.* TO vigil_writer;

-- Grafana, `vigil events`, `vigil verify` and `vigil forensics`: read only. Grafana's
-- plugin must be able to set max_execution_time, so use readonly = 2, not 1.
CREATE USER IF NOT EXISTS vigil_reader IDENTIFIED WITH sha256_password BY 'change-me-reader'
    SETTINGS readonly = 2;
GRANT SELECT ON vigil.* TO vigil_reader;
