"""Helpers for the minting and provisioner tests: a systemd-like credentials directory, the
real `tailjoin-provisioner` process, a kernel command line file, and a stand-in for Tailscale's
public API (the only fake here: Tailscale's SaaS cannot run on loopback; it mints the keys it
hands out with the real headscale, so the agent still joins a real control server)."""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import procs
from agent import LEAK_EVIDENCE, agent_bin, provisioner_bin
from keyserver import make_ca_and_server_cert
from leaks import remember
from peers import PeerError, free_port, log_tail


def owner_only(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return path


def credentials_dir(path: Path, **creds: str) -> Path:
    """A directory laid out like systemd's $CREDENTIALS_DIRECTORY (one 0600 file per name)."""
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    for name, value in creds.items():
        owner_only(path / name.replace("_", "-"), value + "\n")
        # Every line's first word is a secret (a key, an API key, a client secret, a boot token).
        remember(*(line.split()[0] for line in value.splitlines() if line.strip() and not line.startswith("#")))
    return path


def kernel_cmdline(path: Path, **params: str) -> Path:
    words = ["BOOT_IMAGE=/bzImage", "init=/nix/store/fake-init", "console=ttyS0", "quiet"]
    words += [f"tailjoin.{k}={v}" for k, v in params.items()]
    path.write_text(" ".join(words) + "\n")
    return path


class Provisioner:
    """One `tailjoin-provisioner` process with HTTPS from a throwaway CA."""

    def __init__(self, workdir: Path, config: dict, creds: Path):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.ca, cert, key = make_ca_and_server_cert(self.workdir / "tls")
        owner_only(creds / "tls-key", key.read_text())
        self.port = free_port()
        self.state_dir = self.workdir / "state"
        self.config = {
            "listen": f"127.0.0.1:{self.port}",
            "tls": {"cert_file": str(cert), "key": {"credential": "tls-key"}},
            "state_dir": str(self.state_dir),
            "log_level": "debug",
            **config,
        }
        self.config_path = self.workdir / "provisioner.json"
        self.config_path.write_text(json.dumps(self.config, indent=1))
        self.creds = creds
        self.log_path = self.workdir / "provisioner.log"
        self.proc: subprocess.Popen | None = None
        LEAK_EVIDENCE["files"].append(self.log_path)
        LEAK_EVIDENCE["dirs"].append(self.state_dir)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}/v1/key"

    @property
    def audit(self) -> list[dict]:
        p = self.state_dir / "audit.jsonl"
        return [json.loads(l) for l in p.read_text().splitlines()] if p.exists() else []

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def start(self, timeout: float = 60.0) -> "Provisioner":
        env = {k: v for k, v in os.environ.items() if not k.startswith("TAILJOIN_")}
        env["CREDENTIALS_DIRECTORY"] = str(self.creds)
        if self.proc is not None and self.proc.poll() is None:
            raise PeerError(f"the provisioner is already running (pid {self.proc.pid})")
        log = open(self.log_path, "ab")
        try:
            self.proc = procs.spawn(
                [provisioner_bin(), f"--config={self.config_path}"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
            )
        finally:
            log.close()
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise PeerError(f"the provisioner exited with {self.proc.returncode}:\n{log_tail(self.log_path)}")
                try:
                    status, _, _ = self.request("GET", "/healthz")
                    if status == 200:
                        return self
                except OSError:
                    pass
                time.sleep(0.1)
            raise PeerError(f"the provisioner did not answer /healthz in {timeout}s:\n{log_tail(self.log_path)}")
        except BaseException:
            self.stop()  # not left running when it never became ready (or the wait was interrupted)
            raise

    def request(self, method: str, path: str = "/v1/key", body: dict | None = None,
                token: str | None = None) -> tuple[int, dict[str, str], str]:
        ctx = ssl.create_default_context(cafile=str(self.ca))
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"https://127.0.0.1:{self.port}{path}", data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(req, context=ctx, timeout=30) as r:
                return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read().decode()

    def stop(self):
        """SIGTERM, up to 10 s to exit, then SIGKILL. Safe to call again, or before start()."""
        procs.stop(self.proc)


class FakeTailscaleAPI:
    """Follows Tailscale's documented API for OAuth clients, over HTTPS with a throwaway CA:
    POST /api/v2/oauth/token (form client_id, client_secret, grant_type=client_credentials) and
    POST /api/v2/tailnet/{tailnet}/keys (bearer access token; JSON capabilities). Each key it
    returns is a real headscale pre-auth key created with the requested capabilities."""

    def __init__(self, workdir: Path, headscale, client_id: str, client_secret: str):
        self.ca, cert, key = make_ca_and_server_cert(Path(workdir))
        self.requests: list[dict] = []
        self.issued: list[str] = []
        access_token = "fake-access-token-" + os.urandom(8).hex()
        api = self

        class Handler(BaseHTTPRequestHandler):
            def _send(self, status: int, doc: dict):
                payload = json.dumps(doc).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length).decode()
                entry = {"path": self.path, "content_type": self.headers.get("Content-Type"),
                         "authorization": self.headers.get("Authorization"), "body": raw}
                api.requests.append(entry)
                if self.path == "/api/v2/oauth/token":
                    form = urllib.parse.parse_qs(raw)
                    ok = (form.get("client_id") == [client_id] and form.get("client_secret") == [client_secret]
                          and form.get("grant_type") == ["client_credentials"])
                    if not ok:
                        return self._send(401, {"message": "invalid client credentials"})
                    return self._send(200, {"access_token": access_token, "token_type": "Bearer",
                                            "expires_in": 3600, "scope": "auth_keys"})
                if self.path.startswith("/api/v2/tailnet/") and self.path.endswith("/keys"):
                    if self.headers.get("Authorization") != f"Bearer {access_token}":
                        return self._send(401, {"message": "invalid access token"})
                    doc = json.loads(raw)
                    create = doc["capabilities"]["devices"]["create"]
                    if not create.get("tags"):
                        return self._send(400, {"message": "tags are required for OAuth-created keys"})
                    k = headscale.cli(
                        "preauthkeys", "create", "--expiration", f"{int(doc['expirySeconds'])}s",
                        *(["--ephemeral"] if create.get("ephemeral") else []),
                        *(["--reusable"] if create.get("reusable") else []),
                        "--tags", ",".join(create["tags"]),
                    )
                    api.issued.append(k["key"])
                    remember(k["key"], access_token)
                    return self._send(200, {"id": f"kFAKE{k['id']}", "key": k["key"],
                                            "created": "2026-11-21T00:00:00Z", "expires": "2026-11-21T01:00:00Z",
                                            "capabilities": doc["capabilities"], "description": doc.get("description")})
                self._send(404, {"message": "not found"})

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(timeout=10)
