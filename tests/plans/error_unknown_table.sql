-- INSERT INTO an undeclared table names the declared ones.
CREATE TABLE s (a BIGINT) WITH ('connector' = 'datagen', 'number-of-rows' = '10');
INSERT INTO nowhere SELECT a FROM s;
