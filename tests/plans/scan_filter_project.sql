-- A source, a filter and a projection: one stateless chain, no exchange.
CREATE TABLE s (a BIGINT, b STRING, ts TIMESTAMP(3)) WITH ('connector' = 'datagen', 'number-of-rows' = '10');
CREATE TABLE o (a BIGINT, b STRING) WITH ('connector' = 'blackhole');
INSERT INTO o SELECT a * 2, UPPER(b) FROM s WHERE a > 5;
