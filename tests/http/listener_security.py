#!/usr/bin/env python3
"""Authentication and TLS on the --http listener, as a client sees them, against the real binary:

1. with tokens configured (FLOWLINE_AUTH_TOKENS or --auth-file), every path answers 401 with a
   JSON error and WWW-Authenticate to a request without a right token (unknown paths too, and
   no answer names a table); the refusals are counted in /metrics; Bearer and basic auth pass;
2. a listener on a non-loopback address without tokens refuses to start, naming --insecure,
   and starts with --insecure;
3. TLS from PEM files (a self-signed certificate made with openssl): a client that trusts it
   gets answers, a plain-HTTP client gets none.

    python3 tests/http/listener_security.py path/to/flowline
"""
import argparse, base64, json, os, socket, ssl, subprocess, sys, tempfile, time
import urllib.error, urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import Checks, free_port  # noqa: E402

PIPELINE = """
CREATE TABLE secret_events (id BIGINT) WITH ('connector' = 'http');
CREATE TABLE out (id BIGINT) WITH ('connector' = 'blackhole');
INSERT INTO out SELECT id FROM secret_events;
"""
TOKEN = "tok-3f1c9a7e5b2d4c6a8e0f1b3d5c7a9e2f"


def request(url, body=None, headers=None, context=None, timeout=5):
    """(status, headers, text); status None when nothing answered."""
    req = urllib.request.Request(url, data=body, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=context) as r:
            return r.status, r.headers, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read().decode()
    except Exception as e:
        return None, None, repr(e)


