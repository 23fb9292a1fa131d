-- A misspelt connector option is refused, naming it and the table.
CREATE TABLE s (a BIGINT) WITH ('connector' = 'datagen', 'rows-per-secnd' = '1');
CREATE TABLE o (a BIGINT) WITH ('connector' = 'blackhole');
INSERT INTO o SELECT a FROM s;
