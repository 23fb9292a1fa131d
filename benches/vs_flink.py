#!/usr/bin/env python3
"""Per core against Flink: the same Nexmark queries over the same JSON events on Apache Flink
(PyFlink, parallelism 1) and on Flowline (parallelism 1), side by side, blackhole sinks.

    python3 -m venv /tmp/flinkenv && /tmp/flinkenv/bin/pip install apache-flink   # needs Java 17
    /tmp/flinkenv/bin/python benches/vs_flink.py BINARY [--events N] [--only q3,q4]

Each engine reads the events from one JSON-lines file (written once by Flowline's nexmark
connector) with Flink's Nexmark DDL (tests/flink/nexmark.py) and writes each query's result
to a blackhole sink. Each job runs in its own process. The figure is CPU time (user + sys) of all
threads, since Flink uses more than one at parallelism 1: for Flowline the process's rusage, for
Flink the JVM's own process CPU time (/proc/PID/stat of the gateway JVM)
from before the table environment is created to the job's end, so the JVM's start is left out
(Flink's favour) but planning and the MiniCluster's start are in. The ratio is Flink's CPU
seconds over Flowline's for the same events: how many times more work Flowline does per
CPU-second.
"""
import argparse, os, resource, subprocess, sys, tempfile, time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "flink"))
import nexmark  # noqa: E402  (the DDL, views and queries of the Flink comparison)

FLINK_JOB = r"""
import sys
from pyflink.java_gateway import get_gateway
from pyflink.table import EnvironmentSettings, TableEnvironment
# The job runs in the gateway's JVM (a local MiniCluster): its CPU time is the JVM's.
import os
pid = get_gateway().jvm.java.lang.ProcessHandle.current().pid()
def cpu():
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
started = cpu()
env = TableEnvironment.create(EnvironmentSettings.in_streaming_mode())
env.get_config().set("parallelism.default", "1")
env.get_config().set("table.local-time-zone", "UTC")
ddl, query = open(sys.argv[1]).read().split("\n;;\n")
for stmt in ddl.split(";\n"):
    if stmt.strip():
        env.execute_sql(stmt)
if query.strip():
    import re
    schema = env.sql_query(query)._j_table.getResolvedSchema()
    types = [re.sub(r"\s*\*(ROWTIME|PROCTIME)\*|\s+NOT NULL", "", t.toString()) for t in schema.getColumnDataTypes()]
    cols = ", ".join(f"c{i} {t}" for i, t in enumerate(types))
    open(sys.argv[2], "w").write(cols)
    env.execute_sql(f"CREATE TABLE sink ({cols}) WITH ('connector' = 'blackhole')")
    env.execute_sql(f"INSERT INTO sink {query}").wait()
open(sys.argv[2] + ".cpu", "w").write(str(cpu() - started))
"""


def cpu_of(args, env=None):
    """Wall and CPU seconds (user + sys, the process and its children) of running `args`."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.time()
    p = subprocess.run(args, capture_output=True, text=True, env=env)
    wall = time.time() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if p.returncode != 0:
        raise RuntimeError(p.stderr[-1500:])
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("flowline")
    ap.add_argument("--events", type=int, default=5_000_000)
    ap.add_argument("--only", default="q0,q1,q2,q3,q4,q5,q7,q8,q9,q10,q16,q17,q18,q19,q20")
    args = ap.parse_args()
    only = args.only.split(",")
    queries = []
    for line in open(os.path.join(HERE, "..", "tests", "flink", "nexmark_queries.txt")):
        if line.strip() and not line.startswith("#"):
            name, q = line.split(";;", 1)
            if name.strip() in only:
                queries.append((name.strip(), q.strip()))
    with tempfile.TemporaryDirectory() as work:
        events = os.path.join(work, "events")
        gen = os.path.join(work, "generate.sql")
        with open(gen, "w") as f:
            f.write(nexmark.GENERATE.format(events=args.events, path=events))
        subprocess.run([args.flowline, "run", gen, "-p", "1"], check=True, capture_output=True)
        size = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(events) for f in fs)
        ddl = ";\n".join(s.format(path=events) for s in nexmark.DDL)
        job = os.path.join(work, "job.py")
        with open(job, "w") as f:
            f.write(FLINK_JOB)

        cols = os.path.join(work, "cols.txt")

        def flink(q):
            spec = os.path.join(work, "flink.txt")
            with open(spec, "w") as f:
                f.write(ddl + ";\n\n;;\n" + q)
            wall, _ = cpu_of([sys.executable, job, spec, cols])
            return wall, float(open(cols + ".cpu").read())

        print(f"{args.events} events, {size / 1e6:.0f} MB of JSON")
        print(f"{'query':6} {'flink cpu s':>11} {'flowline cpu s':>14} {'ratio':>6} {'flink wall':>10} {'flowline wall':>13}")
        for name, q in queries:
            try:
                fw, fc = flink(q)
            except RuntimeError as e:
                why = [l for l in str(e).splitlines() if "Error" in l or "Exception" in l]
                print(f"{name:6} Flink failed: {(why or [str(e)])[0][:300]}")
                continue
            ow, oc = flowline_run(args.flowline, ddl, name, q, open(cols).read(), work)
            print(f"{name:6} {fc:11.1f} {oc:14.1f} {fc / oc:6.2f} {fw:10.1f} {ow:13.1f}", flush=True)


def flowline_run(binary, ddl, name, q, cols, work):
    """Flowline on the query into a blackhole sink with the columns Flink typed its result as."""
    script = os.path.join(work, f"{name}.sql")
    with open(script, "w") as f:
        f.write(ddl + ";\n")
        f.write(f"CREATE TABLE sink ({cols}) WITH ('connector' = 'blackhole');\nINSERT INTO sink {q};\n")
    return cpu_of([binary, "run", script, "-p", "1"])


if __name__ == "__main__":
    main()
