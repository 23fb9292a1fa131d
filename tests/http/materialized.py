#!/usr/bin/env python3
"""Materialized tables under load, through clients nobody on the team wrote, against the real binary.

A job counts events per key into `CREATE MATERIALIZED TABLE counts` (checkpoints every 500 ms)
and also writes them to a Parquet lake table. A client posts rounds to HTTP ingest: each request
holds one event for each of the 10 keys, so every consistent state has all 10 counts equal.
Meanwhile clients query `counts` in a loop over Flight SQL (ADBC's driver) and HTTP:

1. every answer is a state of some checkpoint: the 10 counts are equal (never a half-applied
   interval), never more than the rounds sent, and never lower than an earlier answer, also
   across a SIGKILL of the job and its restart from the checkpoint;
2. after the posting stops, the count equals the rounds acknowledged (each exactly once; a round
   whose answer the crash swallowed may be in too), and the lake table joined with `counts`
   agrees key by key;
3. a prepared statement with a parameter is a primary-key point read; `adbc_get_objects()` lists
   `counts` with its columns; wrong credentials are refused (Flight `Unauthenticated`, HTTP 401);
4. a bounded job's table is served once its input ends, and again after the finished job is run
   again from its final checkpoint, equal to batch SQL over the same input.

    python3 tests/http/materialized.py path/to/flowline
"""
import argparse, json, os, signal, subprocess, sys, tempfile, threading, time
import urllib.error, urllib.request

import adbc_driver_flightsql.dbapi

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import Checks, free_port, flight_connect  # noqa: E402

TOKEN = "mt-token-4b8e1f0a7c2d9e3b5a6f"
KEYS = 10
SCRIPT = """
SET 'execution.checkpointing.interval' = '500ms';
SET 'parallelism.default' = '2';
CREATE TABLE events (k INT, r BIGINT) WITH ('connector' = 'http');
CREATE TABLE lake (k INT, r BIGINT) WITH ('connector' = 'filesystem', 'path' = '{lake}', 'format' = 'parquet');
INSERT INTO lake SELECT k, r FROM events;
CREATE MATERIALIZED TABLE counts (PRIMARY KEY (k) NOT ENFORCED)
AS SELECT k, COUNT(*) AS n, MAX(r) AS last_round FROM events GROUP BY k;
"""


def http(port, path, body, token=TOKEN, accept=None, timeout=10):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if accept:
        headers["Accept"] = accept
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except Exception as e:
        return None, str(e)


def connect(port, password=TOKEN):
    return flight_connect(port, password)


class Job:
    def __init__(self, binary, d):
        self.binary, self.d = binary, d
        self.script = os.path.join(d, "job.sql")
        with open(self.script, "w") as f:
            f.write(SCRIPT.format(lake=os.path.join(d, "lake")))
        self.http, self.flight = free_port(), free_port()
        self.proc = None

    def start(self):
        env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWLINE_")}
        env["FLOWLINE_AUTH_TOKENS"] = TOKEN
        # Subtask 1 registers each checkpoint's table 150 ms after subtask 0: a query that
        # mixed the subtasks' latest tables would see unequal counts a third of the time.
        env["FLOWLINE_FAILPOINTS"] = "materialize.checkpointed.1=sleep150"
        self.proc = subprocess.Popen(
            [self.binary, "run", self.script, "--http", f"127.0.0.1:{self.http}", "--flight",
             f"127.0.0.1:{self.flight}", "--state-dir", os.path.join(self.d, "state")],
            cwd=self.d, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        end = time.time() + 60
        while time.time() < end and self.proc.poll() is None:
            if http(self.http, "/v1/query", b"SELECT COUNT(*) FROM counts", timeout=2)[0] == 200:
                return True
            time.sleep(0.1)
        return False

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self):
        self.proc.terminate()
        try:
            return self.proc.communicate(timeout=30)[1]
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.communicate()[1]


def check_state(rows, what, floor, state, problems):
    """rows: [(k, n)], asked for once answers up to `floor` rounds had been seen. Records a problem
    unless they are a consistent state, not behind `floor`."""
    counts = {k: n for k, n in rows}
    if not counts:
        n = 0
    elif set(counts) != set(range(KEYS)) or len(set(counts.values())) != 1:
        problems.append(f"{what}: a partial state {sorted(counts.items())}")
        return
    else:
        n = next(iter(counts.values()))
    with state["lock"]:
        if n < floor:
            problems.append(f"{what}: went back from {floor} to {n}")
        if n > state["sent"]:
            problems.append(f"{what}: {n} rounds counted, only {state['sent']} sent")
        state["seen"] = max(state["seen"], n)
        state["answers"] += 1


