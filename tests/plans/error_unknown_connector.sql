-- An unknown connector names the known ones.
CREATE TABLE s (a BIGINT) WITH ('connector' = 'kafkaa');
CREATE TABLE o (a BIGINT) WITH ('connector' = 'blackhole');
INSERT INTO o SELECT a FROM s;
