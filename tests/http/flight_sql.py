#!/usr/bin/env python3
"""Arrow Flight SQL (--flight) with clients nobody on the team wrote, against the real binary:

1. `flowline serve --flight` over the quickstart's lake table, with a token: ADBC's Flight SQL
   driver (DBAPI) runs statements and a prepared statement with a parameter, equal to DuckDB
   over the same files; `adbc_get_objects()` lists the catalog with columns,
   `adbc_get_table_schema` and `adbc_get_table_types` answer; wrong credentials are refused;
   pyarrow.flight, speaking the protocol by hand (basic-auth handshake, a CommandStatementQuery,
   DoGet), gets the same rows, and without a token `Unauthenticated`;
2. a live job: `flowline run --flight` writes a lake table with checkpoints while a client
   counts its rows in a loop; the counts never go down (each is a set of committed files) and
   the last equals the job's output; after SIGKILL and a restart they do not go backwards.

    python3 tests/http/flight_sql.py path/to/flowline
"""
import argparse, os, shutil, signal, socket, subprocess, sys, tempfile, time

import duckdb
import pyarrow.flight as fl

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import Checks, free_port, flight_connect  # noqa: E402

TOKEN = "flight-token-9c4e2a7b1d3f5e6a8b0c"
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def connect(port, password=TOKEN):
    return flight_connect(port, password)


def wait_flight(port, proc, deadline_s=60):
    end = time.time() + deadline_s
    while time.time() < end and proc.poll() is None:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return True
        except OSError:
            time.sleep(0.1)
    return False


def varint(n):
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def field(number, payload):
    """A length-delimited protobuf field."""
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def statement_command(sql):
    """google.protobuf.Any of arrow.flight.protocol.sql.CommandStatementQuery { query = sql }."""
    inner = field(1, sql.encode())
    return field(1, b"type.googleapis.com/arrow.flight.protocol.sql.CommandStatementQuery") + field(2, inner)


def norm(rows):
    return sorted(tuple(None if v is None else str(v) for v in r) for r in rows)


