#!/usr/bin/env python3
"""Runs Flink's Nexmark queries on Apache Flink (PyFlink) and on Flowline over the same events
and compares the final rows. Not part of CI (Flink is ~850 MB); run it by hand:

    python3 -m venv /tmp/flinkenv && /tmp/flinkenv/bin/pip install apache-flink   # needs Java 17
    /tmp/flinkenv/bin/python tests/flink/nexmark.py [path/to/flowline] [--events N] [--only q5,q7]

Flowline's nexmark connector generates the events into a JSON-lines file; both engines read that
file with the Nexmark DDL (computed dateTime, WATERMARK) and the person/auction/bid views of
Flink's benchmark. Each engine writes each query's result through a `debezium-json` filesystem sink (the columns
typed as Flink types the query's result), and the records are replayed into the final rows. Values are normalised (timestamps to
`yyyy-MM-dd HH:mm:ss.SSS`, numbers to their plain decimal form) and compared as sorted multisets.
"""
import argparse, collections, decimal, glob, json, os, re, shutil, subprocess, sys, tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROWS = """person ROW<id BIGINT, name VARCHAR, emailAddress VARCHAR, creditCard VARCHAR, city VARCHAR, state VARCHAR, `dateTime` TIMESTAMP(3), extra VARCHAR>,
  auction ROW<id BIGINT, itemName VARCHAR, description VARCHAR, initialBid BIGINT, reserve BIGINT, `dateTime` TIMESTAMP(3), expires TIMESTAMP(3), seller BIGINT, category BIGINT, extra VARCHAR>,
  bid ROW<auction BIGINT, bidder BIGINT, price BIGINT, channel VARCHAR, url VARCHAR, `dateTime` TIMESTAMP(3), extra VARCHAR>"""
GENERATE = f"""CREATE TABLE nexmark (event_type INT, {ROWS})
  WITH ('connector' = 'nexmark', 'events.num' = '{{events}}', 'first-event.rate' = '1000', 'base-time' = '2026-01-01 00:00:00');
CREATE TABLE ev (event_type INT, {ROWS}) WITH ('connector' = 'filesystem', 'path' = '{{path}}', 'format' = 'json');
INSERT INTO ev SELECT * FROM nexmark;
"""
DDL = [
    f"""CREATE TABLE nexmark (event_type INT, {ROWS},
  `dateTime` AS CASE WHEN event_type = 0 THEN person.`dateTime` WHEN event_type = 1 THEN auction.`dateTime` ELSE bid.`dateTime` END,
  WATERMARK FOR `dateTime` AS `dateTime` - INTERVAL '4' SECOND
) WITH ('connector' = 'filesystem', 'path' = '{{path}}', 'format' = 'json')""",
    "CREATE VIEW person AS SELECT person.id, person.name, person.emailAddress, person.creditCard, person.city, person.state, `dateTime`, person.extra FROM nexmark WHERE event_type = 0",
    "CREATE VIEW auction AS SELECT auction.id, auction.itemName, auction.description, auction.initialBid, auction.reserve, `dateTime`, auction.expires, auction.seller, auction.category, auction.extra FROM nexmark WHERE event_type = 1",
    "CREATE VIEW bid AS SELECT bid.auction, bid.bidder, bid.price, bid.channel, bid.url, `dateTime`, bid.extra FROM nexmark WHERE event_type = 2",
]


def norm(v):
    if v is None:
        return "NULL"
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, (int, decimal.Decimal)):
        d = decimal.Decimal(v)
        return format(d.normalize(), "f") if d != 0 else "0"
    if isinstance(v, float):
        return norm(decimal.Decimal(repr(v))) if v == int(v) else f"{v:.12g}"
    s = str(v)
    m = re.fullmatch(r"(\d{4}-\d\d-\d\d)[ T](\d\d:\d\d:\d\d)(\.\d+)?", s)
    if m:
        return f"{m.group(1)} {m.group(2)}.{(m.group(3) or '.000')[1:].ljust(3, '0')[:3]}"
    return s


def replay(sink, width):
    """The final rows of the debezium-json records under `sink`, as normalised strings."""
    live = collections.Counter()
    for part in sorted(glob.glob(sink + "/**/*", recursive=True)):
        if os.path.isfile(part) and not os.path.basename(part).startswith("."):
            for line in open(part):
                rec = json.loads(line, parse_float=decimal.Decimal)
                for side, sign in (("before", -1), ("after", 1)):
                    if rec[side] is not None:
                        live["|".join(norm(rec[side][f"c{i}"]) for i in range(width))] += sign
    return sorted(k for k, n in live.items() for _ in range(max(n, 0)))


