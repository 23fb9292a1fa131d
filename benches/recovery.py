#!/usr/bin/env python3
"""Recovery time after SIGKILL with a large window state (docs/BENCHMARKS.md).

    benches/recovery.py BINARY [--state-mb 1024] [--parallelism 2]
    benches/recovery.py BINARY --incremental [--keys 20000000] [--change 0.01] [--interval 5s]

Runs datagen → TUMBLE 1 day GROUP BY a near-unique key (so every row opens a group and no
window fires) with checkpoints, waits until the operators hold --state-mb of state and a
checkpoint covering it has completed, kills the process with SIGKILL, restarts it and reports:
the time from the restart to every operator having rebuilt its state (the job's own
`flowline_restore_ms`, which covers reading and verifying the checkpoint), the wall time from
exec to that point, and the time to the first checkpoint after the restart.

--incremental: a GROUP BY over --keys keys on state tables. One datagen source seeds every key
once (a sequence), a second one updates random keys at --change of the keys per checkpoint
interval. After seeding, it reports each checkpoint's bytes written against the state's size
(the tables' runs), then kills and restarts the job as above.
"""
import argparse, os, re, signal, subprocess, sys, tempfile, time, urllib.request

PIPELINE = """
SET 'execution.checkpointing.interval' = '{interval}';
SET 'execution.checkpointing.timeout' = '10min';
SET 'parallelism.default' = '{parallelism}';
CREATE TABLE src (k BIGINT, v BIGINT, ts TIMESTAMP(3), WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)
  WITH ('connector' = 'datagen', 'rows-per-second' = '{rate}',
        'fields.k.min' = '0', 'fields.k.max' = '1000000000000', 'fields.v.min' = '0', 'fields.v.max' = '1000000');
CREATE TABLE out (k BIGINT, ws TIMESTAMP(3), n BIGINT, s BIGINT, m BIGINT) WITH ('connector' = 'blackhole');
INSERT INTO out SELECT k, window_start, COUNT(*), SUM(v), MAX(v)
FROM TABLE(TUMBLE(TABLE src, DESCRIPTOR(ts), INTERVAL '1' DAY)) GROUP BY k, window_start, window_end;
"""


INCREMENTAL = """
SET 'execution.checkpointing.interval' = '{interval}';
SET 'execution.checkpointing.timeout' = '10min';
SET 'parallelism.default' = '{parallelism}';
CREATE TABLE seed (k BIGINT, v BIGINT)
  WITH ('connector' = 'datagen', 'rows-per-second' = '{rate}', 'fields.k.kind' = 'sequence',
        'fields.k.start' = '0', 'fields.k.end' = '{last_key}', 'fields.v.min' = '0', 'fields.v.max' = '1000000');
CREATE TABLE updates (k BIGINT, v BIGINT)
  WITH ('connector' = 'datagen', 'rows-per-second' = '{update_rate}',
        'fields.k.min' = '0', 'fields.k.max' = '{last_key}', 'fields.v.min' = '0', 'fields.v.max' = '1000000');
CREATE TABLE out (k BIGINT, n BIGINT, s BIGINT, m BIGINT) WITH ('connector' = 'blackhole');
INSERT INTO out SELECT k, COUNT(*), SUM(v), MAX(v) FROM (SELECT k, v FROM seed UNION ALL SELECT k, v FROM updates) GROUP BY k;
"""


sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "crash"))
from crash import free_port  # noqa: E402


