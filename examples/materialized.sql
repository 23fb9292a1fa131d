-- A materialized table served while the job runs: counts per key of what is posted to HTTP
-- ingest, as of the last completed checkpoint.
--   flowline run examples/materialized.sql --http 127.0.0.1:9249 --flight 127.0.0.1:9250
--   curl -s --data-binary '{"k": 3, "r": 1}' http://127.0.0.1:9249/v1/ingest/events
--   curl -s --data-binary "SELECT * FROM counts WHERE k = 3" http://127.0.0.1:9249/v1/query
SET 'execution.checkpointing.interval' = '1s';

CREATE TABLE events (k INT, r BIGINT) WITH ('connector' = 'http');

CREATE MATERIALIZED TABLE counts (PRIMARY KEY (k) NOT ENFORCED)
  FRESHNESS = INTERVAL '1' SECOND
AS SELECT k, COUNT(*) AS n, MAX(r) AS last_round FROM events GROUP BY k;
