#!/usr/bin/env python3
"""TPC-H or TPC-DS through the warm query server, side by side with DuckDB on the same Parquet files.

DuckDB (1.5.5, with the `duckdb-extension-tpch` or `duckdb-extension-tpcds` wheel of the same
version) generates the data once as Parquet (one directory per table) and gives the queries
(22 for TPC-H, 99 for TPC-DS). `flowline serve` declares
the tables from a script and answers each query over HTTP as an Arrow IPC stream; DuckDB runs
the same text in-process over views of the same files. Each query runs once to warm both (file
footers cached) and then `--runs` times; the best time counts. Rows are compared after rounding
numbers to 2 decimals (Flink's integer AVG and DuckDB's differ there only in decimals).

    python3 -m venv /tmp/tpc && /tmp/tpc/bin/pip install duckdb==1.5.5 duckdb-extension-tpch==1.5.5 \
        duckdb-extension-tpcds==1.5.5 pyarrow
    /tmp/tpc/bin/python benches/tpc.py path/to/release/flowline [--suite tpcds] [--sf 1] [--data DIR]
"""
import argparse, decimal, glob, math, os, socket, subprocess, sys, time, urllib.error, urllib.request

import duckdb
import pyarrow as pa
import pyarrow.ipc

FLINK_TYPES = {"INTEGER": "INT", "BIGINT": "BIGINT", "VARCHAR": "STRING", "DATE": "DATE", "DOUBLE": "DOUBLE"}


def load(con, suite):
    try:
        con.execute(f"LOAD {suite}")
    except duckdb.Error:
        module = __import__(f"duckdb_extension_{suite}")
        ext = glob.glob(os.path.join(os.path.dirname(module.__file__), "extensions", "*", f"{suite}.duckdb_extension"))
        con.execute(f"LOAD '{ext[0]}'")


def generate(con, suite, sf, data):
    if os.path.exists(os.path.join(data, "done")):
        return
    con.execute(f"CALL {'dbgen' if suite == 'tpch' else 'dsdgen'}(sf={sf})")
    for t in [r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()]:
        os.makedirs(os.path.join(data, t), exist_ok=True)
        con.execute(f"COPY {t} TO '{data}/{t}/{t}.parquet' (FORMAT parquet, ROW_GROUP_SIZE 122880)")
        con.execute(f"DROP TABLE {t}")
    open(os.path.join(data, "done"), "w").close()


def script(con, data):
    """CREATE TABLE statements for the Parquet directories, with the files' own types."""
    out = []
    for t in sorted(os.listdir(data)):
        if not os.path.isdir(os.path.join(data, t)):
            continue
        cols = con.execute(f"DESCRIBE SELECT * FROM read_parquet('{data}/{t}/*.parquet')").fetchall()
        defs = []
        for name, typ, *_ in cols:
            defs.append(f"  {name} {FLINK_TYPES.get(typ, typ)}")
        out.append(f"CREATE TABLE {t} (\n" + ",\n".join(defs) +
                   f"\n) WITH ('connector' = 'filesystem', 'path' = '{data}/{t}', 'format' = 'parquet');\n")
        con.execute(f"CREATE OR REPLACE VIEW {t} AS SELECT * FROM read_parquet('{data}/{t}/*.parquet')")
    return "\n".join(out)


def norm(rows):
    def cell(v):
        if isinstance(v, (int, float, decimal.Decimal)) and not isinstance(v, bool):
            return round(float(v), 2)
        return v
    return [tuple(cell(v) for v in r) for r in rows]


# Flink's AVG, STDDEV_* and VAR_* of an integer column are integers (truncated toward zero).
FLINK_INTEGER_AGGS = ["avg", "stddev_samp", "stddev_pop", "stddev", "var_samp", "var_pop", "variance"]
FLINK_MACROS = [f"CREATE OR REPLACE MACRO flink_{f}(x) AS CASE WHEN first(typeof(x)) IN "
                f"('TINYINT', 'SMALLINT', 'INTEGER', 'BIGINT') THEN trunc({f}(x)) ELSE {f}(x) END"
                for f in FLINK_INTEGER_AGGS]


