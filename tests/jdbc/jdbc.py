#!/usr/bin/env python3
"""jdbc sink tests against real PostgreSQL and MariaDB servers (Debian packages), started on
loopback in a temporary directory and stopped afterwards.

    tests/jdbc/jdbc.py BINARY [--kills N] [--seed S]

Checks, on both databases: every supported type round-trips (NULLs, quotes, SQL-looking text,
unicode, bytes, a reserved word as a column name); an updating query (two levels, so groups are
deleted) leaves the table equal to DataFusion's batch result, whatever the flush size; an
updating query into a table without a PRIMARY KEY is refused; an unreachable server fails the
job with a clear error. Crash test: a checkpointing Nexmark aggregation killed with SIGKILL at
random moments and restarted leaves the table equal to a fault-free run's.
"""
import argparse, glob, os, random, shutil, signal, subprocess, sys, tempfile, time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "crash"))
from crash import free_port  # noqa: E402

ROOT = os.geteuid() == 0


def as_user(user):
    """Database servers refuse to run as root: run them as their Debian package's user."""
    return ["runuser", "-u", user, "--"] if ROOT else []


def wait_for(check, what, proc, log):
    deadline = time.time() + 60
    while time.time() < deadline:
        if proc.poll() is not None:
            sys.exit(f"{what} exited: {open(log).read()[-2000:]}")
        if check():
            return
        time.sleep(0.2)
    sys.exit(f"{what} did not start: {open(log).read()[-2000:]}")


class Postgres:
    name = "postgresql"

    def __init__(self, d):
        bindir = sorted(glob.glob("/usr/lib/postgresql/*/bin"))[-1]
        data = self.data = os.path.join(d, "pg")
        os.makedirs(data)
        if ROOT:
            shutil.chown(data, "postgres", "postgres")
        subprocess.run(as_user("postgres") + [f"{bindir}/initdb", "-D", data, "-U", "flowline", "--auth=trust", "-E", "UTF8", "--locale=C"],
                       check=True, capture_output=True)
        self.port = free_port()
        log = os.path.join(d, "pg.log")
        self.proc = subprocess.Popen(as_user("postgres") + [f"{bindir}/postgres", "-D", data, "-p", str(self.port), "-k", data,
                                     "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"],
                                     stdout=open(log, "w"), stderr=subprocess.STDOUT)
        wait_for(lambda: subprocess.run(["pg_isready", "-q", "-h", "127.0.0.1", "-p", str(self.port)]).returncode == 0, "postgres", self.proc, log)
        self.url = f"jdbc:postgresql://127.0.0.1:{self.port}/postgres"
        self.user = "flowline"

    def sql(self, statement):
        p = subprocess.run(["psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", "flowline", "-d", "postgres", "-v", "ON_ERROR_STOP=1",
                            "-At", "-F", "|", "-c", statement], capture_output=True, text=True)
        if p.returncode != 0:
            raise RuntimeError(f"psql: {statement}: {p.stderr}")
        return [line.split("|") for line in p.stdout.splitlines()]

    # DDL per test: (table, columns)
    types_ddl = ('CREATE TABLE types (id INT PRIMARY KEY, big BIGINT, s TEXT, d DOUBLE PRECISION, amount NUMERIC(10,2), b BOOLEAN, '
                 'day DATE, ts TIMESTAMP(3), raw BYTEA, "order" INT)')
    types_select = ("SELECT id, big, s, d, amount, CASE WHEN b THEN 1 WHEN NOT b THEN 0 END, day, to_char(ts, 'YYYY-MM-DD HH24:MI:SS.MS'), "
                    'encode(raw, \'hex\'), "order" FROM types ORDER BY id')

    def stop(self):
        # runuser does not pass signals on: stop the postmaster itself (fast shutdown).
        with open(os.path.join(self.data, "postmaster.pid")) as f:
            os.kill(int(f.readline()), signal.SIGINT)
        self.proc.wait(timeout=60)


