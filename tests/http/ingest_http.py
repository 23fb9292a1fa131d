#!/usr/bin/env python3
"""HTTP ingest as a client sees it, against the real binary:

1. every error answer is a 4xx (or 503) whose JSON body says what is wrong: unknown path (404),
   wrong method (405 with Allow), unknown table (404), body over the table's limit (413),
   unsupported Content-Encoding (415), bad gzip (400);
2. readiness: the job is restarted from its checkpoint again and again, with both cores busy,
   while a client posts from the first moment /healthz answers. A declared table must never be
   answered 404 (only 503 + Retry-After until it takes rows), /readyz must be 503 until ingest
   takes rows, and every acknowledged row must be in the output exactly once.

    python3 tests/http/ingest_http.py path/to/flowline [--restarts N]
"""
import argparse, collections, gzip, json, multiprocessing, os, signal, socket, subprocess, sys, tempfile, time
import urllib.error, urllib.request

PIPELINE = """
SET 'execution.checkpointing.interval' = '100ms';
SET 'parallelism.default' = '2';
CREATE TABLE events (id BIGINT, payload STRING) WITH ('connector' = 'http', 'ingest.max-body-size' = '{limit}');
CREATE TABLE out (id BIGINT, payload STRING)
  WITH ('connector' = 'filesystem', 'path' = '{out}', 'format' = 'csv', 'sink.rolling-policy.file-size' = '64kb');
INSERT INTO out SELECT id, payload FROM events;
"""
BODY_LIMIT = 64 * 1024

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import free_port  # noqa: E402




def request(port, path, body=None, method=None, headers=None, timeout=5):
    """(status, headers, body text); status None when the server did not answer."""
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.headers, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read().decode()
    except Exception:
        return None, None, None


def error_message(status, headers, text):
    """The 'error' field of a JSON error answer, or a failure description."""
    if headers is None or "application/json" not in headers.get("Content-Type", ""):
        raise AssertionError(f"{status}: not a JSON answer: {text!r}")
    msg = json.loads(text).get("error")
    if not msg:
        raise AssertionError(f"{status}: no 'error' in {text!r}")
    return msg


