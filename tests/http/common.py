"""What the HTTP, query and Flight SQL tests (and benches/serving.py) share: a free loopback port,
the checks tally and an ADBC Flight SQL connection."""
import socket


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Checks:
    """Prints `ok` or `FAIL` per check and counts the failures."""

    def __init__(self):
        self.failed = 0

    def expect(self, ok, what, detail=""):
        print(("ok   " if ok else "FAIL ") + what + ("" if ok else f": {detail}"))
        self.failed += not ok


def flight_connect(port, password):
    """An ADBC Flight SQL connection with basic credentials (user `ops`), autocommit."""
    import adbc_driver_flightsql.dbapi as flight_sql
    return flight_sql.connect(f"grpc://127.0.0.1:{port}", db_kwargs={"username": "ops", "password": password},
                              autocommit=True)
