"""Writes the golden changelog files of this folder with Apache Flink (PyFlink 2.3; not in CI):

    /path/to/flink-venv/bin/python tests/flink/changelog/generate.py

An updating aggregation and a TopN over input.json, written by Flink's filesystem sink in each
changelog format (`agg.<format>.json`, `top2.<format>.json`), and their final rows computed by
Flink in batch mode (`*.final.json`). tests/it/changelog_formats.rs replays each file with
Flowline's readers and compares the result with the final rows.
"""
import glob, os, shutil, tempfile

from pyflink.table import EnvironmentSettings, TableEnvironment

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = ("CREATE TABLE src (k STRING, v BIGINT, s STRING, d DECIMAL(10,2), ts TIMESTAMP(3), dt DATE, x DOUBLE) "
       f"WITH ('connector'='filesystem','path'='{HERE}/input.json','format'='json')")
QUERIES = {
    "agg": ("k STRING, c BIGINT, sv BIGINT, ms STRING, sd DECIMAL(38,2), mt TIMESTAMP(3), mdt DATE, mx DOUBLE",
            "SELECT k, COUNT(*), SUM(v), MAX(s), SUM(d), MAX(ts), MIN(dt), MAX(x) FROM src GROUP BY k"),
    "top2": ("k STRING, v BIGINT, s STRING",
             "SELECT k, v, s FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY k ORDER BY v DESC) AS rn FROM src) WHERE rn <= 2"),
}


def write(env, name, cols, fmt, query, out):
    path = os.path.join(out, f"{name}.{fmt}")
    env.execute_sql(f"CREATE TABLE `{name}_{fmt}` ({cols}) WITH ('connector'='filesystem','path'='{path}','format'='{fmt}')")
    env.execute_sql(f"INSERT INTO `{name}_{fmt}` {query}").wait()
    (part,) = glob.glob(os.path.join(path, "part-*"))
    ext = "final" if fmt == "json" else fmt
    shutil.copy(part, os.path.join(HERE, f"{name}.{ext}.json"))


def main():
    with tempfile.TemporaryDirectory() as out:
        stream = TableEnvironment.create(EnvironmentSettings.in_streaming_mode())
        batch = TableEnvironment.create(EnvironmentSettings.in_batch_mode())
        for env in (stream, batch):
            env.get_config().set("parallelism.default", "1")
            env.execute_sql(SRC)
        for name, (cols, query) in QUERIES.items():
            for fmt in ("debezium-json", "canal-json", "maxwell-json"):
                write(stream, name, cols, fmt, query, out)
            write(batch, name, cols, "json", query, out)


if __name__ == "__main__":
    main()