def metrics(port):
    """Sums of each metric family, or None while the server is not up."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
            text = r.read().decode()
    except Exception:
        return None
    out = {}
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name = re.split(r"[{ ]", line, 1)[0]
        out[name] = out.get(name, 0) + float(line.rsplit(" ", 1)[1])
    return out


def start(binary, pipeline, port, log):
    return subprocess.Popen([binary, "run", pipeline, "--http", f"127.0.0.1:{port}"], stdout=subprocess.DEVNULL, stderr=log)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("binary")
    ap.add_argument("--state-mb", type=int, default=1024, help="in-memory window state to build before the kill")
    ap.add_argument("--parallelism", type=int, default=2)
    ap.add_argument("--rate", type=int, default=3_000_000)
    ap.add_argument("--interval", default="5s")
    ap.add_argument("--incremental", action="store_true")
    ap.add_argument("--keys", type=int, default=20_000_000)
    ap.add_argument("--change", type=float, default=0.01, help="share of the keys updated per interval")
    ap.add_argument("--checkpoints", type=int, default=12, help="checkpoints to report after seeding")
    args = ap.parse_args()
    if args.incremental:
        return incremental(args)
    with tempfile.TemporaryDirectory() as d:
        pipeline = os.path.join(d, "recovery.sql")
        with open(pipeline, "w") as f:
            f.write(PIPELINE.format(interval=args.interval, parallelism=args.parallelism, rate=args.rate))
        port = free_port()
        log1 = open(os.path.join(d, "run1.log"), "w")
        proc = start(args.binary, pipeline, port, log1)
        t0 = time.time()
        target = args.state_mb * 1024 * 1024
        built_at = None
        while True:
            time.sleep(0.5)
            if proc.poll() is not None:
                sys.exit(f"the pipeline exited early: {open(log1.name).read()}")
            m = metrics(port)
            if not m:
                continue
            state = m.get("flowline_operator_state_bytes", 0)
            done = m.get("flowline_checkpoints_completed_total", 0)
            if built_at is None and state >= target:
                built_at = done
                print(f"state {state / 2**20:.0f} MiB after {time.time() - t0:.0f} s; waiting for a checkpoint that covers it")
            if built_at is not None and done >= built_at + 2:
                break
            if time.time() - t0 > 900:
                sys.exit("state did not reach the target in 15 minutes")
        groups = m.get("flowline_operator_rows_in_total", 0)
        ckpt_bytes = m.get("flowline_checkpoint_bytes", 0)
        pause_ms = m.get("flowline_checkpoint_pause_us", 0) / 1000
        pause_max_ms = m.get("flowline_checkpoint_pause_max_us", 0) / 1000
        ckpt_ms = m.get("flowline_checkpoint_duration_ms", 0)
        state = m.get("flowline_operator_state_bytes", 0)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        print(f"killed with {state / 2**20:.0f} MiB of operator state (~{groups / 1e6:.1f} M rows in); last checkpoint "
              f"{ckpt_bytes / 2**20:.0f} MiB, took {ckpt_ms:.0f} ms, longest task pause {pause_ms:.0f} ms "
              f"(longest of any checkpoint: {pause_max_ms:.0f} ms)")

        restart(args.binary, pipeline, d)


def restart(binary, pipeline, d):
    """Restarts the killed job and reports how long until its state was back, and until its
    first checkpoint completed."""
    log_path = os.path.join(d, "run2.log")
    log = open(log_path, "w")
    port = free_port()
    t1 = time.time()
    proc = start(binary, pipeline, port, log)
    restored_wall = restored_ms = None
    while True:
        time.sleep(0.02)
        text = open(log_path).read()
        hit = re.search(r"restored checkpoint (\d+) \(([\d.]+) MB of task state.*?\) in (\d+) ms", text)
        if hit and restored_wall is None:
            restored_wall = time.time() - t1
            restored_ms = int(hit.group(3))
        if proc.poll() is not None:
            sys.exit(f"the restarted pipeline exited: {text}")
        if restored_wall is not None:
            m = metrics(port)
            if m and m.get("flowline_checkpoints_completed_total", 0) >= 1:
                first_ckpt = time.time() - t1
                break
        if time.time() - t1 > 300:
            sys.exit(f"no recovery in 5 minutes: {text}")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    print(f"recovery: state rebuilt {restored_ms} ms after the checkpoint was opened ({restored_wall:.2f} s from exec); "
          f"first checkpoint after the restart completed {first_ckpt:.2f} s from exec")


def incremental(args):
    interval_s = float(args.interval.rstrip("s"))
    with tempfile.TemporaryDirectory() as d:
        pipeline = os.path.join(d, "incremental.sql")
        with open(pipeline, "w") as f:
            f.write(INCREMENTAL.format(interval=args.interval, parallelism=args.parallelism, rate=args.rate,
                                       last_key=args.keys - 1,
                                       update_rate=max(1, int(args.keys * args.change / interval_s))))
        port = free_port()
        log1 = open(os.path.join(d, "run1.log"), "w")
        proc = start(args.binary, pipeline, port, log1)
        t0, seeded_at, last, rows = time.time(), None, None, []
        print(f"{args.keys / 1e6:.0f} M keys, {args.change:.0%} of them updated per {args.interval} interval")
        print(f"{'checkpoint':>10} {'written MiB':>12} {'state MiB':>10} {'written/state':>14}")
        while len(rows) < args.checkpoints:
            time.sleep(0.2)
            if proc.poll() is not None:
                sys.exit(f"the pipeline exited early: {open(log1.name).read()}")
            m = metrics(port)
            if not m:
                continue
            done = m.get("flowline_checkpoints_completed_total", 0)
            if seeded_at is None and m.get("flowline_source_rows_total", 0) >= args.keys:
                seeded_at = done  # the next checkpoint holds every key
            if seeded_at is None or done == last:
                continue
            last = done
            if done <= seeded_at:
                continue
            written = m.get("flowline_checkpoint_bytes", 0)
            state = m.get("flowline_operator_state_disk_bytes", 0)
            rows.append((written, state))
            print(f"{int(done):>10} {written / 2**20:12.1f} {state / 2**20:10.0f} {written / max(state, 1):14.3f}", flush=True)
            if time.time() - t0 > 1800:
                break
        later = rows[1:]
        if later:
            share = [w / max(s, 1) for w, s in later]
            print(f"after the first: mean {sum(share) / len(share):.3f}, max {max(share):.3f} of the state per checkpoint")
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        restart(args.binary, pipeline, d)


if __name__ == "__main__":
    main()