FINISHED = """
SET 'execution.checkpointing.interval' = '1s';
CREATE TABLE nexmark (
  event_type INT,
  bid ROW<auction BIGINT, bidder BIGINT, price BIGINT, channel VARCHAR, url VARCHAR, dateTime TIMESTAMP(3), extra VARCHAR>
) WITH ('connector' = 'nexmark', 'events.num' = '50000', 'seed' = '7');
CREATE MATERIALIZED TABLE per_auction (PRIMARY KEY (auction) NOT ENFORCED)
AS SELECT bid.auction AS auction, COUNT(*) AS bids FROM nexmark WHERE event_type = 2 GROUP BY bid.auction;
"""


def finished_job(c, binary, d):
    """A bounded job's table outlives its input: served once it finishes, and again when the
    finished job is run again (from its final checkpoint), equal to batch SQL over the input."""
    script = os.path.join(d, "finished.sql")
    with open(script, "w") as f:
        f.write(FINISHED)
    want = subprocess.run([binary, "query", "--init", script, "--format", "json",
                           "SELECT COUNT(DISTINCT bid.auction) AS n, COUNT(*) AS bids FROM nexmark WHERE event_type = 2"],
                          cwd=d, capture_output=True, text=True, timeout=120)
    want = json.loads(want.stdout.splitlines()[0]) if want.returncode == 0 else want.stderr
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWLINE_")}
    state = os.path.join(d, "finished-state")
    for attempt in ["once its input ends", "when the finished job is run again"]:
        port = free_port()
        proc = subprocess.Popen([binary, "run", script, "--http", f"127.0.0.1:{port}", "--state-dir", state],
                                cwd=d, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        got, end = None, time.time() + 60
        while time.time() < end:
            status, text = http(port, "/v1/query", b"SELECT COUNT(*) AS n, SUM(bids) AS bids FROM per_auction", token=None)
            got = json.loads(text.splitlines()[0]) if status == 200 else None
            if got == want:
                break
            time.sleep(0.2)
        c.expect(got == want and proc.poll() is None,
                 f"a bounded job's materialized table is served {attempt}: {got}", f"want {want}")
        proc.terminate()
        proc.communicate(timeout=30)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("binary")
    ap.add_argument("--seconds", type=float, default=6.0)
    args = ap.parse_args()
    binary = os.path.abspath(args.binary)
    c = Checks()
    with tempfile.TemporaryDirectory() as d:
        job = Job(binary, d)
        c.expect(job.start(), "the job serves its materialized table", job.proc.stderr.read() if job.proc.poll() is not None else "")
        state = {"lock": threading.Lock(), "sent": 0, "acked": 0, "last_acked": 0, "seen": 0, "answers": 0}
        problems, done = [], threading.Event()

        def post():
            r = 0
            while not done.is_set():
                r += 1
                body = "".join(json.dumps({"k": k, "r": r}) + "\n" for k in range(KEYS)).encode()
                with state["lock"]:
                    state["sent"] += 1
                status, _ = http(job.http, "/v1/ingest/events", body)
                if status in (200, 201, 202, 204):
                    with state["lock"]:
                        state["acked"] += 1
                        state["last_acked"] = r
                else:
                    time.sleep(0.05)  # the job is down or not ready yet
                time.sleep(0.005)

        def query_flight():
            while not done.is_set():
                try:
                    with connect(job.flight) as conn, conn.cursor() as cur:
                        while not done.is_set():
                            floor = state["seen"]
                            cur.execute("SELECT k, n FROM counts")
                            check_state(cur.fetchall(), "Flight SQL", floor, state, problems)
                except Exception:
                    time.sleep(0.1)  # the job is down

        def query_http():
            while not done.is_set():
                floor = state["seen"]
                status, text = http(job.http, "/v1/query", b"SELECT k, n FROM counts")
                if status == 200:
                    rows = [json.loads(line) for line in text.splitlines() if line]
                    check_state([(r["k"], r["n"]) for r in rows], "HTTP", floor, state, problems)
                else:
                    time.sleep(0.1)

        threads = [threading.Thread(target=f) for f in (post, query_flight, query_http)]
        for t in threads:
            t.start()
        time.sleep(args.seconds / 2)
        job.kill()
        seen_before_kill = state["seen"]
        restarted = job.start()
        time.sleep(args.seconds / 2)
        done.set()
        for t in threads:
            t.join()
        c.expect(restarted, "the job restarts after SIGKILL")
        c.expect(not problems, f"{state['answers']} answers (Flight SQL and HTTP, before and after SIGKILL at "
                 f"{seen_before_kill} rounds) are each a whole checkpoint, never behind an earlier one",
                 "; ".join(problems[:5]))
        c.expect(state["answers"] > 20 and state["seen"] > seen_before_kill > 0,
                 f"queries ran throughout ({state['answers']} answers, {seen_before_kill} then {state['seen']} rounds)")

        # Quiet: the count settles at the rounds acknowledged (a round the crash did not answer may be in).
        acked, sent, last_acked = state["acked"], state["sent"], state["last_acked"]
        final, end = None, time.time() + 20
        while time.time() < end:
            status, text = http(job.http, "/v1/query", b"SELECT MIN(n) AS lo, MAX(n) AS hi, MAX(last_round) AS r FROM counts")
            final = json.loads(text.splitlines()[0]) if status == 200 else None
            if final and final["lo"] is not None and final["lo"] >= acked:
                break
            time.sleep(0.2)
        c.expect(final is not None and final["lo"] == final["hi"] and acked <= final["lo"] <= sent
                 and final["r"] >= last_acked,
                 f"every acknowledged round counted once: {final} for {acked} acknowledged of {sent} sent")
        # The lake table, joined with the materialized table, agrees key by key once both settle.
        join = ("SELECT c.k, c.n, COUNT(l.r) AS lake_rows FROM counts c JOIN lake l ON c.k = l.k "
                "GROUP BY c.k, c.n ORDER BY c.k")
        rows, end = [], time.time() + 20
        while time.time() < end:
            with connect(job.flight) as conn, conn.cursor() as cur:
                cur.execute(join)
                rows = cur.fetchall()
            if len(rows) == KEYS and all(n == lake for _, n, lake in rows):
                break
            time.sleep(0.3)
        c.expect(len(rows) == KEYS and all(n == lake for _, n, lake in rows),
                 f"the lake table joined with counts agrees key by key ({rows[:2]} ...)", str(rows))

        with connect(job.flight) as conn, conn.cursor() as cur:
            cur.execute("SELECT k, n FROM counts WHERE k = ?", parameters=(3,))
            got = cur.fetchall()
            c.expect(len(got) == 1 and got[0][0] == 3 and got[0][1] == final["lo"],
                     f"a prepared statement with a parameter reads one key: {got}")
            cur.execute("SELECT k, n FROM counts WHERE k = ?", parameters=(99,))
            c.expect(cur.fetchall() == [], "... and a missing key is no row")
            objects = conn.adbc_get_objects(depth="columns").read_all().to_pylist()
            tables = {t["table_name"]: [col["column_name"] for col in t["table_columns"]]
                      for cat in objects for s in cat["catalog_db_schemas"] or [] for t in s["db_schema_tables"] or []}
            c.expect(tables.get("counts") == ["k", "n", "last_round"],
                     f"adbc_get_objects lists counts with its columns ({sorted(tables)})", str(tables))
        try:
            with connect(job.flight, password="wrong") as conn, conn.cursor() as cur:
                cur.execute("SELECT COUNT(*) FROM counts")
                cur.fetchall()
            c.expect(False, "wrong credentials are refused over Flight SQL", "answered")
        except adbc_driver_flightsql.dbapi.Error as e:
            c.expect("UNAUTHENTICATED" in str(e).upper(), "wrong credentials are refused over Flight SQL (Unauthenticated)", str(e)[:200])
        status, text = http(job.http, "/v1/query", b"SELECT * FROM counts", token="wrong")
        c.expect(status == 401 and "counts" not in text, "... and over HTTP (401, naming no table)", f"{status} {text[:200]}")
        err = job.stop()
        if c.failed:
            print("job stderr:", err[-2000:])
        finished_job(c, binary, d)
    if c.failed:
        print(f"{c.failed} materialized-table check(s) failed")
        sys.exit(1)


if __name__ == "__main__":
    main()
