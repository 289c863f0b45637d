"""A small webhook receiver for the boot test: a real http.server on 127.0.0.1 (the guest reaches
it as 10.0.2.2 through qemu's user network) that records every request and answers 200.

Only POST to the one secret path (`/hook/<token>`) counts as a report; anything else is recorded
too (so a test can see it) and answered 404. Thread-safe; `wait_for(pred, timeout)` polls the
recorded reports.

    with HookReceiver() as hook:
        url = hook.url_for("10.0.2.2")      # what the guest gets as its credential
        ...
        hook.reports()                      # [Report(...)] in arrival order
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable


@dataclass(frozen=True)
class Report:
    index: int  # arrival order, over every request
    arrived: float  # time.monotonic()
    method: str
    path: str
    headers: dict[str, str]  # names lower-cased
    body: bytes

    @property
    def json(self):
        return json.loads(self.body)


class HookReceiver:
    def __init__(self, token_prefix: str = "fake-boot-hook-"):
        self.token = token_prefix + secrets.token_hex(16)
        self.path = f"/hook/{self.token}"
        self._lock = threading.Lock()
        self._requests: list[Report] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _record(self) -> Report:
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n > 0 else b""
                with receiver._lock:
                    r = Report(len(receiver._requests), time.monotonic(), self.command, self.path,
                               {k.lower(): v for k, v in self.headers.items()}, body)
                    receiver._requests.append(r)
                return r

            def _answer(self, status: int):
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_POST(self):  # noqa: N802 - http.server's naming
                r = self._record()
                self._answer(200 if r.path == receiver.path else 404)

            def do_GET(self):  # noqa: N802
                self._record()
                self._answer(404)

            def log_message(self, fmt, *args):  # the path holds the token: keep it off stderr
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="hook-receiver", daemon=True)

    def url_for(self, host: str) -> str:
        return f"http://{host}:{self.port}{self.path}"

    def start(self) -> "HookReceiver":
        self._thread.start()
        return self

    def stop(self):
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def __enter__(self) -> "HookReceiver":
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def requests(self) -> list[Report]:
        with self._lock:
            return list(self._requests)

    def reports(self) -> list[Report]:
        """POSTs to the secret path, in arrival order."""
        return [r for r in self.requests() if r.method == "POST" and r.path == self.path]

    def wait_for(self, pred: Callable[[list[Report]], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            if pred(self.reports()):
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.2)
