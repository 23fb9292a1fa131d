-- Formats: Nexmark bids written as Avro Object Container Files and as length-delimited protobuf
-- messages (schema in examples/bid.proto), no external service needed. Run from the repository:
--   flowline run examples/formats.sql
-- then read them back (fastavro, protobuf or any Avro/protobuf reader read them too):
--   flowline query --init examples/formats.sql "SELECT COUNT(*) AS bids, MAX(price) AS top, MIN(date_time) AS first FROM bids_avro"
--   flowline query --init examples/formats.sql "SELECT COUNT(*) AS bids, COUNT(url) AS with_url FROM bids_protobuf"
-- The same formats carry Kafka messages: 'value.format' = 'avro-confluent' with
-- 'value.avro-confluent.url', or 'format' = 'protobuf' (docs/connectors.md#formats).

CREATE TABLE nexmark (
  event_type INT,
  bid ROW<auction BIGINT, bidder BIGINT, price BIGINT, channel VARCHAR, url VARCHAR, dateTime TIMESTAMP(3), extra VARCHAR>
) WITH (
  'connector' = 'nexmark',
  'events.num' = '10000',
  'base-time' = '2026-01-01 00:00:00',
  'seed' = '42'
);

CREATE TABLE bids_avro (
  auction BIGINT,
  bidder BIGINT,
  price DECIMAL(12, 2),
  channel STRING,
  url STRING,
  date_time TIMESTAMP(3)
) WITH (
  'connector' = 'filesystem',
  'path' = 'out/bids_avro',
  'format' = 'avro',
  'avro.codec' = 'snappy'
);

CREATE TABLE bids_protobuf (
  auction BIGINT,
  bidder BIGINT,
  price BIGINT,
  channel STRING,
  url STRING,
  date_time_ms BIGINT
) WITH (
  'connector' = 'filesystem',
  'path' = 'out/bids_protobuf',
  'format' = 'protobuf',
  'protobuf.message-class-name' = 'nexmark.Bid',
  'protobuf.proto-file' = 'examples/bid.proto'
);

INSERT INTO bids_avro
SELECT bid.auction, bid.bidder, CAST(bid.price AS DECIMAL(12, 2)) / 100, bid.channel, bid.url, bid.dateTime
FROM nexmark WHERE event_type = 2;

INSERT INTO bids_protobuf
SELECT bid.auction, bid.bidder, bid.price, bid.channel,
       CASE WHEN bid.auction % 2 = 0 THEN bid.url END, UNIX_TIMESTAMP(CAST(bid.dateTime AS STRING)) * 1000
FROM nexmark WHERE event_type = 2;
