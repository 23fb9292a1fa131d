-- An OVER aggregation ordered by the time attribute, over a ROWS frame.
CREATE TABLE s (k STRING, v BIGINT, ts TIMESTAMP(3), WATERMARK FOR ts AS ts) WITH ('connector' = 'datagen', 'number-of-rows' = '10');
CREATE TABLE o (k STRING, v BIGINT, running BIGINT) WITH ('connector' = 'blackhole');
INSERT INTO o SELECT k, v, SUM(v) OVER (PARTITION BY k ORDER BY ts ROWS BETWEEN 2 PRECEDING AND CURRENT ROW) FROM s;