def upserts(sink, width):
    """The last row per first column of the records under `sink` (Flink writes a TopN whose
    output leaves out the row number as upserts keyed by the partition key, without -U)."""
    last = {}
    for part in sorted(glob.glob(sink + "/**/*", recursive=True)):
        if os.path.isfile(part) and not os.path.basename(part).startswith("."):
            for line in open(part):
                rec = json.loads(line, parse_float=decimal.Decimal)
                if rec["after"] is not None:
                    row = [norm(rec["after"][f"c{i}"]) for i in range(width)]
                    last[row[0]] = "|".join(row)
    return sorted(last.values())


def sink_ddl(name, types, path):
    cols = ", ".join(f"c{i} {t}" for i, t in enumerate(types))
    return f"CREATE TABLE `{name}` ({cols}) WITH ('connector' = 'filesystem', 'path' = '{path}', 'format' = 'debezium-json')"


def flink(queries, path, work):
    """Per query: the column types Flink gives its result, and its final rows (written by Flink's
    debezium-json sink, which takes every change kind, and replayed)."""
    from pyflink.table import EnvironmentSettings, TableEnvironment
    env = TableEnvironment.create(EnvironmentSettings.in_streaming_mode())
    env.get_config().set("parallelism.default", "1")
    env.get_config().set("table.local-time-zone", "UTC")
    for stmt in DDL:
        env.execute_sql(stmt.format(path=path))
    out = {}
    for name, q in queries:
        try:
            schema = env.sql_query(q)._j_table.getResolvedSchema()
            types = [re.sub(r"\s*\*(ROWTIME|PROCTIME)\*|\s+NOT NULL", "", t.toString()) for t in schema.getColumnDataTypes()]
            sink = os.path.join(work, f"{name}.flink")
            env.execute_sql(sink_ddl(f"sink_{name}", types, sink))
            env.execute_sql(f"INSERT INTO `sink_{name}` {q}").wait()
            out[name] = (types, replay(sink, len(types)))
        except Exception as e:  # a query Flink refuses is reported, not fatal
            why = [l for l in str(e).split("\n") if "Exception:" in l]
            out[name] = (None, ["ERROR " + (why[0] if why else str(e).split("\n")[0])[:300]])
    return out


def flowline(binary, name, q, types, path, work, parallelism):
    sink = os.path.join(work, f"{name}.flowline")
    script = os.path.join(work, f"{name}.sql")
    with open(script, "w") as f:
        f.write(";\n".join(s.format(path=path) for s in DDL))
        f.write(f";\n{sink_ddl('sink', types, sink)};\nINSERT INTO sink {q};\n")
    r = subprocess.run([binary, "run", script, "-p", str(parallelism)], capture_output=True, text=True)
    if r.returncode != 0:
        return ["ERROR " + r.stderr.strip()[:300]]
    return replay(sink, len(types))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("flowline", nargs="?", default=os.path.expanduser("~/.cache/flowline-target/release/flowline"))
    ap.add_argument("--events", type=int, default=20000)
    ap.add_argument("--only", default="")
    ap.add_argument("-p", "--parallelism", type=int, default=2)
    ap.add_argument("--keep", help="a folder to keep the events and both engines' outputs in")
    args = ap.parse_args()
    queries = []
    for line in open(os.path.join(HERE, "nexmark_queries.txt")):
        if line.strip() and not line.startswith("#"):
            name, q = line.split(";;", 1)
            if not args.only or name.strip() in args.only.split(","):
                queries.append((name.strip(), q.strip()))
    work = args.keep or tempfile.mkdtemp()
    os.makedirs(work, exist_ok=True)
    try:
        events = os.path.join(work, "events")
        gen = os.path.join(work, "generate.sql")
        with open(gen, "w") as f:
            f.write(GENERATE.format(events=args.events, path=events))
        subprocess.run([args.flowline, "run", gen, "-p", "1"], check=True, capture_output=True)
        theirs = flink(queries, events, work)
        failed = 0
        for name, q in queries:
            types, want = theirs[name]
            if types is None:
                failed += 1
                print(f"FLINK {name}: {want[0]}")
                continue
            got = flowline(args.flowline, name, q, types, events, work, args.parallelism)
            same = got == want
            if not same and upserts(os.path.join(work, f"{name}.flink"), len(types)) == got:
                print(f"SAME {name}: {len(got)} rows, as upserts keyed by the first column (Flink wrote no -U)")
                continue
            failed += not same
            print(("SAME " if same else "DIFF ") + f"{name}: {len(want)} rows")
            if not same:
                a, b = collections.Counter(got), collections.Counter(want)
                for row in sorted((a - b).elements())[:8]:
                    print("   flowline only:", row[:300])
                for row in sorted((b - a).elements())[:8]:
                    print("   flink only:   ", row[:300])
        print(f"{len(queries) - failed} of {len(queries)} queries give the same rows ({args.events} events)")
        sys.exit(1 if failed else 0)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
