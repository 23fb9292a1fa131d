-- A group aggregation: an updating result, into a sink that takes updates (print).
CREATE TABLE s (k STRING, v BIGINT) WITH ('connector' = 'datagen', 'number-of-rows' = '10');
CREATE TABLE o (k STRING, n BIGINT, total BIGINT) WITH ('connector' = 'print');
INSERT INTO o SELECT k, COUNT(*), SUM(v) FROM s GROUP BY k;
