#!/usr/bin/env python3
"""Serving benchmark: point lookups, scans and concurrent clients against a live materialized table.

A job fills a materialized table keyed by `id` with `--rows` rows (a bounded sequence, as fast as
it goes; the table spills past `--memory`), while a second source updates random keys at
`--rate` rows/s for the whole run; it also writes the fill to a Parquet lake table. Once the
table holds every key (as of a completed checkpoint), with the updates still flowing:

- point lookups by primary key: a prepared statement over Flight SQL (ADBC) and POST /v1/query
  over one kept-alive HTTP connection, `--lookups` each: p50 and p99 as the client sees them;
- scans to a pyarrow client over Flight SQL: the materialized table and the lake table (GB/s of
  Arrow data received);
- `--clients` concurrent HTTP clients doing point lookups for `--seconds`: lookups/s and p99
  (the server runs with `--max-concurrent-queries` as many).

The client runs on the same machine and shares its cores with the server.

    python3 benches/serving.py path/to/release/flowline [--rows 10000000] [--rate 100000]
"""
import argparse, http.client, json, os, random, statistics, subprocess, sys, tempfile, threading, time
import urllib.request

import adbc_driver_flightsql.dbapi as flight_sql

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests", "http"))
from common import free_port  # noqa: E402

SCRIPT = """
SET 'execution.checkpointing.interval' = '2s';
CREATE TABLE fill (id BIGINT, v BIGINT, name STRING) WITH (
  'connector' = 'datagen', 'rows-per-second' = '100000000',
  'fields.id.kind' = 'sequence', 'fields.id.start' = '0', 'fields.id.end' = '{last}',
  'fields.v.min' = '0', 'fields.v.max' = '1000000', 'fields.name.length' = '16');
CREATE TABLE updates (id BIGINT, v BIGINT, name STRING) WITH (
  'connector' = 'datagen', 'rows-per-second' = '{rate}',
  'fields.id.min' = '0', 'fields.id.max' = '{last}',
  'fields.v.min' = '0', 'fields.v.max' = '1000000', 'fields.name.length' = '16');
CREATE TABLE lake (id BIGINT, v BIGINT, name STRING)
  WITH ('connector' = 'filesystem', 'path' = '{lake}', 'format' = 'parquet');
INSERT INTO lake SELECT id, v, name FROM fill;
CREATE MATERIALIZED TABLE kv (PRIMARY KEY (id) NOT ENFORCED)
AS SELECT id, v, name FROM fill UNION ALL SELECT id, v, name FROM updates;
"""


def post(port, sql, timeout=600):
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/query", data=sql.encode())
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.read().decode()


