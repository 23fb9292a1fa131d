#!/usr/bin/env python3
"""State beyond memory: stateful Nexmark queries with and without a state budget, side by side.

    python3 benches/state_budget.py BINARY [--events N] [--memory 64MB] [--only q3,q18]

For each stateful Nexmark query (q3 q4 q5 q7 q11 q9 q16 q17 q18 q19 q20) the job runs twice on the same generated events (parallelism 1, a debezium-json
file sink): without a budget, and with `--memory`. It reports wall time, CPU time (user + sys),
peak RSS and the state tables' spill counts, and checks that both runs leave the same final rows
(the changelogs replayed). Exit status 1 when a result differs.
"""
import argparse, collections, json, os, re, resource, subprocess, sys, tempfile, time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "flink"))
import nexmark  # noqa: E402  (the queries, views and changelog replay of the Flink comparison)
from nexmark import replay  # noqa: E402

SOURCE = f"""
CREATE TABLE nexmark (event_type INT, {nexmark.ROWS},
  `dateTime` AS CASE WHEN event_type = 0 THEN person.`dateTime` WHEN event_type = 1 THEN auction.`dateTime` ELSE bid.`dateTime` END,
  WATERMARK FOR `dateTime` AS `dateTime` - INTERVAL '4' SECOND
) WITH ('connector' = 'nexmark', 'events.num' = '{{events}}', 'first-event.rate' = '10000000',
        'base-time' = '2026-01-01 00:00:00');
""" + ";\n".join(nexmark.DDL[1:]) + ";\n"

TS, S, B = "TIMESTAMP(3)", "STRING", "BIGINT"
AUCTION = [B, S, S, B, B, TS, TS, B, B, S]
# The stateful queries (tests/flink/nexmark_queries.txt) and their result's column types.
TYPES = {
    "q3": [S, S, S, B],
    "q4": [B, B],
    "q5": [B, B],
    "q7": [B, B, B, TS, S],
    "q9": AUCTION + [B, B, B, TS, S],
    "q11": [B, B, TS, TS],
    "q16": [S, S, S, B, B, B, B],
    "q17": [B, S, B, B, B, B, B, B],
    "q18": [B, B, B, S, S, TS, S],
    "q19": [B, B, B, S, S, TS, S, B],
    "q20": [B, B, B, S, S, TS, S] + [S, S, B, B, TS, TS, B, B, S],
}
QUERIES = [
    (name, ", ".join(TYPES[name]), q)
    for name, q in (
        (n.strip(), q.strip())
        for n, q in (
            line.split(";;", 1)
            for line in open(os.path.join(HERE, "..", "tests", "flink", "nexmark_queries.txt"))
            if line.strip() and not line.startswith("#")
        )
    )
    if name in TYPES
]


def run(binary, name, types, query, events, memory, work, check=True):
    out = os.path.join(work, f"{name}-{memory or 'unbounded'}")
    cols = ", ".join(f"c{i} {t}" for i, t in enumerate(t.strip() for t in types.split(",")))
    script = os.path.join(work, f"{name}.sql")
    with open(script, "w") as f:
        f.write(SOURCE.format(events=events))
        f.write(f"CREATE TABLE out ({cols}) WITH ('connector' = 'filesystem', 'path' = '{out}', 'format' = 'debezium-json');\n")
        f.write(f"INSERT INTO out {query};\n")
    args = [binary, "run", script, "-p", "1", "--fresh", "--state-dir", os.path.join(work, "state-" + name)]
    if memory:
        args += ["--memory", memory]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.time()
    p = subprocess.run(["/usr/bin/time", "-f", "%M", *args], capture_output=True, text=True)
    wall = time.time() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if p.returncode != 0:
        sys.exit(f"{name}: flowline failed:\n{p.stderr[-2000:]}")
    rss_kb = int(p.stderr.strip().splitlines()[-1])
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    width = len(types.split(","))
    rows = replay(out, width) if check else None
    return dict(wall=wall, cpu=cpu, rss=rss_kb / 1024, rows=rows)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("binary")
    ap.add_argument("--events", type=int, default=2_000_000)
    ap.add_argument("--memory", default="64MB")
    ap.add_argument("--only", default="")
    ap.add_argument("--budgeted-only", action="store_true",
                    help="only the run with --memory, rows not checked (the unbudgeted run and the replay of a "
                         "50M-event changelog take minutes each)")
    args = ap.parse_args()
    only = set(filter(None, args.only.split(",")))
    ok = True
    print(f"{'query':6} {'budget':>10} {'wall s':>7} {'cpu s':>7} {'peak RSS MB':>12} {'rows':>9}  same rows")
    with tempfile.TemporaryDirectory() as work:
        for name, types, query in QUERIES:
            if only and name not in only:
                continue
            if args.budgeted_only:
                r = run(args.binary, name, types, query, args.events, args.memory, work, check=False)
                print(f"{name:6} {args.memory:>10} {r['wall']:7.1f} {r['cpu']:7.1f} {r['rss']:12.0f} {'-':>9}  not checked")
                continue
            free = run(args.binary, name, types, query, args.events, None, work)
            capped = run(args.binary, name, types, query, args.events, args.memory, work)
            same = free["rows"] == capped["rows"]
            ok &= same
            for label, r in (("none", free), (args.memory, capped)):
                print(f"{name:6} {label:>10} {r['wall']:7.1f} {r['cpu']:7.1f} {r['rss']:12.0f} {len(r['rows']):9}  {'' if r is free else same}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
