"""What the HTTP, query and Flight SQL tests share: a free loopback port and the checks tally."""
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
