#!/usr/bin/env python3
"""POST /v1/query as a client sees it, against the real binary, with DuckDB as the oracle:

1. `flowline run --http` of the quickstart writes its partitioned Parquet lake table; then
   `flowline serve --init` serves it, with a token: queries (partition filters, aggregates,
   joins with a file named as a table) answer as JSON lines, CSV and Arrow IPC streams, each equal
   to DuckDB's answer over the same files; `flowline query --connect` prints what `flowline
   query` prints;
2. errors are JSON with a status: bad SQL and unknown tables 400, an unknown Accept 406, no token
   401;
3. limits: rows and memory (422 before any row), time (504, and the query stops), concurrency (429 while a slow answer is being
   read; the slot is back once its client disconnects, which cancels the query).

    python3 tests/http/query_http.py path/to/flowline
"""
import argparse, csv, decimal, io, json, os, shutil, socket, subprocess, sys, tempfile, time
import http.client, urllib.error, urllib.request

import duckdb
import pyarrow as pa
import pyarrow.ipc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import Checks, free_port  # noqa: E402

TOKEN = "query-token-5e1d8c2b7a9f4e3d6c0b"
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def query(port, sql, accept=None, token=TOKEN, timeout=60):
    headers = {"Content-Type": "text/plain"}
    if accept:
        headers["Accept"] = accept
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/query", data=sql.encode(), headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            try:
                return r.status, r.headers.get("Content-Type", ""), r.read()
            except http.client.IncompleteRead as e:
                # The server ended the answer early (an error after rows were sent).
                return "cut", r.headers.get("Content-Type", ""), e.partial
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type", ""), e.read()
    except (urllib.error.URLError, OSError) as e:
        return None, "", repr(e).encode()


def cell(v):
    """A value as comparable text: NULL as None, booleans lower case, numbers canonical."""
    if v is None or v == "":
        return None
    if isinstance(v, bool):
        return "true" if v else "false"
    t = str(v)
    try:
        d = decimal.Decimal(t)
        return format(d.normalize(), "f") if d.is_finite() else t
    except decimal.InvalidOperation:
        return t


def rows_of(kind, body):
    """An answer's rows as sorted tuples of comparable text."""
    if kind == "json":
        rows = [tuple(json.loads(l, parse_float=decimal.Decimal).values()) for l in body.decode().splitlines() if l]
    elif kind == "csv":
        rows = [tuple(r) for r in list(csv.reader(io.StringIO(body.decode())))[1:]]
    else:
        t = pa.ipc.open_stream(body).read_all()
        rows = list(zip(*[c.to_pylist() for c in t.columns])) if t.num_columns else []
    return norm(rows)


def norm(rows):
    return sorted(tuple(cell(v) for v in r) for r in rows)


