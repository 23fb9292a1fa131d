-- Kafka in, windows, Kafka out (needs a broker: set the address below).
--   flowline run examples/kafka.sql
-- Offsets are part of the checkpoints: kill it and run it again, and it resumes where it stopped.
SET 'execution.checkpointing.interval' = '10s';
SET 'table.exec.source.idle-timeout' = '30s';

CREATE TABLE bids (
  auction BIGINT,
  bidder BIGINT,
  price BIGINT,
  part INT METADATA FROM 'partition' VIRTUAL,
  ts TIMESTAMP_LTZ(3) METADATA FROM 'timestamp',
  WATERMARK FOR ts AS ts - INTERVAL '5' SECOND
) WITH (
  'connector' = 'kafka',
  'topic' = 'bids',
  'properties.bootstrap.servers' = '127.0.0.1:9092',
  'properties.group.id' = 'flowline-example',
  'scan.startup.mode' = 'earliest-offset',
  'format' = 'json',
  'json.ignore-parse-errors' = 'true'
);

CREATE TABLE bids_per_auction (
  auction BIGINT,
  window_start TIMESTAMP(3),
  bids BIGINT,
  top_price BIGINT
) WITH (
  'connector' = 'kafka',
  'topic' = 'bids_per_auction',
  'properties.bootstrap.servers' = '127.0.0.1:9092',
  'key.format' = 'json',
  'key.fields' = 'auction',
  'format' = 'json',
  'sink.delivery-guarantee' = 'at-least-once'
);

INSERT INTO bids_per_auction
SELECT auction, window_start, COUNT(*), MAX(price)
FROM TABLE(TUMBLE(TABLE bids, DESCRIPTOR(ts), INTERVAL '1' MINUTE))
GROUP BY auction, window_start, window_end;