class MariaDB:
    name = "mariadb"

    def __init__(self, d):
        data = os.path.join(d, "my")
        os.makedirs(data)
        if ROOT:
            shutil.chown(data, "mysql", "mysql")
        user = ["--user=mysql"] if ROOT else []
        subprocess.run(["mariadb-install-db", "--no-defaults", f"--datadir={data}", "--auth-root-authentication-method=normal",
                        "--skip-test-db"] + user, check=True, capture_output=True)
        self.port = free_port()
        log = os.path.join(d, "my.log")
        self.proc = subprocess.Popen(["mariadbd", "--no-defaults", f"--datadir={data}", f"--port={self.port}", "--bind-address=127.0.0.1",
                                      f"--socket={data}/sock", "--skip-grant-tables", "--skip-log-bin",
                                      "--innodb-flush-log-at-trx-commit=0"] + user,
                                     stdout=open(log, "w"), stderr=subprocess.STDOUT)
        wait_for(lambda: subprocess.run(self.cli("SELECT 1"), capture_output=True).returncode == 0, "mariadbd", self.proc, log)
        self.sql("CREATE DATABASE shop")
        self.url = f"jdbc:mariadb://127.0.0.1:{self.port}/shop"
        self.user = "root"

    def cli(self, statement, db=None):
        return ["mariadb", "-h", "127.0.0.1", "-P", str(self.port), "-u", "root", "-N", "-B", "-r", "--default-character-set=utf8mb4"] \
            + ([db] if db else []) + ["-e", statement]

    def sql(self, statement):
        p = subprocess.run(self.cli(statement, "shop" if "CREATE DATABASE" not in statement else None), capture_output=True, text=True)
        if p.returncode != 0:
            raise RuntimeError(f"mariadb: {statement}: {p.stderr}")
        return [["" if v == "NULL" else v for v in line.split("\t")] for line in p.stdout.splitlines()]

    types_ddl = ("CREATE TABLE types (id INT PRIMARY KEY, big BIGINT, s TEXT, d DOUBLE, amount DECIMAL(10,2), b BOOLEAN, "
                 "day DATE, ts DATETIME(3), raw VARBINARY(64), `order` INT) CHARACTER SET utf8mb4")
    types_select = "SELECT id, big, s, d, amount, b, day, ts, LOWER(HEX(raw)), `order` FROM types ORDER BY id"

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=30)


def run(binary, script, d, name, timeout=300):
    path = os.path.join(d, name + ".sql")
    with open(path, "w") as f:
        f.write(script)
    return subprocess.run([binary, "run", path], capture_output=True, text=True, timeout=timeout), path


def sink(db, table, columns, extra=""):
    return (f"CREATE TABLE {table} ({columns}) WITH ('connector' = 'jdbc', 'url' = '{db.url}', 'table-name' = '{table}', "
            f"'username' = '{db.user}'{extra});\n")


STRINGS = ["O'Brien", "\"; DROP TABLE types; --", "Zürich 東京", "", "back\\slash", "percent % and _ underscore"]


def types_test(binary, db, d):
    src = os.path.join(d, f"types_{db.name}.json")
    rows = []
    with open(src, "w") as f:
        for i, s in enumerate(STRINGS):
            f.write(f'{{"id": {i}, "big": {2**40 + i}, "s": {json_str(s)}, "d": {i + 0.5}, "amount": "{i * 3}.25", "b": {"true" if i % 2 else "false"}, '
                    f'"day": "2026-01-{i + 1:02d}", "ts": "2026-01-01 10:00:0{i}.125", "raw": "{"ab" * i}", "o": {i * 10}}}\n')
            rows.append([str(i), str(2**40 + i), s, fmt_float(i + 0.5), f"{i * 3}.25", str(i % 2), f"2026-01-{i + 1:02d}",
                         f"2026-01-01 10:00:0{i}.125", ("ab" * i).encode().hex(), str(i * 10)])
        f.write('{"id": 99, "big": null, "s": null, "d": null, "amount": null, "b": null, "day": null, "ts": null, "raw": null, "o": null}\n')
        rows.append(["99"] + [""] * 9)
    db.sql("DROP TABLE IF EXISTS types")
    db.sql(db.types_ddl)
    script = (f"CREATE TABLE src (id INT, big BIGINT, s STRING, d DOUBLE, amount DECIMAL(10, 2), b BOOLEAN, `day` DATE, ts TIMESTAMP(3), "
              f"raw STRING, o INT) WITH ('connector' = 'filesystem', 'path' = '{src}', 'format' = 'json');\n"
              + sink(db, "types", "id INT, big BIGINT, s STRING, d DOUBLE, amount DECIMAL(10, 2), b BOOLEAN, `day` DATE, ts TIMESTAMP(3), "
                     "raw BYTES, `order` INT, PRIMARY KEY (id) NOT ENFORCED")
              + "INSERT INTO types SELECT id, big, s, d, amount, b, `day`, ts, CAST(raw AS BYTES), o FROM src;\n")
    p, _ = run(binary, script, d, f"types_{db.name}")
    if p.returncode != 0:
        return fail(f"{db.name} types", p.stderr)
    got = [normalise(r) for r in db.sql(db.types_select)]
    want = [normalise(r) for r in rows]
    if got != want:
        return fail(f"{db.name} types", "\n".join(f"  want {w}\n  got  {g}" for w, g in zip(want, got) if w != g) or f"{len(got)} rows, want {len(want)}")
    print(f"ok   {db.name}: {len(rows)} rows of every type round-trip (NULLs, quotes, SQL-looking text, unicode, bytes, a reserved column name)")
    return True