def cpu_seconds(pid):
    """User + system CPU seconds process `pid` has used."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def serve(binary, d, script, flags, token=None):
    """`flowline serve` of the script's tables with `flags` (tokens: `token`), once it answers."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWLINE_")}
    if token:
        env["FLOWLINE_AUTH_TOKENS"] = token
    server = subprocess.Popen([binary, "serve", "--init", script, "--http", f"127.0.0.1:{port}", *flags],
                              cwd=d, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while time.time() < deadline and server.poll() is None and query(port, "SELECT 1", token=token, timeout=2)[0] != 200:
        time.sleep(0.1)
    return server, port


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("binary")
    args = ap.parse_args()
    binary = os.path.abspath(args.binary)
    c = Checks()
    with tempfile.TemporaryDirectory() as d:
        shutil.copytree(os.path.join(ROOT, "examples"), os.path.join(d, "examples"))
        script = os.path.join(d, "examples", "quickstart.sql")
        r = subprocess.run([binary, "run", script], cwd=d, capture_output=True, text=True, timeout=300)
        c.expect(r.returncode == 0, "the quickstart writes its lake table", r.stderr[-600:])
        lake = os.path.join(d, "out", "bids_lake")
        with open(os.path.join(d, "auctions.csv"), "w") as f:
            f.write("auction,label\n")
            for a in range(1000, 1100):
                f.write(f"{a},a{a % 7}\n")
        duck = duckdb.connect()
        duck.execute(f"CREATE VIEW bids_lake AS SELECT * FROM read_parquet('{lake}/*/*.parquet', hive_partitioning=true)")
        duck.execute(f"CREATE VIEW labels AS SELECT * FROM read_csv('{d}/auctions.csv', header=true)")

        env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWLINE_")}
        server, port = serve(binary, d, script, ["--max-concurrent-queries", "2"], TOKEN)
        try:
            queries = [
                ("rows", "SELECT COUNT(*) AS n FROM bids_lake", "SELECT COUNT(*) AS n FROM bids_lake"),
                ("a partition filter", "SELECT COUNT(*), SUM(price_usd) FROM bids_lake WHERE channel_kind = 'apple'",
                 "SELECT COUNT(*), SUM(price_usd) FROM bids_lake WHERE channel_kind = 'apple'"),
                ("group by the partition column",
                 "SELECT channel_kind, COUNT(*) AS bids, MAX(price_usd) AS top FROM bids_lake GROUP BY channel_kind",
                 "SELECT channel_kind, COUNT(*) AS bids, MAX(price_usd) AS top FROM bids_lake GROUP BY channel_kind"),
                ("whole rows with a filter on a file column",
                 "SELECT auction, bidder, price_usd, expensive, channel_kind FROM bids_lake WHERE bidder % 97 = 3",
                 "SELECT auction, bidder, price_usd, expensive, channel_kind FROM bids_lake WHERE bidder % 97 = 3"),
                ("a join with a CSV file named as a table",
                 f"SELECT l.label, COUNT(*) AS n FROM bids_lake b JOIN '{d}/auctions.csv' l ON b.auction = l.auction GROUP BY l.label",
                 "SELECT l.label, COUNT(*) AS n FROM bids_lake b JOIN labels l ON b.auction = l.auction GROUP BY l.label"),
                ("an empty answer", "SELECT auction FROM bids_lake WHERE bidder < 0",
                 "SELECT auction FROM bids_lake WHERE bidder < 0"),
            ]
            for what, sql, oracle in queries:
                want = norm(duck.execute(oracle).fetchall())
                for kind, accept in [("json", None), ("csv", "text/csv"), ("arrow", "application/vnd.apache.arrow.stream")]:
                    status, ctype, body = query(port, sql, accept)
                    got = rows_of(kind, body) if status == 200 else body[:300]
                    c.expect(status == 200 and got == want, f"{what} as {kind}: {len(want)} rows equal to DuckDB's",
                             f"{status} {ctype} got {str(got)[:300]} want {str(want)[:300]}")

            # flowline query --connect prints what flowline query prints.
            sql = "SELECT channel_kind, COUNT(*) AS bids FROM bids_lake GROUP BY channel_kind ORDER BY channel_kind"
            remote_env = dict(env, FLOWLINE_TOKEN=TOKEN)
            for fmt in ["table", "csv", "json"]:
                remote = subprocess.run([binary, "query", "--connect", f"http://127.0.0.1:{port}", "--format", fmt, sql],
                                        cwd=d, env=remote_env, capture_output=True, text=True, timeout=60)
                local = subprocess.run([binary, "query", "--init", script, "--format", fmt, sql],
                                       cwd=d, capture_output=True, text=True, timeout=120)
                c.expect(remote.returncode == 0 and remote.stdout == local.stdout and remote.stdout.strip(),
                         f"query --connect --format {fmt} prints what query prints", remote.stderr[-300:] + local.stderr[-300:])
            denied = subprocess.run([binary, "query", "--connect", f"http://127.0.0.1:{port}", "SELECT 1"],
                                    cwd=d, env=env, capture_output=True, text=True, timeout=60)
            c.expect(denied.returncode != 0 and "401" in denied.stderr and "FLOWLINE_TOKEN" in denied.stderr,
                     "query --connect without a token: 401, naming FLOWLINE_TOKEN", denied.stderr[-300:])

            # Errors.
            for what, sql, accept, token, code, needle in [
                ("bad SQL", "SELEC 1", None, TOKEN, 400, "SELEC"),
                ("an unknown table", "SELECT * FROM nope", None, TOKEN, 400, "nope"),
                ("two statements", "SELECT 1; SELECT 2", None, TOKEN, 400, "one SELECT"),
                ("an unknown Accept", "SELECT 1", "image/png", TOKEN, 406, "text/csv"),
                ("an empty body", "  ", None, TOKEN, 400, "no SQL"),
                ("no token", "SELECT COUNT(*) FROM bids_lake", None, None, 401, "credentials"),
            ]:
                status, ctype, body = query(port, sql, accept, token)
                msg = json.loads(body).get("error", "") if "application/json" in ctype else body[:200]
                c.expect(status == code and needle in msg, f"{what}: {code}, JSON error naming the problem", f"{status} {body[:300]!r}")

            # Concurrency: two slow answers being read fill the server; a third is 429. Closing
            # one (the client goes away) cancels its query and frees its slot.
            slow = "SELECT a.auction, b.bidder FROM bids_lake a CROSS JOIN bids_lake b"
            conns = []
            for _ in range(2):
                h = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                h.request("POST", "/v1/query", body=slow, headers={"Authorization": f"Bearer {TOKEN}"})
                resp = h.getresponse()
                resp.read(10)
                conns.append((h, resp))
            status, _, body = query(port, "SELECT 1")
            c.expect(status == 429, "a third query while two answers are read: 429", f"{status} {body[:200]!r}")
            conns[0][0].sock.close()
            conns[0][0].close()
            deadline, status = time.time() + 20, None
            while time.time() < deadline:
                status = query(port, "SELECT 1")[0]
                if status == 200:
                    break
                time.sleep(0.2)
            c.expect(status == 200, "a client that disconnects gives its slot back", f"{status}")
            conns[1][0].close()
        finally:
            server.terminate()
            err = server.communicate(timeout=30)[1]
        if c.failed:
            print("server stderr:", err[-1500:])

        # The time and row limits.
        server, port = serve(binary, d, script, ["--query-timeout", "500ms", "--query-max-rows", "5000"])
        try:
            t0 = time.time()
            # (A filter over the rows: the files' statistics answer a bare COUNT(*) at once.)
            status, ctype, body = query(port, "SELECT COUNT(*) FROM bids_lake a CROSS JOIN bids_lake b CROSS JOIN bids_lake c "
                                        "WHERE a.bidder + b.bidder > c.bidder", token=None)
            took = time.time() - t0
            c.expect(status == 504 and "--query-timeout" in json.loads(body)["error"] and took < 10,
                     f"a query past --query-timeout 500ms: 504 after {took:.1f} s", f"{status} {body[:200]!r}")
            # ... and it stops computing (a cross join makes many batches from each input batch;
            # unless every operator yields, the task never sees that it was cancelled).
            time.sleep(0.5)
            before = cpu_seconds(server.pid)
            time.sleep(2)
            spent = cpu_seconds(server.pid) - before
            c.expect(spent < 0.5, f"the timed-out query stops: the idle server used {spent:.2f} CPU s in 2 s")
            # Over the row limit: a 400 if the first batch shows it, else the answer is cut off
            # (never a whole-looking 200).
            status, ctype, body = query(port, "SELECT auction FROM bids_lake", token=None)
            c.expect((status == 422 and "--query-max-rows" in json.loads(body)["error"])
                     or (status == "cut" and len(body.splitlines()) <= 5000),
                     f"an answer over --query-max-rows 5000 (9200 rows) is refused or cut off ({status})",
                     f"{status} {body[:200]!r}")
            status, _, body = query(port, "SELECT auction FROM bids_lake LIMIT 5000", token=None)
            c.expect(status == 200 and len(body.splitlines()) == 5000, "5000 rows are within it", f"{status}")
        finally:
            server.terminate()
            server.communicate(timeout=30)

        # The memory limit: a hash join's build side cannot spill.
        server, port = serve(binary, d, script, ["--query-memory", "32KB"])
        try:
            status, ctype, body = query(port, "SELECT COUNT(*) FROM bids_lake a JOIN bids_lake b ON a.bidder = b.bidder AND a.auction <> b.auction",
                                        token=None)
            c.expect(status == 422 and "--query-memory" in json.loads(body)["error"],
                     "a join over --query-memory 32KB: 422 naming the limit, the server lives on", f"{status} {body[:300]!r}")
            status, _, body = query(port, "SELECT COUNT(*) FROM bids_lake", token=None)
            c.expect(status == 200, "the next query is answered", f"{status} {body[:200]!r}")
        finally:
            server.terminate()
            server.communicate(timeout=30)
    if c.failed:
        print(f"{c.failed} query check(s) failed")
        sys.exit(1)


if __name__ == "__main__":
    main()
