-- A regular inner join: two inputs, each hashed on its key; the result is updating-capable.
CREATE TABLE l (id BIGINT, a STRING) WITH ('connector' = 'datagen', 'number-of-rows' = '10');
CREATE TABLE r (id BIGINT, b STRING) WITH ('connector' = 'datagen', 'number-of-rows' = '10');
CREATE TABLE o (id BIGINT, a STRING, b STRING) WITH ('connector' = 'print');
INSERT INTO o SELECT l.id, l.a, r.b FROM l JOIN r ON l.id = r.id;
