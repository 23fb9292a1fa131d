#!/usr/bin/env python3
"""Evaluates every expression of expressions.txt and aggregates.txt on Apache Flink 2.3
(PyFlink) and writes expected.tsv: one line per expression with Flink's type (TYPEOF) and its
text when cast to STRING, or `ERROR` when Flink refuses the expression. Not part of CI (Flink is
~850 MB); run it by hand when the lists change:

    python3 -m venv /tmp/flinkenv && /tmp/flinkenv/bin/pip install apache-flink   # needs Java 17
    /tmp/flinkenv/bin/python tests/flink/functions/generate.py

Each expression is planned alone first (fast: no job), then the accepted ones run many to a
SELECT, in batch mode, with the session time zone UTC. tests/it/functions.rs compares Flowline
against expected.tsv.
"""
import os, sys

HERE = os.path.dirname(os.path.abspath(__file__))
VALUES = ("(VALUES (1, 'a', 1.5, TRUE, 'x'), (2, 'b', 2.5, FALSE, 'x'), "
          "(2, CAST(NULL AS STRING), CAST(NULL AS DOUBLE), TRUE, 'y'), (4, 'c', 3.0, CAST(NULL AS BOOLEAN), 'y')) "
          "AS t(i, s, d, b, g)")
CHUNK = 40


def read(name):
    with open(os.path.join(HERE, name)) as f:
        return [l.rstrip("\n") for l in f if l.strip() and not l.startswith("#")]


def columns(e):
    return f"CAST(({e}) AS STRING), TYPEOF({e})"


def main():
    from pyflink.table import EnvironmentSettings, TableEnvironment
    env = TableEnvironment.create(EnvironmentSettings.in_batch_mode())
    env.get_config().set("parallelism.default", "1")
    env.get_config().set("table.local-time-zone", "UTC")
    groups = [("scalar", read("expressions.txt"), ""), ("aggregate", read("aggregates.txt"), f" FROM {VALUES}")]
    out = []
    for kind, exprs, source in groups:
        accepted, results = [], {}
        for e in exprs:
            try:
                env.sql_query(f"SELECT {columns(e)}{source}")
                accepted.append(e)
            except Exception as ex:
                msg = str(ex).split("\n")[0][:150].replace("\t", " ")
                results[e] = ("ERROR", msg)

        def run(chunk):
            try:
                sql = "SELECT " + ", ".join(columns(e) for e in chunk) + source
                with env.execute_sql(sql).collect() as rows:
                    row = list(rows)[0]
                for i, e in enumerate(chunk):
                    text = row[2 * i]
                    results[e] = (row[2 * i + 1], "NULL" if text is None else str(text))
            except Exception as ex:
                if len(chunk) == 1:
                    results[chunk[0]] = ("ERROR", str(ex).split("\n")[0][:150].replace("\t", " "))
                else:
                    run(chunk[: len(chunk) // 2])
                    run(chunk[len(chunk) // 2:])

        for i in range(0, len(accepted), CHUNK):
            run(accepted[i:i + CHUNK])
        for e in exprs:
            t, text = results[e]
            out.append(f"{kind}\t{e}\t{t}\t{text.replace(chr(10), ' ')}")
    with open(os.path.join(HERE, "expected.tsv"), "w") as f:
        f.write("# kind\texpression\tFlink type (TYPEOF) or ERROR\tFlink's text (CAST AS STRING) or its error\n")
        f.write("\n".join(out) + "\n")
    ok = sum(1 for l in out if l.split("\t")[2] != "ERROR")
    print(f"{len(out)} expressions, {ok} accepted by Flink")


if __name__ == "__main__":
    main()
