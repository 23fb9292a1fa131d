-- An OVER window must be ordered by a time attribute: MAX(ts) of a group aggregation is not one.
CREATE TABLE s (k STRING, v BIGINT, ts TIMESTAMP(3), WATERMARK FOR ts AS ts) WITH ('connector' = 'datagen', 'number-of-rows' = '10');
CREATE TABLE o (k STRING, running BIGINT) WITH ('connector' = 'print');
CREATE VIEW latest AS SELECT k, MAX(v) AS v, MAX(ts) AS ts FROM s GROUP BY k;
INSERT INTO o SELECT k, SUM(v) OVER (PARTITION BY k ORDER BY ts ROWS BETWEEN 2 PRECEDING AND CURRENT ROW) FROM latest;
