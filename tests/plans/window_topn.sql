-- Window TopN: append-only, one row set per window.
CREATE TABLE s (k STRING, v BIGINT, ts TIMESTAMP(3), WATERMARK FOR ts AS ts) WITH ('connector' = 'datagen', 'number-of-rows' = '10');
CREATE TABLE o (k STRING, v BIGINT, ws TIMESTAMP(3)) WITH ('connector' = 'blackhole');
INSERT INTO o SELECT k, v, window_start FROM (
  SELECT *, ROW_NUMBER() OVER (PARTITION BY window_start, window_end ORDER BY v DESC) AS rn
  FROM TABLE(TUMBLE(TABLE s, DESCRIPTOR(ts), INTERVAL '10' SECOND))) WHERE rn <= 2;
