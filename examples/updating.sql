-- An updating result: bids per channel, and the highest bid per channel, as a changelog
-- (+I, -U, +U, -D) on stdout. No external services needed.
--   flowline run examples/updating.sql
-- Each batch of input is one mini-batch: a channel touched by many bids emits one -U/+U pair.
-- The same query into Kafka: use a table with 'connector' = 'upsert-kafka' and
-- PRIMARY KEY (channel) NOT ENFORCED (docs/connectors.md).

SET 'parallelism.default' = '1';

CREATE TABLE nexmark (
  event_type INT,
  person ROW<id BIGINT, name VARCHAR, emailAddress VARCHAR, creditCard VARCHAR, city VARCHAR, state VARCHAR, dateTime TIMESTAMP(3), extra VARCHAR>,
  auction ROW<id BIGINT, itemName VARCHAR, description VARCHAR, initialBid BIGINT, reserve BIGINT, dateTime TIMESTAMP(3), expires TIMESTAMP(3), seller BIGINT, category BIGINT, extra VARCHAR>,
  bid ROW<auction BIGINT, bidder BIGINT, price BIGINT, channel VARCHAR, url VARCHAR, dateTime TIMESTAMP(3), extra VARCHAR>
) WITH (
  'connector' = 'nexmark',
  'events.num' = '30000',
  'base-time' = '2026-01-01 00:00:00',
  'seed' = '42'
);

CREATE TABLE per_channel (
  channel STRING,
  bids BIGINT,
  top_price BIGINT,
  bidders BIGINT
) WITH ('connector' = 'print');

INSERT INTO per_channel
SELECT channel, COUNT(*), MAX(price), COUNT(DISTINCT bidder)
FROM (
  SELECT CASE WHEN bid.channel IN ('Apple', 'Google', 'Facebook', 'Baidu') THEN bid.channel ELSE 'other' END AS channel,
         bid.price AS price, bid.bidder AS bidder
  FROM nexmark WHERE event_type = 2
) AS b
GROUP BY channel;
