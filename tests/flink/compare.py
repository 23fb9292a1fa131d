#!/usr/bin/env python3
"""Runs every query of queries.txt on Apache Flink (PyFlink) and on Flowline over bids.json and
compares the rows. Not part of CI (Flink is ~850 MB); run it by hand:

    python3 -m venv /tmp/flinkenv && /tmp/flinkenv/bin/pip install apache-flink   # needs Java 17
    /tmp/flinkenv/bin/python tests/flink/compare.py [path/to/flowline]

Each query line is `<sink columns> ;; <SELECT>`: Flowline writes through a JSON filesystem sink
with those columns; Flink collects the rows. Values are normalised (timestamps to
`yyyy-MM-dd HH:mm:ss.SSS`) and compared as sorted multisets.
"""
import glob, json, os, re, shutil, subprocess, sys, tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
FLOWLINE = sys.argv[1] if len(sys.argv) > 1 else os.path.expanduser("~/.cache/flowline-target/release/flowline")
DDL = """CREATE TABLE bids (ts TIMESTAMP(3), item STRING, price INT, WATERMARK FOR ts AS ts - INTERVAL '5' SECOND)
  WITH ('connector'='filesystem', 'path'='{path}', 'format'='json')"""


def norm(v):
    if v is None or v == "NULL":
        return "NULL"
    s = str(v)
    m = re.fullmatch(r"(\d{4}-\d\d-\d\d)[ T](\d\d:\d\d:\d\d)(\.\d+)?", s)
    if m:
        return f"{m.group(1)} {m.group(2)}.{(m.group(3) or '.000')[1:].ljust(3, '0')[:3]}"
    return s


def flink_rows(queries, data):
    from pyflink.table import EnvironmentSettings, TableEnvironment
    env = TableEnvironment.create(EnvironmentSettings.in_streaming_mode())
    env.get_config().set("parallelism.default", "1")
    env.get_config().set("table.local-time-zone", "UTC")
    env.execute_sql(DDL.format(path=data))
    out = []
    for _, q in queries:
        rows = []
        try:
            with env.execute_sql(q).collect() as results:
                rows = ["|".join(norm(v) for v in r) for r in results]
        except Exception as e:  # a query Flink refuses is reported, not fatal
            rows = ["ERROR " + str(e).split("\n")[0][:200]]
        out.append(sorted(rows))
    return out


def flowline_rows(queries, data, work):
    out = []
    for i, (cols, q) in enumerate(queries):
        sink = os.path.join(work, f"out{i}")
        script = os.path.join(work, f"q{i}.sql")
        with open(script, "w") as f:
            f.write(f"{DDL.format(path=data)};\nCREATE TABLE sink ({cols}) WITH ('connector'='filesystem', 'path'='{sink}', 'format'='json');\nINSERT INTO sink {q};\n")
        r = subprocess.run([FLOWLINE, "run", script, "-p", "2"], capture_output=True, text=True)
        names = [c.strip().split(" ")[0] for c in cols.split(",")]
        rows = [] if r.returncode == 0 else ["ERROR " + r.stderr.strip()[:200]]
        for path in glob.glob(sink + "/**/*", recursive=True):
            if os.path.isfile(path) and not os.path.basename(path).startswith("."):
                for line in open(path):
                    d = json.loads(line)
                    rows.append("|".join(norm(d.get(n)) for n in names))
        out.append(sorted(rows))
    return out


def main():
    queries = []
    for line in open(os.path.join(HERE, "queries.txt")):
        if line.strip() and not line.startswith("#"):
            cols, q = line.split(";;")
            queries.append((cols.strip(), q.strip()))
    data = os.path.join(HERE, "bids.json")
    work = tempfile.mkdtemp()
    try:
        ours = flowline_rows(queries, data, work)
        theirs = flink_rows(queries, data)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    failed = 0
    for (_, q), a, b in zip(queries, ours, theirs):
        same = a == b
        failed += not same
        print(("SAME " if same else "DIFF ") + q)
        if not same:
            for row in sorted(set(a) - set(b)):
                print("   flowline only:", row)
            for row in sorted(set(b) - set(a)):
                print("   flink only:   ", row)
    print(f"{len(queries) - failed} of {len(queries)} queries give the same rows")
    sys.exit(1 if failed else 0)


main()
