-- Joins on time: temporal joins (FOR SYSTEM_TIME AS OF) and an interval join. Run from the
-- repository root; no external services:
--   flowline run examples/temporal.sql
--
-- 1. An event-time temporal join: each order with the exchange rate valid at the order's time.
--    `rates` is a versioned table (PRIMARY KEY + WATERMARK); order 3 comes before any EUR rate
--    and order 5 has no GBP rate, so the LEFT JOIN gives them NULL.
-- 2. A lookup join: each order with its product's name, looked up in a bounded table (a CSV
--    file, read whole) when the order is processed (`proc` is a PROCTIME() column).
-- 3. An interval join: each order with the shipments made within a minute of it; an order
--    without one is printed NULL-padded once the watermark passes that minute.

CREATE TABLE orders (
  id INT, currency STRING, price INT, product INT, order_time TIMESTAMP(3),
  proc AS PROCTIME(),
  WATERMARK FOR order_time AS order_time - INTERVAL '5' SECOND
) WITH ('connector' = 'filesystem', 'path' = 'examples/data/orders.json', 'format' = 'json');

CREATE TABLE rates (
  currency STRING, rate DOUBLE, update_time TIMESTAMP(3),
  WATERMARK FOR update_time AS update_time,
  PRIMARY KEY (currency) NOT ENFORCED
) WITH ('connector' = 'filesystem', 'path' = 'examples/data/rates.json', 'format' = 'json');

CREATE TABLE products (id INT, name STRING)
  WITH ('connector' = 'filesystem', 'path' = 'examples/data/products.csv', 'format' = 'csv');

CREATE TABLE shipments (
  sid INT, order_id INT, ship_time TIMESTAMP(3),
  WATERMARK FOR ship_time AS ship_time - INTERVAL '5' SECOND
) WITH ('connector' = 'filesystem', 'path' = 'examples/data/shipments.json', 'format' = 'json');

CREATE TABLE converted (id INT, price INT, currency STRING, rate DOUBLE, amount DOUBLE, order_time TIMESTAMP(3))
  WITH ('connector' = 'print', 'print-identifier' = 'converted');
CREATE TABLE named (id INT, product STRING)
  WITH ('connector' = 'print', 'print-identifier' = 'named');
CREATE TABLE shipped (id INT, sid INT, order_time TIMESTAMP(3), ship_time TIMESTAMP(3))
  WITH ('connector' = 'print', 'print-identifier' = 'shipped');

INSERT INTO converted
SELECT o.id, o.price, o.currency, r.rate, o.price * r.rate, o.order_time
FROM orders AS o
LEFT JOIN rates FOR SYSTEM_TIME AS OF o.order_time AS r ON o.currency = r.currency;

INSERT INTO named
SELECT o.id, p.name
FROM orders AS o
JOIN products FOR SYSTEM_TIME AS OF o.proc AS p ON o.product = p.id;

INSERT INTO shipped
SELECT o.id, s.sid, o.order_time, s.ship_time
FROM orders AS o
LEFT JOIN shipments AS s
  ON o.id = s.order_id AND s.ship_time BETWEEN o.order_time AND o.order_time + INTERVAL '1' MINUTE;