def json_str(s):
    import json
    return json.dumps(s)


def fmt_float(x):
    return repr(float(x))


def normalise(row):
    out = []
    for v in row:
        try:
            f = float(v)
            out.append(repr(f) if "." in v or "e" in v.lower() else v)
        except ValueError:
            out.append(v)
    return out


def fail(label, detail):
    print(f"FAIL {label}: {detail.strip()[-3000:]}")
    return False


UPDATING_SRC = "CREATE TABLE src (k INT, v INT) WITH ('connector' = 'filesystem', 'path' = '{path}', 'format' = 'csv');\n"
# Two levels: when a key's maximum moves, its old group loses a member, and may lose its last.
UPDATING_QUERY = "SELECT m, COUNT(*) AS n, SUM(k) AS s FROM (SELECT k, MAX(v) AS m FROM src GROUP BY k) AS t GROUP BY m"


def updating_test(binary, db, d, rnd):
    src = os.path.join(d, f"updates_{db.name}")
    os.makedirs(src)
    for part in range(4):
        with open(os.path.join(src, f"part-{part}.csv"), "w") as f:
            for _ in range(3000):
                f.write(f"{rnd.randrange(400)},{rnd.randrange(60)}\n")
    init = os.path.join(d, f"updates_{db.name}_init.sql")
    with open(init, "w") as f:
        f.write(UPDATING_SRC.format(path=src))
    q = subprocess.run([binary, "query", "--init", init, "--format", "csv", UPDATING_QUERY], capture_output=True, text=True)
    if q.returncode != 0:
        return fail(f"{db.name} batch oracle", q.stderr)
    want = sorted(tuple(line.split(",")) for line in q.stdout.splitlines()[1:] if line)
    ok = True
    for flush in ["1", "100", "0"]:
        table = f"groups_{flush}"
        db.sql(f"DROP TABLE IF EXISTS {table}")
        db.sql(f"CREATE TABLE {table} (m INT PRIMARY KEY, n BIGINT, s BIGINT)")
        script = ("SET 'parallelism.default' = '2';\n" + UPDATING_SRC.format(path=src)
                  + sink(db, table, "m INT, n BIGINT, s BIGINT, PRIMARY KEY (m) NOT ENFORCED", f", 'sink.buffer-flush.max-rows' = '{flush}'")
                  + f"INSERT INTO {table} {UPDATING_QUERY};\n")
        p, _ = run(binary, script, d, f"updates_{db.name}_{flush}")
        if p.returncode != 0:
            ok = fail(f"{db.name} updating query", p.stderr)
            continue
        got = sorted(tuple(r) for r in db.sql(f"SELECT m, n, s FROM {table}"))
        if got != want:
            ok = fail(f"{db.name} updating query, flush every {flush} rows", f"{len(got)} rows, want {len(want)}; first differences: "
                      + str([(w, g) for w, g in zip(want, got) if w != g][:3]))
        else:
            print(f"ok   {db.name}: updating two-level aggregation (flush every {flush} rows) = batch result ({len(got)} groups)")
    return ok


def refusal_tests(binary, db, d):
    ok = True
    script = (UPDATING_SRC.format(path=os.path.join(d, "none.csv"))
              + sink(db, "nokey", "m INT, n BIGINT") + "INSERT INTO nokey SELECT v, COUNT(*) FROM src GROUP BY v;\n")
    p, _ = run(binary, script, d, f"nokey_{db.name}")
    if p.returncode == 0 or "PRIMARY KEY" not in p.stderr:
        ok = fail(f"{db.name}: updating query into a table without a PRIMARY KEY must be refused", p.stderr)
    else:
        print(f"ok   {db.name}: an updating query into a table without a PRIMARY KEY is refused: {p.stderr.strip().splitlines()[-1][:160]}")
    closed = free_port()
    url = db.url.replace(f":{db.port}/", f":{closed}/")
    script = ("CREATE TABLE src (k INT) WITH ('connector' = 'datagen', 'number-of-rows' = '10');\n"
              f"CREATE TABLE t (k INT) WITH ('connector' = 'jdbc', 'url' = '{url}', 'table-name' = 't', 'connection.max-retry-timeout' = '1s');\n"
              "INSERT INTO t SELECT k FROM src;\n")
    start = time.time()
    p, _ = run(binary, script, d, f"unreachable_{db.name}", timeout=60)
    if p.returncode == 0 or "cannot connect" not in p.stderr:
        ok = fail(f"{db.name}: an unreachable server must fail the job", p.stderr)
    else:
        print(f"ok   {db.name}: an unreachable server fails the job in {time.time() - start:.1f} s: {p.stderr.strip().splitlines()[-1][:160]}")
    return ok


