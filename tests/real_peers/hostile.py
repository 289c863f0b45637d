"""A real HTTP server on loopback that misbehaves on purpose, for the hostile-peer tests: it
answers with a body that never ends (announced as gigabytes, or chunked without a last chunk),
trickles a body one byte a second, or accepts and never answers. It counts what it managed to
send, so a test can assert that the client stopped reading.

Plain sockets, not http.server: the misbehaviour must be exact (a Content-Length it never meets,
a chunked stream with no end, silence), and every byte sent must be counted.
"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass, field

from peers import PeerError

# Kinds of misbehaviour.
ENDLESS = "endless"  # the status, then a body that never ends (until the client goes away)
TRICKLE = "trickle"  # the status, then the body one byte a second
SILENT = "silent"  # reads the request and never answers
SMALL = "small"  # an ordinary, small answer (to play a healthy server)

REASONS = {200: "OK", 404: "Not Found", 500: "Internal Server Error", 502: "Bad Gateway"}

# What an endless body repeats: words, so that an excerpt of it is shown (not redacted as a token).
FILLER = b"oops the server is sorry " * 2600  # ~64 KiB


@dataclass
class Behaviour:
    kind: str
    status: int = 200
    chunked: bool = False  # endless: chunked transfer encoding instead of a huge Content-Length
    announced: int = 4 << 30  # endless, trickle: the Content-Length announced (4 GiB)
    body: bytes = b""  # small: the body


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    arrived: float
    sent: int = 0  # body bytes the server got out on this connection
    closed_by_client: bool = False


@dataclass
class HostileServer:
    """Use as a context manager. `plan(prefix, behaviour)` chooses how requests whose path starts
    with `prefix` are answered (longest prefix wins; "" is the default)."""

    default: Behaviour
    requests: list[Seen] = field(default_factory=list)

    def __post_init__(self):
        self._plans: dict[str, Behaviour] = {"": self.default}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self.port = self._sock.getsockname()[1]
        self._threads: list[threading.Thread] = []
        self._conns: list[socket.socket] = []

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str = "/key") -> str:
        return self.base + path

    def plan(self, prefix: str, behaviour: Behaviour):
        with self._lock:
            self._plans[prefix] = behaviour

    @property
    def sent(self) -> int:
        with self._lock:
            return sum(r.sent for r in self.requests)

    def under(self, prefix: str) -> list[Seen]:
        with self._lock:
            return [r for r in self.requests if r.path.startswith(prefix)]

    def wait_requests(self, n: int, timeout: float, prefix: str = "/") -> list[Seen]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.under(prefix)
            if len(got) >= n:
                return got
            time.sleep(0.05)
        raise PeerError(f"the hostile server saw {len(self.under(prefix))} requests under {prefix}, not {n}, "
                        f"within {timeout}s")

    # -- serving

    def __enter__(self) -> "HostileServer":
        t = threading.Thread(target=self._accept, daemon=True)
        t.start()
        self._threads.append(t)
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._sock.close()
        with self._lock:
            for c in self._conns:
                try:
                    c.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                c.close()
        for t in self._threads:
            t.join(timeout=5)

    def _accept(self):
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            with self._lock:
                self._conns.append(conn)
            t = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            t.start()
            self._threads.append(t)

    def _read_request(self, conn: socket.socket) -> Seen | None:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                return None
            data += chunk
            if len(data) > 1 << 20:
                return None
        head, _, rest = data.partition(b"\r\n\r\n")
        lines = head.decode(errors="replace").split("\r\n")
        method, path, _ = (lines[0].split(" ") + ["", ""])[:3]
        headers = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
        length = int(headers.get("content-length") or 0)
        while len(rest) < length:
            chunk = conn.recv(65536)
            if not chunk:
                break
            rest += chunk
        return Seen(method, path, headers, time.monotonic())

    def _behaviour(self, path: str) -> Behaviour:
        with self._lock:
            best = max((p for p in self._plans if path.startswith(p)), key=len)
            return self._plans[best]

    def _send(self, conn: socket.socket, seen: Seen, data: bytes, body: bool = True) -> bool:
        """Sends all of `data`, counting body bytes; False once the client is gone."""
        view = memoryview(data)
        while view:
            if self._stop.is_set():
                return False
            try:
                n = conn.send(view)
            except OSError:
                seen.closed_by_client = True
                return False
            if body:
                with self._lock:
                    seen.sent += n
            view = view[n:]
        return True

    def _serve(self, conn: socket.socket):
        try:
            conn.settimeout(None)
            while not self._stop.is_set():
                seen = self._read_request(conn)
                if seen is None:
                    return
                with self._lock:
                    self.requests.append(seen)
                b = self._behaviour(seen.path)
                if b.kind == SILENT:
                    # Hold the connection open, answering nothing, until the client leaves.
                    while not self._stop.is_set():
                        try:
                            if not conn.recv(4096):
                                seen.closed_by_client = True
                                return
                        except OSError:
                            return
                    return
                status = f"HTTP/1.1 {b.status} {REASONS.get(b.status, 'Whatever')}\r\n"
                if b.kind == SMALL:
                    head = status + f"Content-Type: application/json\r\nContent-Length: {len(b.body)}\r\n\r\n"
                    if not self._send(conn, seen, head.encode(), body=False) or not self._send(conn, seen, b.body):
                        return
                    continue
                if b.kind == TRICKLE:
                    head = status + f"Content-Type: text/plain\r\nContent-Length: {b.announced}\r\n\r\n"
                    if not self._send(conn, seen, head.encode(), body=False):
                        return
                    while not self._stop.is_set():
                        if not self._send(conn, seen, b"k"):
                            return
                        self._stop.wait(1.0)
                    return
                # ENDLESS
                framing = "Transfer-Encoding: chunked" if b.chunked else f"Content-Length: {b.announced}"
                head = status + f"Content-Type: text/plain\r\n{framing}\r\n\r\n"
                if not self._send(conn, seen, head.encode(), body=False):
                    return
                piece = (f"{len(FILLER):x}\r\n".encode() + FILLER + b"\r\n") if b.chunked else FILLER
                while self._send(conn, seen, piece):
                    if seen.sent > 16 << 30:  # a safety stop for a client that reads forever
                        return
        finally:
            conn.close()


def peak_rss_kib(pid: int) -> int:
    """The process's peak resident set size so far (VmHWM), in KiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise PeerError(f"no VmHWM in /proc/{pid}/status")
