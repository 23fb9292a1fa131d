-- UNION ALL: several inputs into one sink.
CREATE TABLE s1 (a BIGINT) WITH ('connector' = 'datagen', 'number-of-rows' = '10');
CREATE TABLE s2 (a BIGINT) WITH ('connector' = 'datagen', 'number-of-rows' = '10');
CREATE TABLE o (a BIGINT) WITH ('connector' = 'blackhole');
INSERT INTO o SELECT a FROM s1 UNION ALL SELECT a + 1 FROM s2;
