#!/usr/bin/env python3
"""Writes the seed inputs of the fuzz targets (fuzz/seeds/<target>/): a valid example of every
format, so the fuzzer starts from the formats' shapes rather than from nothing."""
import io, json, os, datetime
import fastavro

here = os.path.dirname(os.path.abspath(__file__))

def put(target, name, data):
    d = os.path.join(here, "seeds", target)
    os.makedirs(d, exist_ok=True)
    open(os.path.join(d, name), "wb").write(data)

row = {"id": 7, "name": "x", "amount": 3, "tags": ["a", None], "r": {"a": 1}, "ts": "2026-01-01 00:00:00.123"}
lines = {
    "json": json.dumps(row),
    "csv": '7,x,3,,,"2026-01-01 00:00:00.123"',
    "debezium-json": json.dumps({"before": row, "after": row, "op": "u"}),
    "canal-json": json.dumps({"data": [row], "old": [{"name": "y"}], "type": "UPDATE"}),
    "maxwell-json": json.dumps({"data": row, "old": {"amount": 2}, "type": "update"}),
}
line_formats = ["json", "csv", "debezium-json", "canal-json", "maxwell-json"]
for i, f in enumerate(line_formats):
    put("line_decoders", f, bytes([i, 0]) + (lines[f] + "\n" + lines[f] + "\n").encode())

schema = fastavro.parse_schema({"type": "record", "name": "record", "namespace": "org.apache.flink.avro.generated", "fields": [
    {"name": "id", "type": ["null", "long"], "default": None},
    {"name": "name", "type": ["null", "string"], "default": None},
    {"name": "amount", "type": ["null", "int"], "default": None},
    {"name": "tags", "type": ["null", {"type": "array", "items": ["null", "string"]}], "default": None},
    {"name": "r", "type": ["null", {"type": "record", "name": "record_r", "fields": [{"name": "a", "type": ["null", "long"], "default": None}]}], "default": None},
    {"name": "ts", "type": ["null", {"type": "long", "logicalType": "timestamp-millis"}], "default": None}]})
arow = dict(row, ts=datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc))
buf = io.BytesIO()
fastavro.schemaless_writer(buf, schema, arow)
body = buf.getvalue()
# Protobuf Row{id=7, name="x", amount=3, tags=["a"], r{a=1}, ts=1}
pb = bytes([0x08, 7, 0x12, 1]) + b"x" + bytes([0x18, 3, 0x22, 1]) + b"a" + bytes([0x2a, 2, 0x08, 1, 0x30, 1])
record_formats = ["json", "csv", "debezium-json", "canal-json", "maxwell-json", "avro", "protobuf"]
for i, f in enumerate(record_formats):
    rec = body if f == "avro" else pb if f == "protobuf" else lines[f].encode()
    put("record_decoders", f, bytes([i, 0]) + rec + b"\xff\x00" + rec)

ocf = io.BytesIO()
fastavro.writer(ocf, schema, [arow, arow], codec="deflate")
put("file_readers", "avro", bytes([0, 0]) + ocf.getvalue())
# The input that hung arrow-avro 59's reader: a block whose count (1) ends before its bytes.
plain = io.BytesIO()
fastavro.writer(plain, schema, [arow, arow], codec="null", sync_marker=b"S" * 16)
data = plain.getvalue()
block = data.index(b"S" * 16) + 16  # the first block follows the header's sync marker
assert data[block] == 4  # count 2, zig-zag
put("file_readers", "avro-short-count", bytes([0, 0]) + data[:block] + bytes([2]) + data[block + 1:])
put("file_readers", "protobuf", bytes([1, 0]) + bytes([len(pb)]) + pb + bytes([len(pb)]) + pb)
print("seeds written")
