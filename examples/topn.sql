-- TopN and deduplication: the 3 highest bids of each of a few auctions (Nexmark q19 shape), and
-- the last bid of each bidder (q18 shape), as changelogs on stdout; then the same per 100 ms
-- window (window TopN: append-only, one row set per window when it closes), written to a JSON
-- file table. No external services needed.
--   flowline run examples/topn.sql

SET 'parallelism.default' = '1';

CREATE TABLE nexmark (
  event_type INT,
  person ROW<id BIGINT, name VARCHAR, emailAddress VARCHAR, creditCard VARCHAR, city VARCHAR, state VARCHAR, dateTime TIMESTAMP(3), extra VARCHAR>,
  auction ROW<id BIGINT, itemName VARCHAR, description VARCHAR, initialBid BIGINT, reserve BIGINT, dateTime TIMESTAMP(3), expires TIMESTAMP(3), seller BIGINT, category BIGINT, extra VARCHAR>,
  bid ROW<auction BIGINT, bidder BIGINT, price BIGINT, channel VARCHAR, url VARCHAR, dateTime TIMESTAMP(3), extra VARCHAR>,
  dateTime AS CASE WHEN event_type = 0 THEN person.dateTime WHEN event_type = 1 THEN auction.dateTime ELSE bid.dateTime END,
  WATERMARK FOR dateTime AS dateTime - INTERVAL '4' SECOND
) WITH ('connector' = 'nexmark', 'events.num' = '5000', 'first-event.rate' = '10000', 'base-time' = '2026-01-01 00:00:00', 'seed' = '42');

CREATE VIEW bid AS SELECT bid.auction, bid.bidder, bid.price, bid.channel, dateTime FROM nexmark WHERE event_type = 2;

CREATE TABLE top_bids (auction BIGINT, bidder BIGINT, price BIGINT, rank_number BIGINT) WITH ('connector' = 'print', 'print-identifier' = 'top3');
CREATE TABLE last_bids (bidder BIGINT, auction BIGINT, price BIGINT, dateTime TIMESTAMP(3)) WITH ('connector' = 'print', 'print-identifier' = 'last');

INSERT INTO top_bids
SELECT auction, bidder, price, rank_number FROM (
  SELECT *, ROW_NUMBER() OVER (PARTITION BY auction ORDER BY price DESC) AS rank_number FROM bid
) WHERE rank_number <= 3 AND auction < 1005;

INSERT INTO last_bids
SELECT bidder, auction, price, dateTime FROM (
  SELECT *, ROW_NUMBER() OVER (PARTITION BY bidder ORDER BY dateTime DESC) AS rn FROM bid
) WHERE rn = 1 AND bidder < 1003;

CREATE TABLE window_top (window_start TIMESTAMP(3), bidder BIGINT, price BIGINT, rownum BIGINT)
  WITH ('connector' = 'filesystem', 'path' = '/tmp/flowline-window-top', 'format' = 'json');

INSERT INTO window_top
SELECT window_start, bidder, price, rownum FROM (
  SELECT window_start, window_end, bidder, price,
         ROW_NUMBER() OVER (PARTITION BY window_start, window_end ORDER BY price DESC) AS rownum
  FROM TABLE(TUMBLE(TABLE bid, DESCRIPTOR(dateTime), INTERVAL '100' MILLISECOND))
) WHERE rownum <= 3;
