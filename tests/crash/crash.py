#!/usr/bin/env python3
"""Crash harness: runs a checkpointing pipeline, kills it with SIGKILL at random moments,
restarts it each time, and compares the committed output with a fault-free run.

    tests/crash/crash.py BINARY [--kills N] [--seed S] [--failpoints]

Pass/fail: the multiset of committed output rows equals the fault-free run's (nothing lost,
nothing doubled), and no in-progress file is visible as output. With --failpoints, each named
failpoint (FLOWLINE_FAILPOINTS) is also armed once in turn and the run must recover.
"""
import argparse, collections, os, random, signal, subprocess, sys, tempfile, time

PIPELINE = """
SET 'execution.checkpointing.interval' = '{interval}';
SET 'parallelism.default' = '2';
CREATE TABLE bids (
  event_type INT,
  bid ROW<auction BIGINT, bidder BIGINT, price BIGINT, channel STRING, url STRING, dateTime TIMESTAMP(3), extra STRING>,
  dateTime AS bid.dateTime,
  WATERMARK FOR dateTime AS dateTime - INTERVAL '2' SECOND
) WITH ('connector' = 'nexmark', 'events.num' = '{events}', 'first-event.rate' = '{rate}', 'rate.limited' = 'true',
      'base-time' = '2026-01-01 00:00:00');
CREATE TABLE out (auction BIGINT, window_start TIMESTAMP(3), n BIGINT, total BIGINT)
  WITH ('connector' = 'filesystem', 'path' = '{out}', 'format' = 'json', 'sink.rolling-policy.file-size' = '64kb');
INSERT INTO out
SELECT bid.auction, window_start, COUNT(*), SUM(bid.price)
FROM TABLE(TUMBLE(TABLE bids, DESCRIPTOR(dateTime), INTERVAL '1' SECOND))
WHERE event_type = 2
GROUP BY bid.auction, window_start, window_end;
"""


def rows(out_dir):
    """Committed rows (a multiset) and the names of visible in-progress files."""
    counter, bad = collections.Counter(), []
    for root, _, files in os.walk(out_dir):
        for f in files:
            if f.startswith("."):
                continue
            if "inprogress" in f:
                bad.append(f)
            with open(os.path.join(root, f)) as fh:
                counter.update(line for line in fh if line.strip())
    return counter, bad


def write_pipeline(dir_, name, **kw):
    path = os.path.join(dir_, name + ".sql")
    with open(path, "w") as f:
        f.write(PIPELINE.format(out=os.path.join(dir_, name), **kw))
    return path


def run(binary, pipeline, env=None, timeout=600):
    p = subprocess.run([binary, "run", pipeline], capture_output=True, text=True, env=env, timeout=timeout)
    return p


def compare(expected, got, label):
    lost = expected - got
    doubled = got - expected
    if lost or doubled:
        print(f"FAIL {label}: {sum(lost.values())} rows lost, {sum(doubled.values())} rows extra")
        for r in list(lost)[:3]:
            print("  lost:", r.strip())
        for r in list(doubled)[:3]:
            print("  extra:", r.strip())
        return False
    print(f"ok   {label}: {sum(got.values())} rows, none lost, none doubled")
    return True


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("binary")
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--seed", type=int, default=int(time.time()))
    ap.add_argument("--events", type=int, default=600_000)
    ap.add_argument("--rate", type=int, default=200_000, help="events per second (event time and pacing)")
    ap.add_argument("--failpoints", action="store_true")
    args = ap.parse_args()
    rnd = random.Random(args.seed)
    print(f"crash harness: seed {args.seed}, {args.kills} kills, {args.events} events at {args.rate}/s")
    kw = dict(interval="100ms", events=args.events, rate=args.rate)
    ok = True
    with tempfile.TemporaryDirectory() as d:
        ref = write_pipeline(d, "ref", **kw)
        p = run(args.binary, ref)
        if p.returncode != 0:
            print(p.stderr)
            sys.exit(1)
        expected, _ = rows(os.path.join(d, "ref"))
        print(f"fault-free run: {sum(expected.values())} rows")

        crash = write_pipeline(d, "crash", **kw)
        duration = args.events / args.rate
        for i in range(args.kills):
            proc = subprocess.Popen([args.binary, "run", crash], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            time.sleep(rnd.uniform(0.05, max(0.1, duration / 4)))
            if proc.poll() is not None:
                err = proc.stderr.read()
                if proc.returncode != 0:
                    print(f"FAIL run {i} exited with {proc.returncode}: {err}")
                    sys.exit(1)
                break
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            _, bad = rows(os.path.join(d, "crash"))
            if bad:
                print(f"FAIL: in-progress files visible as output after kill {i}: {bad[:3]}")
                ok = False
        p = run(args.binary, crash)
        if p.returncode != 0:
            print(p.stderr)
            sys.exit(1)
        got, bad = rows(os.path.join(d, "crash"))
        ok &= compare(expected, got, f"SIGKILL x{args.kills}")

        if args.failpoints:
            for fp in ["checkpoint.alignment", "checkpoint.after-state", "checkpoint.after-manifest", "sink.mid-commit", "restore"]:
                name = "fp_" + fp.replace(".", "_").replace("-", "_")
                path = write_pipeline(d, name, **kw)
                env = dict(os.environ, FLOWLINE_FAILPOINTS=f"{fp}=abort@{rnd.randint(2, 6)}")
                # The restore failpoint only fires on a restart: crash once first.
                if fp == "restore":
                    proc = subprocess.Popen([args.binary, "run", path], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                    time.sleep(duration / 3)
                    proc.send_signal(signal.SIGKILL)
                    proc.wait()
                    env["FLOWLINE_FAILPOINTS"] = "restore=abort"
                p = run(args.binary, path, env=env)
                aborted = p.returncode != 0
                p = run(args.binary, path)
                if p.returncode != 0:
                    print(p.stderr)
                    ok = False
                    continue
                got, _ = rows(os.path.join(d, name))
                ok &= compare(expected, got, f"failpoint {fp}" + ("" if aborted else " (not reached)"))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
