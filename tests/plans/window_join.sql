-- A window join (and its semi-join form, as DataFusion rewrites IN).
CREATE TABLE l (k STRING, v BIGINT, ts TIMESTAMP(3), WATERMARK FOR ts AS ts) WITH ('connector' = 'datagen', 'number-of-rows' = '10');
CREATE TABLE r (k STRING, w BIGINT, ts TIMESTAMP(3), WATERMARK FOR ts AS ts) WITH ('connector' = 'datagen', 'number-of-rows' = '10');
CREATE TABLE joined (k STRING, v BIGINT, w BIGINT, ws TIMESTAMP(3)) WITH ('connector' = 'blackhole');
CREATE TABLE semi (k STRING, v BIGINT) WITH ('connector' = 'blackhole');
INSERT INTO joined SELECT L.k, L.v, R.w, L.window_start
FROM (SELECT * FROM TABLE(TUMBLE(TABLE l, DESCRIPTOR(ts), INTERVAL '10' SECOND))) L
JOIN (SELECT * FROM TABLE(TUMBLE(TABLE r, DESCRIPTOR(ts), INTERVAL '10' SECOND))) R
ON L.k = R.k AND L.window_start = R.window_start AND L.window_end = R.window_end;
INSERT INTO semi SELECT L.k, L.v
FROM (SELECT * FROM TABLE(TUMBLE(TABLE l, DESCRIPTOR(ts), INTERVAL '10' SECOND))) L
WHERE L.k IN (SELECT R.k FROM (SELECT * FROM TABLE(TUMBLE(TABLE r, DESCRIPTOR(ts), INTERVAL '10' SECOND))) R
  WHERE L.window_start = R.window_start AND L.window_end = R.window_end);
