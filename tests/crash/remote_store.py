#!/usr/bin/env python3
"""Checkpoints in object storage: S3 (moto's server) and GCS (gcp-storage-emulator), on loopback.

    tests/crash/remote_store.py BINARY [--kills N]

For each store: the crash harness's pipeline with `execution.checkpointing.dir` set to
`s3://bucket/...` or `gs://bucket/...`, killed with SIGKILL N times and restarted each time, must
commit the rows of a fault-free run (nothing lost, nothing doubled), and the checkpoints must be
in the bucket. The servers come from PyPI (`moto[server]`, `gcp-storage-emulator`).
"""
import argparse, json, os, random, signal, subprocess, sys, tempfile, time, urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from crash import PIPELINE, compare, free_port, rows, run  # noqa: E402


def wait_http(url, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except urllib.error.HTTPError:
            return  # answering
        except Exception:
            time.sleep(0.1)
    sys.exit(f"server at {url} did not start")


def request(method, url, body=None):
    req = urllib.request.Request(url, data=body, method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.read().decode()


def start_s3():
    port = free_port()
    proc = subprocess.Popen(["moto_server", "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    wait_http(endpoint)
    request("PUT", f"{endpoint}/flowlinetest")
    env = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_REGION": "us-east-1",
           "AWS_ENDPOINT": endpoint, "AWS_ALLOW_HTTP": "true"}
    listing = lambda: request("GET", f"{endpoint}/flowlinetest?list-type=2&prefix=ckpt/")
    return proc, "s3://flowlinetest/ckpt", env, listing


def start_gcs():
    port = free_port()
    emulator = os.path.join(os.path.dirname(os.path.abspath(__file__)), "gcs_emulator.py")
    proc = subprocess.Popen([sys.executable, emulator, str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    wait_http(f"{base}/storage/v1/b")
    request("POST", f"{base}/storage/v1/b", json.dumps({"name": "flowlinetest"}).encode())
    key = {"gcs_base_url": base, "disable_oauth": True, "client_email": "", "private_key": "", "private_key_id": ""}
    env = {"GOOGLE_SERVICE_ACCOUNT_KEY": json.dumps(key)}
    listing = lambda: request("GET", f"{base}/storage/v1/b/flowlinetest/o?prefix=ckpt/")
    return proc, "gs://flowlinetest/ckpt", env, listing


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("binary")
    ap.add_argument("--kills", type=int, default=4)
    ap.add_argument("--seed", type=int, default=int(time.time()))
    args = ap.parse_args()
    rnd = random.Random(args.seed)
    print(f"remote checkpoint stores: seed {args.seed}, {args.kills} kills each")
    kw = dict(interval="200ms", events=300_000, rate=100_000)
    ok = True
    with tempfile.TemporaryDirectory() as d:
        ref = os.path.join(d, "ref.sql")
        with open(ref, "w") as f:
            f.write(PIPELINE.format(out=os.path.join(d, "ref"), **kw))
        p = run(args.binary, ref)
        if p.returncode != 0:
            sys.exit(p.stderr)
        expected, _ = rows(os.path.join(d, "ref"))
        for name, start in [("s3", start_s3), ("gcs", start_gcs)]:
            server, url, extra, listing = start()
            try:
                env = dict(os.environ, **extra)
                path = os.path.join(d, f"{name}.sql")
                with open(path, "w") as f:
                    f.write(f"SET 'execution.checkpointing.dir' = '{url}';\n" + PIPELINE.format(out=os.path.join(d, name), **kw))
                for _ in range(args.kills):
                    proc = subprocess.Popen([args.binary, "run", path], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
                    time.sleep(rnd.uniform(0.5, 1.2))
                    proc.send_signal(signal.SIGKILL)
                    proc.wait()
                listed = listing()
                p = run(args.binary, path, env=env)
                if p.returncode != 0:
                    print(f"FAIL {name}: {p.stderr}")
                    ok = False
                    continue
                if "chk-" not in listed or "manifest" not in listed:
                    print(f"FAIL {name}: no checkpoint objects in the bucket: {listed[:300]}")
                    ok = False
                got, _ = rows(os.path.join(d, name))
                ok &= compare(expected, got, f"{url}, SIGKILL x{args.kills}")
            finally:
                server.send_signal(signal.SIGTERM)
                server.wait(timeout=10)
        # An unreachable store is an error that names it, not a hang or a silent local fallback.
        bad = os.path.join(d, "bad.sql")
        with open(bad, "w") as f:
            f.write("SET 'execution.checkpointing.dir' = 's3://flowlinetest/x';\n" + PIPELINE.format(out=os.path.join(d, "bad"), **kw))
        env = dict(os.environ, AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test", AWS_REGION="us-east-1",
                   AWS_ENDPOINT=f"http://127.0.0.1:{free_port()}", AWS_ALLOW_HTTP="true")
        p = subprocess.run([args.binary, "run", bad], capture_output=True, text=True, env=env, timeout=300)
        if p.returncode == 0 or "s3://flowlinetest/x" not in p.stderr:
            print(f"FAIL unreachable store: exit {p.returncode}, {p.stderr[-500:]}")
            ok = False
        else:
            print(f"ok   unreachable store: {p.stderr.strip().splitlines()[-1][:200]}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
