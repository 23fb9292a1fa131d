-- An interval join bounded by the time attributes: append-only, watermark-driven.
CREATE TABLE orders (id BIGINT, ts TIMESTAMP(3), WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)
  WITH ('connector' = 'datagen', 'number-of-rows' = '10');
CREATE TABLE shipments (order_id BIGINT, ship_ts TIMESTAMP(3), WATERMARK FOR ship_ts AS ship_ts)
  WITH ('connector' = 'datagen', 'number-of-rows' = '10');
CREATE TABLE o (id BIGINT, ts TIMESTAMP(3), ship_ts TIMESTAMP(3)) WITH ('connector' = 'blackhole');
INSERT INTO o SELECT o.id, o.ts, s.ship_ts FROM orders o, shipments s
WHERE o.id = s.order_id AND s.ship_ts BETWEEN o.ts AND o.ts + INTERVAL '4' HOUR;