CRASH = """
SET 'execution.checkpointing.interval' = '100ms';
SET 'parallelism.default' = '2';
CREATE TABLE bids (
  event_type INT,
  bid ROW<auction BIGINT, bidder BIGINT, price BIGINT, channel STRING, url STRING, dateTime TIMESTAMP(3), extra STRING>
) WITH ('connector' = 'nexmark', 'events.num' = '{events}', 'first-event.rate' = '{rate}', 'rate.limited' = 'true',
        'base-time' = '2026-01-01 00:00:00');
{sinks}
-- Per auction: bids go to recent auctions, so most keys get their last change long before the
-- end (a change lost at a crash would stay lost). Two levels: groups are deleted.
INSERT INTO {table}_auctions SELECT bid.auction, COUNT(*), MAX(bid.price) FROM bids WHERE event_type = 2 GROUP BY bid.auction;
INSERT INTO {table}_groups
SELECT m, COUNT(*), SUM(a) FROM (
  SELECT bid.auction % 500 AS a, MAX(bid.price) % 97 AS m FROM bids WHERE event_type = 2 GROUP BY bid.auction % 500
) AS t GROUP BY m;
"""


def crash_test(binary, db, d, kills, rnd, events=300_000, rate=100_000):
    tables = [f"{t}_{kind}" for t in ["crash_ref", "crash_got"] for kind in ["auctions", "groups"]]
    for t in tables:
        db.sql(f"DROP TABLE IF EXISTS {t}")
        db.sql(f"CREATE TABLE {t} (k BIGINT PRIMARY KEY, n BIGINT, s BIGINT)")

    def script(table):
        sinks = "".join(sink(db, f"{table}_{kind}", "k BIGINT, n BIGINT, s BIGINT, PRIMARY KEY (k) NOT ENFORCED") for kind in ["auctions", "groups"])
        return CRASH.format(events=events, rate=rate, table=table, sinks=sinks)

    def contents(table):
        return {kind: sorted(tuple(r) for r in db.sql(f"SELECT k, n, s FROM {table}_{kind}")) for kind in ["auctions", "groups"]}

    p, _ = run(binary, script("crash_ref"), d, f"crash_ref_{db.name}")
    if p.returncode != 0:
        return fail(f"{db.name} crash reference run", p.stderr)
    want = contents("crash_ref")
    path = os.path.join(d, f"crash_got_{db.name}.sql")
    with open(path, "w") as f:
        f.write(script("crash_got"))
    duration = events / rate
    done = 0
    for _ in range(kills):
        proc = subprocess.Popen([binary, "run", path], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        time.sleep(rnd.uniform(0.1, max(0.2, duration / 3)))
        if proc.poll() is not None:
            if proc.returncode != 0:
                return fail(f"{db.name} crash run", proc.stderr.read())
            break
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        done += 1
    p = subprocess.run([binary, "run", path], capture_output=True, text=True, timeout=300)
    if p.returncode != 0:
        return fail(f"{db.name} crash run", p.stderr)
    got = contents("crash_got")
    ok = True
    for kind in want:
        w, g = want[kind], got[kind]
        if g != w:
            ok = fail(f"{db.name} crash test ({kind}), SIGKILL x{done}", f"{len(g)} rows, want {len(w)}; differences: "
                      + str(sorted(set(w) ^ set(g))[:4]))
    if ok:
        print(f"ok   {db.name}: SIGKILL x{done} and restarts from checkpoints: the tables equal a fault-free run's "
              f"({len(got['auctions'])} auctions, {len(got['groups'])} groups)")
    return ok


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("binary")
    ap.add_argument("--kills", type=int, default=5)
    ap.add_argument("--seed", type=int, default=int(time.time()))
    args = ap.parse_args()
    binary = os.path.abspath(args.binary)
    rnd = random.Random(args.seed)
    print(f"jdbc tests: seed {args.seed}, {args.kills} kills per database")
    ok = True
    with tempfile.TemporaryDirectory() as d:
        os.chmod(d, 0o755)  # the servers run as their own users
        for server in [Postgres, MariaDB]:
            db = server(d)
            try:
                ok &= types_test(binary, db, d)
                ok &= updating_test(binary, db, d, rnd)
                ok &= refusal_tests(binary, db, d)
                ok &= crash_test(binary, db, d, args.kills, rnd)
            finally:
                db.stop()
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
