-- Flink syntax not supported yet is refused by name.
CREATE TABLE s (a BIGINT) WITH ('connector' = 'datagen', 'number-of-rows' = '10');
CREATE TABLE o (b BOOLEAN) WITH ('connector' = 'blackhole');
INSERT INTO o SELECT a BETWEEN SYMMETRIC 10 AND 1 FROM s;