def start(binary, script, state, http, env_extra=None, args=()):
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWLINE_AUTH")}
    env.update(env_extra or {})
    return subprocess.Popen([binary, "run", script, "--state-dir", state, "--http", http, *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)


def wait_answering(url, proc, context=None, deadline_s=60):
    """Waits until the listener answers anything (401 included); False if the process exited."""
    end = time.time() + deadline_s
    while time.time() < end:
        if proc.poll() is not None:
            return False
        status, _, _ = request(url, context=context, timeout=1)
        if status is not None:
            return True
        time.sleep(0.05)
    return False


def stop(proc):
    proc.terminate()
    try:
        return proc.communicate(timeout=30)[1]
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.communicate()[1]


def refusals(text):
    for line in text.splitlines():
        if line.startswith('flowline_auth_failures_total{listener="http"}'):
            return int(float(line.split()[-1]))
    return None


def tokens(c, binary, d, script):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    p = start(binary, script, os.path.join(d, "s1"), f"127.0.0.1:{port}", {"FLOWLINE_AUTH_TOKENS": TOKEN})
    try:
        c.expect(wait_answering(base + "/healthz", p), "the job with tokens serves", p.stderr.read() if p.poll() is not None else "")
        bearer = {"Authorization": f"Bearer {TOKEN}"}
        before = refusals(request(base + "/metrics", None, bearer)[2])  # the wait's own 401s
        wrong = [
            ("GET /metrics without credentials", base + "/metrics", None, {}),
            ("GET /healthz without credentials", base + "/healthz", None, {}),
            ("POST /v1/ingest/secret_events without credentials", base + "/v1/ingest/secret_events", b'{"id": 1}', {}),
            ("POST /v1/ingest/secret_events with a wrong token", base + "/v1/ingest/secret_events", b'{"id": 1}',
             {"Authorization": "Bearer " + TOKEN[:-1] + "0"}),
            ("POST to an unknown table with a wrong token", base + "/v1/ingest/nope", b'{"id": 1}', {"Authorization": "Bearer nope"}),
            ("GET an unknown path without credentials", base + "/no/such/path", None, {}),
            ("basic auth with a wrong password", base + "/metrics", None,
             {"Authorization": "Basic " + base64.b64encode(b"ops:" + TOKEN.encode()[:-2]).decode()}),
        ]
        for what, url, body, headers in wrong:
            status, h, text = request(url, body, headers)
            is_json = h is not None and "application/json" in h.get("Content-Type", "")
            ok = (status == 401 and is_json and "credentials" in json.loads(text).get("error", "")
                  and h.get("WWW-Authenticate", "").startswith("Bearer") and "secret_events" not in text)
            c.expect(ok, f"{what}: 401, JSON error, WWW-Authenticate, no table named", f"{status} {text!r}")
        status, _, text = request(base + "/v1/ingest/secret_events", b'{"id": 1}\n{"id": 2}\n', bearer)
        c.expect(status == 200, "ingest with the bearer token is taken", f"{status} {text!r}")
        status, _, text = request(base + "/v1/ingest/nope", b'{"id": 1}', bearer)
        c.expect(status == 404 and "secret_events" in text, "with the token, an unknown table is a 404 that lists the tables",
                 f"{status} {text!r}")
        basic = {"Authorization": "Basic " + base64.b64encode(b"ops:" + TOKEN.encode()).decode()}
        status, _, text = request(base + "/metrics", None, basic)
        c.expect(status == 200 and before is not None and refusals(text) - before == len(wrong),
                 f"basic auth (the token as password) reads /metrics, which counts the {len(wrong)} refusals",
                 f"{status}, counted {refusals(text)} - {before}")
    finally:
        stop(p)

    # A token file; one that holds no token stops the start with a message naming it.
    tf = os.path.join(d, "tokens")
    with open(tf, "w") as f:
        f.write("# the ops team\n" + TOKEN + "\n")
    os.chmod(tf, 0o600)
    port = free_port()
    p = start(binary, script, os.path.join(d, "s2"), f"127.0.0.1:{port}", args=["--auth-file", tf])
    try:
        wait_answering(f"http://127.0.0.1:{port}/healthz", p)
        a, _, _ = request(f"http://127.0.0.1:{port}/metrics")
        b, _, _ = request(f"http://127.0.0.1:{port}/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
        c.expect((a, b) == (401, 200), "--auth-file: 401 without the token, 200 with it", f"{a}, {b}")
    finally:
        stop(p)
    with open(tf, "w") as f:
        f.write("# nothing yet\n")
    p = start(binary, script, os.path.join(d, "s3"), f"127.0.0.1:{free_port()}", args=["--auth-file", tf])
    err = p.communicate(timeout=60)[1]
    c.expect(p.returncode != 0 and "holds no token" in err and tf in err, "a token file without tokens is refused, named", err[-400:])


def public_address(c, binary, d, script):
    port = free_port()
    p = start(binary, script, os.path.join(d, "p1"), f"0.0.0.0:{port}")
    try:
        err = p.communicate(timeout=60)[1]
    except subprocess.TimeoutExpired:
        err = stop(p)
    c.expect(p.returncode not in (0, None) and "without authentication" in err and "--insecure" in err,
             "an open listener on 0.0.0.0 refuses to start, naming --insecure", err[-400:])
    port = free_port()
    p = start(binary, script, os.path.join(d, "p2"), f"0.0.0.0:{port}", args=["--insecure"])
    try:
        up = wait_answering(f"http://127.0.0.1:{port}/healthz", p)
        status, _, _ = request(f"http://127.0.0.1:{port}/healthz")
        c.expect(up and status == 200, "with --insecure it serves open", f"{status}")
    finally:
        stop(p)
    port = free_port()
    p = start(binary, script, os.path.join(d, "p3"), f"0.0.0.0:{port}", {"FLOWLINE_AUTH_TOKENS": TOKEN})
    try:
        up = wait_answering(f"http://127.0.0.1:{port}/healthz", p)
        status, _, _ = request(f"http://127.0.0.1:{port}/metrics")
        c.expect(up and status == 401, "with tokens it serves 0.0.0.0 and refuses requests without one", f"{status}")
    finally:
        stop(p)


def tls(c, binary, d, script):
    cert, key = os.path.join(d, "cert.pem"), os.path.join(d, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", key, "-out", cert],
                   check=True, capture_output=True)
    port = free_port()
    p = start(binary, script, os.path.join(d, "t1"), f"127.0.0.1:{port}", {"FLOWLINE_AUTH_TOKENS": TOKEN},
              ["--tls-cert", cert, "--tls-key", key])
    try:
        ctx = ssl.create_default_context(cafile=cert)
        url = f"https://127.0.0.1:{port}"
        up = wait_answering(url + "/healthz", p, context=ctx)
        a, _, _ = request(url + "/metrics", context=ctx)
        b, _, text = request(url + "/v1/ingest/secret_events", b'{"id": 7}', {"Authorization": f"Bearer {TOKEN}"}, context=ctx)
        c.expect(up and (a, b) == (401, 200), "TLS: a client trusting the certificate gets 401 without the token, 200 with it",
                 f"{a}, {b} {text!r}")
        plain, _, _ = request(f"http://127.0.0.1:{port}/healthz")
        c.expect(plain is None, "TLS: a plain-HTTP request gets no answer", f"{plain}")
        untrusting, _, _ = request(url + "/healthz", context=ssl.create_default_context())
        c.expect(untrusting is None, "TLS: a client that does not trust the certificate gets no answer", f"{untrusting}")
    finally:
        stop(p)
    p = start(binary, script, os.path.join(d, "t2"), f"127.0.0.1:{free_port()}", args=["--tls-cert", cert, "--tls-key", cert])
    err = p.communicate(timeout=60)[1]
    c.expect(p.returncode != 0 and "key file" in err and cert in err, "TLS: a key file without a key is refused, named", err[-400:])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("binary")
    args = ap.parse_args()
    c = Checks()
    with tempfile.TemporaryDirectory() as d:
        script = os.path.join(d, "job.sql")
        with open(script, "w") as f:
            f.write(PIPELINE)
        tokens(c, args.binary, d, script)
        public_address(c, args.binary, d, script)
        tls(c, args.binary, d, script)
    if c.failed:
        print(f"{c.failed} listener security check(s) failed")
        sys.exit(1)


if __name__ == "__main__":
    main()
