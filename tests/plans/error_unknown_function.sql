-- A function Flowline does not have is named, with its position.
CREATE TABLE s (a BIGINT) WITH ('connector' = 'datagen', 'number-of-rows' = '10');
CREATE TABLE o (a BIGINT) WITH ('connector' = 'blackhole');
INSERT INTO o SELECT NO_SUCH_FUNCTION(a) FROM s;
