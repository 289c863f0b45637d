"""A real HTTPS server on loopback that hands out auth keys, for the HTTP key source tests.

Its certificate is signed by a throwaway CA made with the openssl CLI in the test's temporary
directory (nothing is committed). Each request is recorded; responses come from a queue of
(status, body) pairs, the last of which repeats.
"""

from __future__ import annotations

import json
import ssl
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from peers import PeerError


def make_ca_and_server_cert(d: Path) -> tuple[Path, Path, Path]:
    """Returns (ca.pem, server.pem, server.key) for 127.0.0.1/localhost."""
    d.mkdir(parents=True, exist_ok=True)

    def run(*args: str):
        r = subprocess.run(["openssl", *args], cwd=d, capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            raise PeerError(f"openssl {' '.join(args)} failed: {r.stderr}")

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    run("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
        "-subj", "/CN=tailjoin throwaway test CA")
    run("req", "-new", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost")
    (d / "ext.cnf").write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n"
        "keyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n"
    )
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "server.pem", "-days", "2", "-extfile", "ext.cnf")
    return d / "ca.pem", d / "server.pem", d / "server.key"


class KeyServer:
    def __init__(self, workdir: Path):
        self.ca, cert, key = make_ca_and_server_cert(workdir)
        self.requests: list[dict] = []
        self.responses: list[tuple[int, bytes]] = [(404, b"nothing configured")]
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                with server._lock:
                    server.requests.append({
                        "method": self.command,
                        "path": self.path,
                        "authorization": self.headers.get("Authorization"),
                        "body": body.decode(errors="replace"),
                    })
                    status, payload = server.responses[0]
                    if len(server.responses) > 1:
                        server.responses.pop(0)
                self.send_response(status)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = _answer
            do_POST = _answer

            def log_message(self, *args):  # quiet
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def url(self, path: str = "/key") -> str:
        return f"https://127.0.0.1:{self.port}{path}"

    def respond(self, *responses: tuple[int, str | bytes | dict]):
        with self._lock:
            self.responses = [
                (s, json.dumps(b).encode() if isinstance(b, dict) else b.encode() if isinstance(b, str) else b)
                for s, b in responses
            ]

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(timeout=10)
