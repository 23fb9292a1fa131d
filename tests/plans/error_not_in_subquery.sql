-- NOT IN over a subquery is refused (a NULL in the subquery empties the result); NOT EXISTS is the alternative.
CREATE TABLE s (a BIGINT) WITH ('connector' = 'datagen', 'number-of-rows' = '10');
CREATE TABLE t (b BIGINT) WITH ('connector' = 'datagen', 'number-of-rows' = '10');
CREATE TABLE o (a BIGINT) WITH ('connector' = 'blackhole');
INSERT INTO o SELECT a FROM s WHERE a NOT IN (SELECT b FROM t);
