-- Startup-latency probe: one generated row printed to stdout.
CREATE TABLE one (id BIGINT) WITH ('connector' = 'datagen', 'number-of-rows' = '1', 'fields.id.kind' = 'sequence', 'fields.id.start' = '1', 'fields.id.end' = '1');
CREATE TABLE out (id BIGINT) WITH ('connector' = 'print');
INSERT INTO out SELECT id FROM one;
