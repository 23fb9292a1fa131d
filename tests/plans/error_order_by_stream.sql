-- ORDER BY over an unbounded stream is refused, naming the alternatives.
CREATE TABLE s (a BIGINT) WITH ('connector' = 'datagen');
CREATE TABLE o (a BIGINT) WITH ('connector' = 'blackhole');
INSERT INTO o SELECT a FROM s ORDER BY a;
