"""A real HTTP(S) server on loopback that receives the agent's push reports (webhook,
healthchecks.io-style pings, Uptime Kuma pushes), for the push reporter tests.

Every request is recorded (method, path, query, headers, body, arrival and answer times). How it
answers is planned per path prefix: a list of replies for the first requests (a status, after an
optional delay), then one reply for all the rest. The server can be started later on a port
chosen up front, to play an endpoint that is down at boot and comes back.

Every body (and query string: an Uptime Kuma push carries its message there) is also appended
to a file registered in LEAK_EVIDENCE, so the leak test searches what the agent sent for keys.
Paths are not written there: they carry the endpoints' own tokens by design.
"""

from __future__ import annotations

import secrets
import ssl
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from agent import LEAK_EVIDENCE
from keyserver import make_ca_and_server_cert
from peers import PeerError, free_port

BODIES_FILE = "push-receiver-bodies.txt"


@dataclass(frozen=True)
class Reply:
    status: int = 200
    delay: float = 0.0  # seconds to sleep before answering


@dataclass
class _Plan:
    first: list[Reply]
    then: Reply


@dataclass
class Request:
    index: int
    method: str
    path: str  # without the query
    query: str  # raw, without "?"
    headers: dict[str, str]  # names lower-cased
    body: bytes
    arrived: float  # time.monotonic()
    arrived_wall: float  # time.time()
    reply: Reply
    answered: float | None = None  # monotonic time the answer was written, None if it was not
    answer_error: str | None = None  # why the answer could not be written (client gone)

    @property
    def text(self) -> str:
        return self.body.decode(errors="replace")

    @property
    def params(self) -> dict[str, list[str]]:
        return parse_qs(self.query, keep_blank_values=True)

    def param(self, name: str) -> str | None:
        values = self.params.get(name)
        if values is None:
            return None
        if len(values) != 1:
            raise AssertionError(f"query parameter {name!r} given {len(values)} times: {self.query!r}")
        return values[0]

    @property
    def delivered(self) -> bool:
        """Answered 2xx, in full, to a client that was still there."""
        return self.answered is not None and 200 <= self.reply.status < 300

    def describe(self) -> str:
        q = f"?{self.query}" if self.query else ""
        return (f"#{self.index} {self.method} {self.path}{q} -> {self.reply.status}"
                f" (+{self.reply.delay}s) {'answered' if self.answered else self.answer_error}: {self.text[:300]!r}")