def served_lake(c, binary, d):
    shutil.copytree(os.path.join(ROOT, "examples"), os.path.join(d, "examples"))
    script = os.path.join(d, "examples", "quickstart.sql")
    r = subprocess.run([binary, "run", script], cwd=d, capture_output=True, text=True, timeout=300)
    c.expect(r.returncode == 0, "the quickstart writes its lake table", r.stderr[-600:])
    lake = os.path.join(d, "out", "bids_lake")
    duck = duckdb.connect()
    duck.execute(f"CREATE VIEW bids_lake AS SELECT * FROM read_parquet('{lake}/*/*.parquet', hive_partitioning=true)")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWLINE_")}
    env["FLOWLINE_AUTH_TOKENS"] = TOKEN
    server = subprocess.Popen([binary, "serve", "--init", script, "--flight", f"127.0.0.1:{port}"], cwd=d, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        c.expect(wait_flight(port, server), "flowline serve --flight listens")
        conn = connect(port)
        cur = conn.cursor()
        for what, sql in [
            ("a GROUP BY", "SELECT channel_kind, COUNT(*) AS n, SUM(price_usd) AS total FROM bids_lake GROUP BY channel_kind"),
            ("whole rows with a filter", "SELECT auction, bidder, price_usd, channel_kind FROM bids_lake WHERE bidder % 97 = 3"),
        ]:
            cur.execute(sql)
            got = norm(cur.fetchall())
            want = norm(duck.execute(sql).fetchall())
            c.expect(got == want, f"ADBC statement, {what}: {len(want)} rows equal to DuckDB's", f"{got[:3]} vs {want[:3]}")
        sql = "SELECT COUNT(*), MAX(price_usd) FROM bids_lake WHERE channel_kind = ? AND bidder > ?"
        for kind, bidder in [("apple", 1000), ("google", 1010)]:
            cur.execute(sql, parameters=(kind, bidder))
            got = norm(cur.fetchall())
            want = norm(duck.execute(sql, [kind, bidder]).fetchall())
            c.expect(got == want, f"ADBC prepared statement with parameters ({kind!r}, {bidder}): {got}", f"{got} vs {want}")
        objects = conn.adbc_get_objects().read_all().to_pylist()
        tables = {t["table_name"]: t for cat in objects for s in cat["catalog_db_schemas"] for t in s["db_schema_tables"]}
        columns = [col["column_name"] for col in tables.get("bids_lake", {}).get("table_columns", [])]
        c.expect(tables.get("bids_lake", {}).get("table_type") == "TABLE" and columns[:2] == ["auction", "bidder"]
                 and "channel_kind" in columns and tables.get("bid", {}).get("table_type") == "VIEW",
                 f"adbc_get_objects lists the table with its columns and the view: {sorted(tables)}", str(objects)[:400])
        schema = conn.adbc_get_table_schema("bids_lake")
        c.expect(schema.names == ["auction", "bidder", "price_usd", "expensive", "bid_hour", "date_time", "channel_kind"],
                 "adbc_get_table_schema gives the declared columns", str(schema))
        c.expect(sorted(conn.adbc_get_table_types()) == ["TABLE", "VIEW"], "adbc_get_table_types")
        info = conn.adbc_get_info()
        c.expect(info.get("vendor_name") == "Flowline", f"adbc_get_info names the server: {info.get('vendor_name')}", str(info))
        try:
            cur.execute("SELECT * FROM no_such_table")
            c.expect(False, "an unknown table is an error")
        except Exception as e:
            c.expect("no_such_table" in str(e), "an unknown table is an error naming it", str(e)[:200])
        cur.close()
        conn.close()
        try:
            bad = connect(port, password="wrong")
            bad.cursor().execute("SELECT 1")
            c.expect(False, "ADBC with a wrong token is refused")
        except Exception as e:
            c.expect("UNAUTHENTICATED" in str(e).upper(), "ADBC with a wrong token is refused: Unauthenticated", str(e)[:200])

        # pyarrow.flight, the protocol by hand.
        client = fl.FlightClient(f"grpc://127.0.0.1:{port}")
        header = client.authenticate_basic_token(b"ops", TOKEN.encode())
        options = fl.FlightCallOptions(headers=[header])
        sql = "SELECT channel_kind, COUNT(*) AS n FROM bids_lake GROUP BY channel_kind"
        info = client.get_flight_info(fl.FlightDescriptor.for_command(statement_command(sql)), options)
        table = client.do_get(info.endpoints[0].ticket, options).read_all()
        got = norm(zip(*[col.to_pylist() for col in table.columns]))
        c.expect(got == norm(duck.execute(sql).fetchall()) and info.schema.names == ["channel_kind", "n"],
                 "pyarrow.flight: handshake, GetFlightInfo (schema), DoGet: DuckDB's rows", str(got))
        # CancelQuery of a FlightInfo: nothing runs until its ticket is fetched.
        request = field(1, b"type.googleapis.com/arrow.flight.protocol.sql.ActionCancelQueryRequest") + \
            field(2, field(1, info.serialize()))
        results = list(client.do_action(fl.Action("CancelQuery", request), options))
        # ActionCancelQueryResult { result = CANCEL_RESULT_CANCELLED (1) } in an Any.
        c.expect(len(results) == 1 and results[0].body.to_pybytes().endswith(b"\x08\x01"),
                 "pyarrow.flight: CancelQuery answers Cancelled", str([r.body.to_pybytes() for r in results]))
        try:
            client.get_flight_info(fl.FlightDescriptor.for_command(statement_command(sql)))
            c.expect(False, "pyarrow.flight without a token is refused")
        except fl.FlightUnauthenticatedError:
            c.expect(True, "pyarrow.flight without a token: FlightUnauthenticatedError")
    finally:
        server.terminate()
        err = server.communicate(timeout=30)[1]
    if c.failed:
        print("server stderr:", err[-1500:])


LIVE = """
SET 'execution.checkpointing.interval' = '300ms';
SET 'parallelism.default' = '2';
CREATE TABLE gen (id BIGINT, v BIGINT) WITH (
  'connector' = 'datagen', 'number-of-rows' = '{rows}', 'rows-per-second' = '{rate}',
  'fields.id.kind' = 'sequence', 'fields.id.start' = '1', 'fields.id.end' = '{rows}');
CREATE TABLE lake (id BIGINT, v BIGINT) WITH ('connector' = 'filesystem', 'path' = '{out}', 'format' = 'parquet');
INSERT INTO lake SELECT id, v FROM gen;
"""


def live_job(c, binary, d):
    rows, rate = 40000, 8000
    script = os.path.join(d, "live.sql")
    with open(script, "w") as f:
        f.write(LIVE.format(rows=rows, rate=rate, out=os.path.join(d, "live_lake")))
    state = os.path.join(d, "live_state")
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWLINE_")}
    counts, restarts = [], 0

    def start():
        port = free_port()
        p = subprocess.Popen([binary, "run", script, "--state-dir", state, "--flight", f"127.0.0.1:{port}"], cwd=d, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        return p, port

    p, port = start()
    killed = False
    deadline = time.time() + 180
    while time.time() < deadline:
        if p.poll() is not None:
            break
        conn = cur = None
        try:
            conn = connect(port)
            cur = conn.cursor()
            while p.poll() is None:
                cur.execute("SELECT COUNT(*), COUNT(DISTINCT id) FROM lake")
                n, distinct = cur.fetchone()
                counts.append((n, distinct, restarts))
                if not killed and n > rows // 3:
                    # SIGKILL mid-run, then the same job resumes from its checkpoint (the
                    # client closed first: ADBC complains closing against a dead server).
                    cur.close()
                    conn.close()
                    cur = conn = None
                    p.send_signal(signal.SIGKILL)
                    p.wait()
                    killed = True
                    restarts += 1
                    p, port = start()
                    break
                time.sleep(0.05)
        except Exception:
            time.sleep(0.1)
        finally:
            # The server may be gone (killed): closing must not complain later, from __del__.
            for h in (cur, conn):
                try:
                    if h is not None:
                        h.close()
                except Exception:
                    pass
    p.wait(timeout=60)
    final = duckdb.connect().execute(f"SELECT COUNT(*) FROM read_parquet('{d}/live_lake/*.parquet')").fetchone()[0]
    ns = [n for n, _, _ in counts]
    monotone = all(a <= b for a, b in zip(ns, ns[1:]))
    whole = all(n == distinct for n, distinct, _ in counts)
    c.expect(p.returncode == 0 and final == rows, f"the live job wrote {final} of {rows} rows across a SIGKILL",
             p.stderr.read()[-400:] if p.stderr else "")
    c.expect(len(counts) >= 5 and monotone and whole and killed,
             f"{len(counts)} counts while it ran (before and after the SIGKILL) never went down, never a row twice: "
             f"{ns[:3]} ... {ns[-3:]}", str(counts[:50]))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("binary")
    args = ap.parse_args()
    binary = os.path.abspath(args.binary)
    c = Checks()
    with tempfile.TemporaryDirectory() as d:
        served_lake(c, binary, d)
        live_job(c, binary, d)
    if c.failed:
        print(f"{c.failed} Flight SQL check(s) failed")
        sys.exit(1)


if __name__ == "__main__":
    main()
