-- Flowline quickstart: no external services needed.
-- Generates 10 000 Nexmark events, keeps the bids, enriches them and writes a Parquet lake table
-- partitioned by channel kind. Then read it back with:
--   flowline query --init examples/quickstart.sql "SELECT channel_kind, COUNT(*) AS bids, MAX(price) AS top FROM bids_lake GROUP BY channel_kind"

CREATE TABLE nexmark (
  event_type INT,
  person ROW<id BIGINT, name VARCHAR, emailAddress VARCHAR, creditCard VARCHAR, city VARCHAR, state VARCHAR, dateTime TIMESTAMP(3), extra VARCHAR>,
  auction ROW<id BIGINT, itemName VARCHAR, description VARCHAR, initialBid BIGINT, reserve BIGINT, dateTime TIMESTAMP(3), expires TIMESTAMP(3), seller BIGINT, category BIGINT, extra VARCHAR>,
  bid ROW<auction BIGINT, bidder BIGINT, price BIGINT, channel VARCHAR, url VARCHAR, dateTime TIMESTAMP(3), extra VARCHAR>,
  dateTime AS CASE WHEN event_type = 0 THEN person.dateTime WHEN event_type = 1 THEN auction.dateTime ELSE bid.dateTime END,
  WATERMARK FOR dateTime AS dateTime - INTERVAL '4' SECOND
) WITH (
  'connector' = 'nexmark',
  'events.num' = '10000',
  'first-event.rate' = '1000',
  'base-time' = '2026-01-01 00:00:00',
  'seed' = '42'
);

CREATE VIEW bid AS
SELECT bid.auction AS auction, bid.bidder AS bidder, bid.price AS price, bid.channel AS channel,
       bid.url AS url, dateTime AS date_time
FROM nexmark WHERE event_type = 2;

CREATE TABLE bids_lake (
  auction BIGINT,
  bidder BIGINT,
  price_usd DECIMAL(12, 2),
  expensive BOOLEAN,
  bid_hour STRING,
  date_time TIMESTAMP(3),
  channel_kind STRING
) PARTITIONED BY (channel_kind) WITH (
  'connector' = 'filesystem',
  'path' = 'out/bids_lake',
  'format' = 'parquet'
);

INSERT INTO bids_lake
SELECT
  auction,
  bidder,
  CAST(0.908 * price / 100 AS DECIMAL(12, 2)) AS price_usd,
  price > 1000000 AS expensive,
  DATE_FORMAT(date_time, 'yyyy-MM-dd HH:00') AS bid_hour,
  date_time,
  CASE WHEN channel IN ('Google', 'Facebook', 'Baidu', 'Apple') THEN LOWER(channel) ELSE 'other' END AS channel_kind
FROM bid;
