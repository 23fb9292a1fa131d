-- TopN per key (updating) and deduplication keeping the first row.
CREATE TABLE s (k STRING, v BIGINT, p AS PROCTIME()) WITH ('connector' = 'datagen', 'number-of-rows' = '10');
CREATE TABLE top3 (k STRING, v BIGINT, rn BIGINT) WITH ('connector' = 'print');
CREATE TABLE firsts (k STRING, v BIGINT) WITH ('connector' = 'print');
INSERT INTO top3 SELECT k, v, rn FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY k ORDER BY v DESC) AS rn FROM s) WHERE rn <= 3;
INSERT INTO firsts SELECT k, v FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY k ORDER BY p ASC) AS rn FROM s) WHERE rn = 1;