def with_flink_avg(sql):
    """The query with each AVG, STDDEV_* and VAR_* that is not a window function computed as
    Flink computes it."""
    import re
    out, at = [], 0
    names = "|".join(sorted(FLINK_INTEGER_AGGS, key=len, reverse=True))
    for m in re.finditer(rf"\b({names})\s*\(", sql, re.IGNORECASE):
        depth, i = 1, m.end()
        while i < len(sql) and depth:
            depth += {"(": 1, ")": -1}.get(sql[i], 0)
            i += 1
        if re.match(r"\s*over\b", sql[i:], re.IGNORECASE):
            continue
        out.append(sql[at:m.start()] + f"flink_{m.group(1).lower()}(")
        at = m.end()
    return "".join(out) + sql[at:]


def ask(port, sql):
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/query", data=sql.encode(),
                                 headers={"Accept": "application/vnd.apache.arrow.stream"})
    try:
        with urllib.request.urlopen(req, timeout=600) as r:
            t = pa.ipc.open_stream(r.read()).read_all()
    except urllib.error.HTTPError as e:
        raise RuntimeError(e.read().decode()[:400])
    return list(zip(*[c.to_pylist() for c in t.columns])) if t.num_columns else []


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("binary")
    ap.add_argument("--suite", choices=["tpch", "tpcds"], default="tpch")
    ap.add_argument("--sf", type=float, default=1)
    ap.add_argument("--data", default=None)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--only", default="", help="query numbers, e.g. 1,3,18 or 72-99")
    ap.add_argument("--timeout", default="120s", help="the server's --query-timeout")
    args = ap.parse_args()
    data = os.path.abspath(args.data or f"/tmp/{args.suite}-sf{args.sf:g}")
    os.makedirs(data, exist_ok=True)
    con = duckdb.connect()
    load(con, args.suite)
    t0 = time.time()
    generate(con, args.suite, args.sf, data)
    print(f"data: {data} ({time.time() - t0:.1f} s)", file=sys.stderr)
    init = os.path.join(data, "tables.sql")
    with open(init, "w") as f:
        f.write(script(con, data))
    queries = con.execute(f"SELECT query_nr, query FROM {args.suite}_queries() ORDER BY query_nr").fetchall()
    if args.only:
        wanted = set()
        for part in args.only.split(","):
            lo, _, hi = part.partition("-")
            wanted.update(range(int(lo), int(hi or lo) + 1))
        queries = [q for q in queries if q[0] in wanted]
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    server = subprocess.Popen([args.binary, "serve", "--init", init, "--http", f"127.0.0.1:{port}",
                               "--query-timeout", args.timeout],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                ask(port, "SELECT 1")
                break
            except Exception:
                time.sleep(0.1)
        print(f"{'query':>5} {'flowline s':>10} {'duckdb s':>9} {'ratio':>6}  rows")
        ratios, failed = [], []
        for n, sql in queries:
            sql = sql.strip().rstrip(";")
            want = norm(con.execute(sql).fetchall())
            try:
                got = norm(ask(port, sql))
            except Exception as e:
                print(f"{n:>5} error: {str(e)[:300]}")
                failed.append(n)
                continue
            same = sorted(map(repr, got)) == sorted(map(repr, want))
            flink_avg = False
            if not same and with_flink_avg(sql) != sql:
                try:
                    for macro in FLINK_MACROS:
                        con.execute(macro)
                    want_flink = norm(con.execute(with_flink_avg(sql)).fetchall())
                    flink_avg = same = sorted(map(repr, got)) == sorted(map(repr, want_flink))
                except duckdb.Error:
                    pass
            best_f = best_d = math.inf
            for _ in range(args.runs):
                t = time.perf_counter()
                ask(port, sql)
                best_f = min(best_f, time.perf_counter() - t)
                t = time.perf_counter()
                con.execute(sql).fetchall()
                best_d = min(best_d, time.perf_counter() - t)
            ratios.append(best_f / best_d)
            verdict = "same (with Flink's integer AVG/STDDEV)" if flink_avg else "same" if same else "DIFFERENT"
            print(f"{n:>5} {best_f:>10.3f} {best_d:>9.3f} {best_f / best_d:>6.2f}  {len(got)} {verdict}")
            if not same:
                failed.append(n)
                print(f"      flowline {got[:3]}\n      duckdb   {want[:3]}")
        if ratios:
            geo = math.exp(sum(map(math.log, ratios)) / len(ratios))
            print(f"geometric mean of flowline / duckdb over {len(ratios)} queries: {geo:.2f}x; "
                  f"failed or different: {failed or 'none'}")
    finally:
        server.terminate()
        server.communicate(timeout=30)


if __name__ == "__main__":
    main()
