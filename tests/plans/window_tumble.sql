-- A TUMBLE window aggregation: append-only, hash exchange on the key, a watermark at the source.
CREATE TABLE s (k STRING, v BIGINT, ts TIMESTAMP(3), WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)
  WITH ('connector' = 'datagen', 'number-of-rows' = '10');
CREATE TABLE o (k STRING, ws TIMESTAMP(3), n BIGINT, total BIGINT) WITH ('connector' = 'blackhole');
INSERT INTO o SELECT k, window_start, COUNT(*), SUM(v)
FROM TABLE(TUMBLE(TABLE s, DESCRIPTOR(ts), INTERVAL '10' SECOND)) GROUP BY k, window_start, window_end;