def start(binary, script, port, state):
    return subprocess.Popen([binary, "run", script, "--http", f"127.0.0.1:{port}", "--state-dir", state],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def wait_live(port, proc, deadline_s=60):
    end = time.time() + deadline_s
    while time.time() < end:
        if proc.poll() is not None:
            raise AssertionError(f"flowline exited with {proc.returncode}: {proc.stderr.read()}")
        if request(port, "/healthz", timeout=1)[0] == 200:
            return
        time.sleep(0.005)
    raise AssertionError("/healthz never answered")


def wait_ready(port, deadline_s=60):
    end = time.time() + deadline_s
    while time.time() < end:
        if request(port, "/readyz", timeout=1)[0] == 200:
            return
        time.sleep(0.01)
    raise AssertionError("/readyz never answered 200")


def check_errors(port):
    cases = []
    st, h, t = request(port, "/nope")
    assert st == 404 and "/nope" in error_message(st, h, t), (st, t)
    cases.append("404 unknown path")
    st, h, t = request(port, "/v1/ingest/events", method="GET")
    assert st == 405 and "POST" in h.get("Allow", ""), (st, dict(h or {}))
    assert "GET" in error_message(st, h, t)
    cases.append("405 with Allow")
    st, h, t = request(port, "/metrics", body=b"x", method="POST")
    assert st == 405 and "GET" in h.get("Allow", ""), (st, dict(h or {}))
    error_message(st, h, t)
    st, h, t = request(port, "/v1/ingest/nosuch", body=b'{"id": 1}\n')
    assert st == 404 and "events" in error_message(st, h, t), (st, t)
    cases.append("404 unknown table")
    st, h, t = request(port, "/v1/ingest/events", body=b"x" * (BODY_LIMIT + 1))
    assert st == 413 and "ingest.max-body-size" in error_message(st, h, t), (st, t)
    cases.append("413 body over the limit")
    big = gzip.compress(b'{"id": 1, "payload": "' + b"a" * (BODY_LIMIT * 2) + b'"}\n')
    st, h, t = request(port, "/v1/ingest/events", body=big, headers={"Content-Encoding": "gzip"})
    assert st == 413 and "decompressed" in error_message(st, h, t), (st, t)
    cases.append("413 after decompression")
    st, h, t = request(port, "/v1/ingest/events", body=b'{"id": 1}\n', headers={"Content-Encoding": "br"})
    assert st == 415 and "br" in error_message(st, h, t), (st, t)
    cases.append("415 Content-Encoding")
    st, h, t = request(port, "/v1/ingest/events", body=b"not gzip", headers={"Content-Encoding": "gzip"})
    assert st == 400 and "gzip" in error_message(st, h, t), (st, t)
    cases.append("400 bad gzip")
    st, h, t = request(port, "/v1/ingest/events", body=b'{"id": "x"}\n')
    assert st == 400, (st, t)
    error_message(st, h, t)
    cases.append("400 bad row")
    print(f"ok   error answers: {', '.join(cases)}")


def busy(stop_at):
    while time.time() < stop_at:
        pass


def readiness(binary, d, restarts, rows_per_request=50):
    out = os.path.join(d, "out")
    script = os.path.join(d, "p.sql")
    with open(script, "w") as f:
        f.write(PIPELINE.format(out=out, limit=BODY_LIMIT))
    state = os.path.join(d, "state")
    port = free_port()
    # Both cores busy for the whole scenario: the window between live and ready grows.
    load = [multiprocessing.Process(target=busy, args=(time.time() + 600,)) for _ in range(os.cpu_count() or 2)]
    for p in load:
        p.start()
    acked, unknown, next_id = set(), set(), 0
    statuses = collections.Counter()
    not_ready_seen = 0
    try:
        proc = start(binary, script, port, state)
        for r in range(restarts):
            wait_live(port, proc)
            # From the first moment the process is live: readiness and ingest must agree, and a
            # declared table is never "not found".
            st, h, t = request(port, "/readyz")
            if st == 503:
                not_ready_seen += 1
                assert h.get("Retry-After"), "503 from /readyz without Retry-After"
                error_message(st, h, t)
            for _ in range(20):
                ids = range(next_id, next_id + rows_per_request)
                next_id += rows_per_request
                body = "".join(f'{{"id": {i}, "payload": "event {i}"}}\n' for i in ids).encode()
                while True:
                    st, h, t = request(port, "/v1/ingest/events", body=body)
                    statuses[st] += 1
                    if st == 404:
                        raise AssertionError(f"404 for the declared table after restart {r}: {t}")
                    if st == 200:
                        acked.update(ids)
                        break
                    if st is None:
                        unknown.update(ids)
                        break
                    assert st in (429, 503), (st, t)
                    assert h.get("Retry-After"), f"{st} without Retry-After"
                    time.sleep(0.01)
            # A clean stop and restart from the final checkpoint, or a kill: alternate.
            if r % 2 == 0:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=60)
            else:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
            proc = start(binary, script, port, state)
        wait_live(port, proc)
        wait_ready(port)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    finally:
        for p in load:
            p.terminate()
    got = collections.Counter()
    for root, _, files in os.walk(out):
        for f in files:
            if not f.startswith("."):
                with open(os.path.join(root, f)) as fh:
                    got.update(int(line.split(",")[0]) for line in fh if line.strip())
    lost = [i for i in acked if got[i] != 1]
    stray = [i for i in got if i not in acked and i not in unknown]
    assert not lost, f"{len(lost)} acknowledged rows missing or doubled (first {sorted(lost)[:5]})"
    assert not stray, f"{len(stray)} rows never sent"
    print(f"ok   readiness under load: {restarts} restarts, {len(acked)} acknowledged rows once each, "
          f"answers {dict(statuses)}, /readyz not ready right after live {not_ready_seen} times, no 404")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("binary")
    ap.add_argument("--restarts", type=int, default=8)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "out")
        script = os.path.join(d, "p.sql")
        with open(script, "w") as f:
            f.write(PIPELINE.format(out=out, limit=BODY_LIMIT))
        port = free_port()
        proc = start(args.binary, script, port, os.path.join(d, "state"))
        try:
            wait_live(port, proc)
            wait_ready(port)
            check_errors(port)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
    with tempfile.TemporaryDirectory() as d:
        readiness(args.binary, d, args.restarts)


if __name__ == "__main__":
    try:
        main()
    except AssertionError as e:
        print(f"FAIL {e}")
        sys.exit(1)
