-- Event-time windows over Nexmark bids: no external services needed.
-- 20 000 events at 1 000 events per second of event time (20 s), 4 s watermark delay.
--   flowline run examples/windows.sql
-- Then read the per-window results:
--   flowline query --init examples/windows.sql "SELECT * FROM bids_per_window ORDER BY window_start, bids DESC LIMIT 5"

CREATE TABLE nexmark (
  event_type INT,
  person ROW<id BIGINT, name VARCHAR, emailAddress VARCHAR, creditCard VARCHAR, city VARCHAR, state VARCHAR, dateTime TIMESTAMP(3), extra VARCHAR>,
  auction ROW<id BIGINT, itemName VARCHAR, description VARCHAR, initialBid BIGINT, reserve BIGINT, dateTime TIMESTAMP(3), expires TIMESTAMP(3), seller BIGINT, category BIGINT, extra VARCHAR>,
  bid ROW<auction BIGINT, bidder BIGINT, price BIGINT, channel VARCHAR, url VARCHAR, dateTime TIMESTAMP(3), extra VARCHAR>,
  dateTime AS CASE WHEN event_type = 0 THEN person.dateTime WHEN event_type = 1 THEN auction.dateTime ELSE bid.dateTime END,
  WATERMARK FOR dateTime AS dateTime - INTERVAL '4' SECOND
) WITH (
  'connector' = 'nexmark',
  'events.num' = '20000',
  'first-event.rate' = '1000',
  'base-time' = '2026-01-01 00:00:00',
  'seed' = '42'
);

CREATE VIEW bid AS
SELECT bid.auction AS auction, bid.bidder AS bidder, bid.price AS price, dateTime AS date_time
FROM nexmark WHERE event_type = 2;

-- Bids and the top price per auction in 10-second tumbling windows.
CREATE TABLE bids_per_window (auction BIGINT, window_start TIMESTAMP(3), window_end TIMESTAMP(3), bids BIGINT, top BIGINT)
WITH ('connector' = 'filesystem', 'path' = 'out/bids_per_window', 'format' = 'parquet');

-- Bidder sessions that end after 2 seconds without a bid.
CREATE TABLE sessions (bidder BIGINT, window_start TIMESTAMP(3), window_end TIMESTAMP(3), bids BIGINT)
WITH ('connector' = 'filesystem', 'path' = 'out/sessions', 'format' = 'json');

INSERT INTO bids_per_window
SELECT auction, window_start, window_end, COUNT(*), MAX(price)
FROM TABLE(TUMBLE(TABLE bid, DESCRIPTOR(date_time), INTERVAL '10' SECOND))
GROUP BY auction, window_start, window_end;

INSERT INTO sessions
SELECT bidder, window_start, window_end, COUNT(*)
FROM TABLE(SESSION(TABLE bid PARTITION BY bidder, DESCRIPTOR(date_time), INTERVAL '2' SECOND))
GROUP BY bidder, window_start, window_end;