class Receiver:
    """A loopback push endpoint. Use as a context manager, or start()/start_after() and stop()."""

    def __init__(self, workdir: Path, port: int | None = None, tls: bool = False):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.tls = tls
        self.ca_file: Path | None = None
        self._cert: tuple[Path, Path] | None = None
        if tls:
            self.ca_file, cert, key = make_ca_and_server_cert(self.workdir / "tls")
            self._cert = (cert, key)
        self.requests: list[Request] = []
        self.up_at: float | None = None  # monotonic time it began to accept connections
        self.bodies_file = self.workdir / BODIES_FILE
        self.bodies_file.touch()
        LEAK_EVIDENCE["files"].append(self.bodies_file)
        self._plans: dict[str, _Plan] = {"": _Plan([], Reply(200))}
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._later: threading.Thread | None = None
        self._stopped = threading.Event()

    # -- addresses and secrets

    @property
    def base(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def url(self, path: str, query: str = "") -> str:
        return self.base + path + (f"?{query}" if query else "")

    @staticmethod
    def secret_path(prefix: str, kind: str) -> tuple[str, str]:
        """(path, token): a path under `prefix` ending in a fake, random token."""
        token = f"fake-{kind}-token-{secrets.token_hex(12)}"
        return f"{prefix.rstrip('/')}/{token}", token

    # -- behaviour

    def plan(self, prefix: str = "", first: list[Reply] | None = None, then: Reply = Reply(200)):
        """Requests whose path starts with `prefix` (the longest planned prefix wins) get the
        replies in `first`, one each, then `then`."""
        with self._lock:
            self._plans[prefix] = _Plan(list(first or []), then)

    def fail_first(self, n: int, status: int = 500, prefix: str = ""):
        self.plan(prefix, [Reply(status)] * n, Reply(200))

    def slow_first(self, n: int, seconds: float, prefix: str = ""):
        self.plan(prefix, [Reply(200, seconds)] * n, Reply(200))

    def always(self, status: int, prefix: str = "", delay: float = 0.0):
        self.plan(prefix, [], Reply(status, delay))

    def _reply_for(self, path: str) -> Reply:
        prefix = max((p for p in self._plans if path.startswith(p)), key=len)
        plan = self._plans[prefix]
        return plan.first.pop(0) if plan.first else plan.then

    # -- lifecycle

    def start(self) -> "Receiver":
        if self._httpd is not None:
            raise PeerError("receiver already started")
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _read_body(self) -> bytes:
                if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
                    data = b""
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass
                            return data
                        data += self.rfile.read(size)
                        self.rfile.readline()
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length) if length else b""

            def _handle(self):
                arrived, arrived_wall = time.monotonic(), time.time()
                body = self._read_body()
                parts = urlsplit(self.path)
                with receiver._lock:
                    reply = receiver._reply_for(parts.path)
                    req = Request(
                        index=len(receiver.requests),
                        method=self.command,
                        path=parts.path,
                        query=parts.query,
                        headers={k.lower(): v for k, v in self.headers.items()},
                        body=body,
                        arrived=arrived,
                        arrived_wall=arrived_wall,
                        reply=reply,
                    )
                    receiver.requests.append(req)
                    with open(receiver.bodies_file, "ab") as f:
                        f.write(f"--- {req.index} {req.method} ?{req.query}\n".encode() + body + b"\n")
                    receiver._changed.notify_all()
                if reply.delay:
                    time.sleep(reply.delay)
                payload = b"OK" if 200 <= reply.status < 300 else b"planned failure"
                try:
                    self.send_response(reply.status)
                    self.send_header("Content-Type", "text/plain")
                    self.send_header("Content-Length", str(len(payload)))
                    self.send_header("Connection", "close")
                    self.end_headers()
                    self.wfile.write(payload)
                    self.wfile.flush()
                    answered, error = time.monotonic(), None
                except OSError as e:  # the client gave up (timeout) and closed the connection
                    answered, error = None, f"client gone: {e!r}"
                self.close_connection = True
                with receiver._lock:
                    req.answered, req.answer_error = answered, error
                    receiver._changed.notify_all()

            do_GET = _handle
            do_POST = _handle
            do_PUT = _handle
            do_HEAD = _handle

            def log_message(self, *args):  # quiet
                pass

        httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        if self._cert:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(*self._cert)
            httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        self.up_at = time.monotonic()
        return self

    def start_after(self, seconds: float) -> "Receiver":
        """Starts serving on the pre-chosen port `seconds` from now, in a thread."""

        def later():
            if not self._stopped.wait(seconds):
                self.start()

        self._later = threading.Thread(target=later, daemon=True)
        self._later.start()
        return self

    def stop(self):
        self._stopped.set()
        if self._later is not None:
            self._later.join(timeout=5)
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # -- what arrived

    def under(self, prefix: str) -> list[Request]:
        with self._lock:
            return [r for r in self.requests if r.path.startswith(prefix)]

    def settled(self, prefix: str = "") -> list[Request]:
        """The requests under prefix whose answer is over (written, or the client was gone)."""
        return [r for r in self.under(prefix) if r.answered is not None or r.answer_error is not None]

    def wait_for(self, pred, timeout: float, what: str, prefix: str = "") -> list[Request]:
        """Waits until pred(requests under prefix) is truthy; returns those requests.
        Fails with every recorded request in the message."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                reqs = [r for r in self.requests if r.path.startswith(prefix)]
                if pred(reqs):
                    return reqs
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"receiver: no {what} within {timeout}s; got {len(reqs)} request(s):\n"
                        + "\n".join(r.describe() for r in reqs)
                    )
                self._changed.wait(min(left, 0.2))

    def dump(self, prefix: str = "") -> str:
        return "\n".join(r.describe() for r in self.under(prefix))
