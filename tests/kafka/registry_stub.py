"""A small in-memory Confluent schema registry for tests (no real registry installs here: the
Confluent Schema Registry is Java from Confluent's own repositories and Karapace is not on PyPI
in a usable form). It speaks the subset of the REST API that producers, consumers and Flowline
use: register, look up by id, look up by subject, latest version."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlparse


class Registry:
    def __init__(self):
        self.schemas = []  # id - 1 -> (schema text, schemaType)
        self.subjects = {}  # subject -> [id, ...] (version - 1 -> id)
        self.requests = []
        self.lock = threading.Lock()

    def register(self, subject, schema, schema_type):
        with self.lock:
            key = (schema, schema_type)
            if key in self.schemas:
                sid = self.schemas.index(key) + 1
            else:
                self.schemas.append(key)
                sid = len(self.schemas)
            versions = self.subjects.setdefault(subject, [])
            if sid not in versions:
                versions.append(sid)
            return sid, versions.index(sid) + 1


def start():
    reg = Registry()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def reply(self, code, body):
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/vnd.schemaregistry.v1+json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def body(self):
            n = int(self.headers.get("Content-Length") or 0)
            return json.loads(self.rfile.read(n) or b"{}")

        def do_GET(self):
            path = urlparse(self.path).path
            reg.requests.append(("GET", path))
            parts = [unquote(p) for p in path.strip("/").split("/")]
            if parts[:2] == ["schemas", "ids"] and len(parts) >= 3:
                i = int(parts[2])
                if 0 < i <= len(reg.schemas):
                    schema, t = reg.schemas[i - 1]
                    body = {"schema": schema}
                    if t != "AVRO":
                        body["schemaType"] = t
                    return self.reply(200, body)
                return self.reply(404, {"error_code": 40403, "message": f"Schema {i} not found"})
            if parts[0] == "subjects" and len(parts) == 4 and parts[2] == "versions":
                versions = reg.subjects.get(parts[1])
                if not versions:
                    return self.reply(404, {"error_code": 40401, "message": f"Subject '{parts[1]}' not found."})
                v = len(versions) if parts[3] == "latest" else int(parts[3])
                sid = versions[v - 1]
                return self.reply(200, {"subject": parts[1], "version": v, "id": sid, "schema": reg.schemas[sid - 1][0]})
            if parts == ["subjects"]:
                return self.reply(200, sorted(reg.subjects))
            self.reply(404, {"error_code": 404, "message": "not found"})

        def do_POST(self):
            path = urlparse(self.path).path
            reg.requests.append(("POST", path))
            parts = [unquote(p) for p in path.strip("/").split("/")]
            b = self.body()
            if parts[0] == "subjects" and len(parts) == 3 and parts[2] == "versions":
                sid, _ = reg.register(parts[1], b["schema"], b.get("schemaType", "AVRO"))
                return self.reply(200, {"id": sid})
            if parts[0] == "subjects" and len(parts) == 2:
                key = (b["schema"], b.get("schemaType", "AVRO"))
                versions = reg.subjects.get(parts[1], [])
                for v, sid in enumerate(versions, 1):
                    if reg.schemas[sid - 1] == key:
                        return self.reply(200, {"subject": parts[1], "version": v, "id": sid, "schema": b["schema"]})
                return self.reply(404, {"error_code": 40403, "message": "Schema not found"})
            self.reply(404, {"error_code": 404, "message": "not found"})

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, reg, f"http://127.0.0.1:{server.server_address[1]}"
