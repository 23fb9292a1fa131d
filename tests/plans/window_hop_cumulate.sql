-- HOP and CUMULATE windows, into two sinks (two pipelines).
CREATE TABLE s (k STRING, v BIGINT, ts TIMESTAMP(3), WATERMARK FOR ts AS ts)
  WITH ('connector' = 'datagen', 'number-of-rows' = '10');
CREATE TABLE hop_out (ws TIMESTAMP(3), we TIMESTAMP(3), m BIGINT) WITH ('connector' = 'blackhole');
CREATE TABLE cum_out (k STRING, we TIMESTAMP(3), n BIGINT) WITH ('connector' = 'blackhole');
INSERT INTO hop_out SELECT window_start, window_end, MAX(v)
FROM TABLE(HOP(TABLE s, DESCRIPTOR(ts), INTERVAL '5' SECOND, INTERVAL '10' SECOND)) GROUP BY window_start, window_end;
INSERT INTO cum_out SELECT k, window_end, COUNT(DISTINCT v)
FROM TABLE(CUMULATE(TABLE s, DESCRIPTOR(ts), INTERVAL '5' SECOND, INTERVAL '20' SECOND)) GROUP BY k, window_start, window_end;