def metric(port, name):
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    return sum(float(l.split()[-1]) for l in text.splitlines() if l.startswith(name))


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("binary")
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--rate", type=int, default=100_000)
    ap.add_argument("--memory", default="2GB")
    ap.add_argument("--lookups", type=int, default=2000)
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--seconds", type=float, default=10.0)
    args = ap.parse_args()
    d = tempfile.mkdtemp(prefix="flowline-serving-")
    script = os.path.join(d, "serving.sql")
    with open(script, "w") as f:
        f.write(SCRIPT.format(last=args.rows - 1, rate=args.rate, lake=os.path.join(d, "lake")))
    hp, fp = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWLINE_")}
    job = subprocess.Popen([os.path.abspath(args.binary), "run", script, "--http", f"127.0.0.1:{hp}",
                            "--flight", f"127.0.0.1:{fp}", "--state-dir", os.path.join(d, "state"),
                            "--memory", args.memory, "--max-concurrent-queries", str(max(16, args.clients))], cwd=d, env=env, stdout=subprocess.DEVNULL,
                           stderr=open(os.path.join(d, "job.log"), "w"))
    out = {}
    try:
        started = time.time()
        n = 0
        while n < args.rows:
            time.sleep(2)
            if job.poll() is not None:
                sys.exit(f"the job stopped: {open(os.path.join(d, 'job.log')).read()[-2000:]}")
            try:
                n = json.loads(post(hp, "SELECT COUNT(*) AS n FROM kv"))["n"]
            except Exception:
                n = 0
        out["fill"] = f"{args.rows} rows served after {time.time() - started:.1f} s"
        ingested0, t0 = metric(hp, "flowline_source_rows_total"), time.time()

        keys = [random.randrange(args.rows) for _ in range(args.lookups)]
        with flight_sql.connect(f"grpc://127.0.0.1:{fp}", autocommit=True) as conn, conn.cursor() as cur:
            lat = []
            for k in keys:
                s = time.perf_counter()
                cur.execute("SELECT id, v, name FROM kv WHERE id = ?", parameters=(k,))
                rows = cur.fetchall()
                lat.append(time.perf_counter() - s)
                assert len(rows) == 1 and rows[0][0] == k, rows
            out["lookup_flight"] = (statistics.median(lat) * 1e3, pct(lat, 0.99) * 1e3)
            for table in ["kv", "lake"]:
                s = time.perf_counter()
                cur.execute(f"SELECT id, v, name FROM {table}")
                t = cur.fetch_arrow_table()
                el = time.perf_counter() - s
                out[f"scan_{table}"] = (t.num_rows, t.nbytes / el / 1e9, t.num_rows / el / 1e6)
        conn = http.client.HTTPConnection("127.0.0.1", hp, timeout=60)
        lat = []
        for k in keys:
            s = time.perf_counter()
            conn.request("POST", "/v1/query", body=f"SELECT id, v, name FROM kv WHERE id = {k}")
            r = conn.getresponse()
            body = r.read()
            lat.append(time.perf_counter() - s)
            assert r.status == 200 and json.loads(body)["id"] == k, body
        out["lookup_http"] = (statistics.median(lat) * 1e3, pct(lat, 0.99) * 1e3)

        lat, stop, lock, errors = [], threading.Event(), threading.Lock(), [0]

        def client():
            c = http.client.HTTPConnection("127.0.0.1", hp, timeout=60)
            mine = []
            while not stop.is_set():
                k = random.randrange(args.rows)
                s = time.perf_counter()
                try:
                    c.request("POST", "/v1/query", body=f"SELECT v FROM kv WHERE id = {k}")
                    r = c.getresponse()
                    r.read()
                    if r.status != 200:
                        errors[0] += 1
                except Exception:
                    errors[0] += 1
                    c = http.client.HTTPConnection("127.0.0.1", hp, timeout=60)
                mine.append(time.perf_counter() - s)
            with lock:
                lat.extend(mine)

        threads = [threading.Thread(target=client) for _ in range(args.clients)]
        s = time.time()
        for t in threads:
            t.start()
        time.sleep(args.seconds)
        stop.set()
        for t in threads:
            t.join()
        el = time.time() - s
        out["concurrent"] = (len(lat) / el, pct(lat, 0.99) * 1e3, errors[0])
        out["ingest_rate"] = (metric(hp, "flowline_source_rows_total") - ingested0) / (time.time() - t0)
    finally:
        job.terminate()
        job.wait(timeout=60)
    print(f"# serving benchmark: {out['fill']}; updates during the measurements: {out['ingest_rate']:,.0f} rows/s")
    print("| what | result |")
    print("| --- | --- |")
    print(f"| point lookup, Flight SQL prepared statement (ADBC) | p50 {out['lookup_flight'][0]:.2f} ms, p99 {out['lookup_flight'][1]:.2f} ms |")
    print(f"| point lookup, HTTP POST /v1/query (kept-alive) | p50 {out['lookup_http'][0]:.2f} ms, p99 {out['lookup_http'][1]:.2f} ms |")
    for table in ["kv", "lake"]:
        rows, gbs, mrs = out[f"scan_{table}"]
        print(f"| scan of {'the materialized table' if table == 'kv' else 'the lake table'} to pyarrow over Flight SQL | {rows:,} rows, {gbs:.2f} GB/s, {mrs:.1f} M rows/s |")
    qps, p99, errs = out["concurrent"]
    print(f"| {args.clients} concurrent HTTP clients, point lookups | {qps:,.0f} lookups/s, p99 {p99:.1f} ms, {errs} errors |")


if __name__ == "__main__":
    main()
