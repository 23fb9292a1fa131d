-- An updating result into an append-only sink is refused, naming the sink.
CREATE TABLE s (k STRING, v BIGINT) WITH ('connector' = 'datagen', 'number-of-rows' = '10');
CREATE TABLE o (k STRING, n BIGINT) WITH ('connector' = 'filesystem', 'path' = '/tmp/flowline-plans-never-written', 'format' = 'json');
INSERT INTO o SELECT k, COUNT(*) FROM s GROUP BY k;
