-- Exactly-once: checkpoints every second; kill -9 at any moment and run again to resume.
--   flowline run examples/exactly_once.sql --http 127.0.0.1:8080
--   curl -XPOST localhost:8080/v1/ingest/events --data-binary $'{"id":1,"name":"a"}\n{"id":2,"name":"b"}'
--   flowline stop examples/exactly_once.sql      # final checkpoint, then exit
SET 'execution.checkpointing.interval' = '1s';

CREATE TABLE bids (
  event_type INT,
  bid ROW<auction BIGINT, bidder BIGINT, price BIGINT, channel STRING, url STRING, dateTime TIMESTAMP(3), extra STRING>,
  dateTime AS bid.dateTime,
  WATERMARK FOR dateTime AS dateTime - INTERVAL '2' SECOND
) WITH ('connector' = 'nexmark', 'events.num' = '5000000', 'first-event.rate' = '100000', 'rate.limited' = 'true');

CREATE TABLE bid_counts (auction BIGINT, window_start TIMESTAMP(3), bids BIGINT, top_price BIGINT)
  WITH ('connector' = 'filesystem', 'path' = 'out/bid_counts', 'format' = 'parquet');

CREATE TABLE events (id BIGINT, name STRING) WITH ('connector' = 'http');
CREATE TABLE events_log (id BIGINT, name STRING) WITH ('connector' = 'filesystem', 'path' = 'out/events', 'format' = 'json');

INSERT INTO bid_counts
SELECT bid.auction, window_start, COUNT(*), MAX(bid.price)
FROM TABLE(TUMBLE(TABLE bids, DESCRIPTOR(dateTime), INTERVAL '10' SECOND))
WHERE event_type = 2
GROUP BY bid.auction, window_start, window_end;

INSERT INTO events_log SELECT id, name FROM events;
