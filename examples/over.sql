-- OVER aggregations: each order with aggregates over the orders before it. Run from the
-- repository root; no external services:
--   flowline run examples/over.sql
--
-- For each order: the count, total and average price of its currency's orders in the minute up
-- to it (a RANGE frame; ROWS BETWEEN n PRECEDING counts rows instead). Rows come out as the
-- watermark passes their time; the output is append-only. As in Flink, all OVER windows of one
-- SELECT must be the same.

CREATE TABLE orders (
  id INT, currency STRING, price INT, product INT, order_time TIMESTAMP(3),
  WATERMARK FOR order_time AS order_time - INTERVAL '5' SECOND
) WITH ('connector' = 'filesystem', 'path' = 'examples/data/orders.json', 'format' = 'json');

CREATE TABLE out (
  id INT, currency STRING, order_time TIMESTAMP(3), minute_orders BIGINT, minute_total BIGINT, minute_avg DOUBLE
) WITH ('connector' = 'print');

INSERT INTO out
SELECT id, currency, order_time,
  COUNT(*) OVER w,
  SUM(price) OVER w,
  AVG(CAST(price AS DOUBLE)) OVER w
FROM orders
WINDOW w AS (PARTITION BY currency ORDER BY order_time RANGE BETWEEN INTERVAL '1' MINUTE PRECEDING AND CURRENT ROW);
