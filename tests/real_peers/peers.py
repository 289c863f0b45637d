"""Harness for running real headscale and tailscaled processes on loopback.

Stdlib only. Every process writes its output to a log file in its own work
directory; any error raised here carries the tail of the relevant log.

The binaries come from the directory named by $TAILJOIN_PEERS_BIN, which
tests/peers/build.sh prints on its last line.
"""

from __future__ import annotations

import http.client
import json
import os
import queue
import secrets
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import procs

BIN_ENV = "TAILJOIN_PEERS_BIN"

# ipn.State values as they appear in the integer "State" field of bus notifies.
IPN_STATES = {
    0: "NoState",
    1: "InUseOtherUser",
    2: "NeedsLogin",
    3: "NeedsMachineAuth",
    4: "Stopped",
    5: "Starting",
    6: "Running",
}

LOCALAPI_HOST = "local-tailscaled.sock"


class PeerError(RuntimeError):
    """A real peer process misbehaved. The message includes its log tail."""


class PeersBinMissing(RuntimeError):
    pass


def peers_bin() -> Path:
    """The directory holding tailscaled, tailscale and headscale."""
    value = os.environ.get(BIN_ENV, "").strip()
    if not value:
        raise PeersBinMissing(
            f"${BIN_ENV} is not set. Build the pinned peers and export their directory:\n"
            f"    export {BIN_ENV}=$(tests/peers/build.sh | tail -n1)"
        )
    path = Path(value)
    missing = [n for n in ("tailscaled", "tailscale", "headscale") if not os.access(path / n, os.X_OK)]
    if missing:
        raise PeersBinMissing(
            f"${BIN_ENV}={value} lacks executable(s) {', '.join(missing)}; "
            f"run tests/peers/build.sh and export {BIN_ENV} to the directory it prints"
        )
    return path


def free_port(udp: bool = False) -> int:
    """A currently free port on 127.0.0.1 (TCP by default)."""
    kind = socket.SOCK_DGRAM if udp else socket.SOCK_STREAM
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def log_tail(path: Path | str, lines: int = 60) -> str:
    try:
        text = Path(path).read_text(errors="replace")
    except OSError as e:
        return f"<no log at {path}: {e}>"
    return "\n".join(text.splitlines()[-lines:])


def _wait(pred, timeout: float, interval: float = 0.1, what: str = "condition"):
    """Poll pred() until it returns a truthy value; return it. Raises TimeoutError."""
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while True:
        try:
            v = pred()
            if v:
                return v
        except PeerError:
            raise
        except Exception as e:  # noqa: BLE001 - test polling
            last_exc = e
        if time.monotonic() >= deadline:
            extra = f" (last error: {last_exc!r})" if last_exc else ""
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}{extra}")
        time.sleep(interval)


class _Process:
    """A child process whose stdout+stderr go to a log file (appended)."""

    def __init__(self, name: str, log_path: Path):
        self.name = name
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None

    def spawn(self, argv: list[str], env: dict[str, str] | None = None, cwd: Path | None = None):
        if self.running:
            raise PeerError(f"{self.name} is already running (pid {self.proc.pid})")
        full_env = dict(os.environ)
        if env:
            full_env.update(env)
        with open(self.log_path, "ab") as log:
            log.write(f"\n===== {time.strftime('%H:%M:%S')} start: {' '.join(argv)}\n".encode())
            log.flush()
            self.proc = procs.spawn(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=full_env,
                cwd=str(cwd) if cwd else None,
                start_new_session=True,
            )

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.running else None

    def check_alive(self):
        if self.proc is not None and self.proc.poll() is not None:
            raise PeerError(
                f"{self.name} exited with code {self.proc.returncode}; log tail ({self.log_path}):\n"
                + log_tail(self.log_path)
            )

    def stop(self, timeout: float = 10.0):
        """SIGTERM, wait, then SIGKILL. Safe to call repeatedly."""
        procs.stop(self.proc, timeout=timeout)
        self.proc = None

    def kill(self):
        """SIGKILL at once (simulates a crash)."""
        p = self.proc
        if p is None:
            return
        if p.poll() is None:
            p.kill()
            p.wait(timeout=10)
        procs.stop(p)  # forgets it
        self.proc = None


# --------------------------------------------------------------------------- headscale


class Headscale:
    """A headscale server on loopback with the embedded DERP server.

    Ports and database are chosen once in __init__, so stop()/start() (or
    restart()) brings the same server back on the same address with its state.
    """

    def __init__(
        self,
        workdir: Path | str,
        bin_dir: Path | str | None = None,
        base_domain: str = "tailnet.test",
        magic_dns: bool = True,
        node_expiry: str = "0",
        ephemeral_inactivity_timeout: str = "30m",
        log_level: str = "info",
    ):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.bin = Path(bin_dir) if bin_dir else peers_bin()
        self.exe = str(self.bin / "headscale")
        self.port = free_port()
        self.metrics_port = free_port()
        self.grpc_port = free_port()
        self.stun_port = free_port(udp=True)
        self.base_domain = base_domain
        self.magic_dns = magic_dns
        self.node_expiry = node_expiry
        self.ephemeral_inactivity_timeout = ephemeral_inactivity_timeout
        self.log_level = log_level
        self.config_path = self.workdir / "config.yaml"
        self.socket_path = self.workdir / "headscale.sock"
        self.log_path = self.workdir / "headscale.log"
        self._p = _Process("headscale", self.log_path)
        self.write_config()

    # -- config

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def config_text(self) -> str:
        d = self.workdir
        return f"""\
# Generated by tests/real_peers/peers.py
server_url: {self.url}
listen_addr: 127.0.0.1:{self.port}
metrics_listen_addr: 127.0.0.1:{self.metrics_port}
grpc_listen_addr: 127.0.0.1:{self.grpc_port}
grpc_allow_insecure: false
noise:
  private_key_path: {d}/noise_private.key
prefixes:
  v4: 100.64.0.0/10
  v6: fd7a:115c:a1e0::/48
  allocation: sequential
derp:
  server:
    enabled: true
    region_id: 999
    region_code: "headscale"
    region_name: "Headscale Embedded DERP"
    verify_clients: true
    stun_listen_addr: "127.0.0.1:{self.stun_port}"
    private_key_path: {d}/derp_server_private.key
    automatically_add_embedded_derp_region: true
    ipv4: 127.0.0.1
  urls: []
  paths: []
  auto_update_enabled: false
  update_frequency: 3h
disable_check_updates: true
node:
  expiry: {self.node_expiry}
  ephemeral:
    inactivity_timeout: {self.ephemeral_inactivity_timeout}
database:
  type: sqlite
  sqlite:
    path: {d}/db.sqlite
    write_ahead_log: true
log:
  level: {self.log_level}
  format: text
policy:
  mode: file
  path: ""
dns:
  magic_dns: {"true" if self.magic_dns else "false"}
  base_domain: {self.base_domain}
  override_local_dns: false
  nameservers:
    global: []
    split: {{}}
  search_domains: []
  extra_records: []
unix_socket: {self.socket_path}
unix_socket_permission: "0770"
logtail:
  enabled: false
taildrop:
  enabled: false
"""

    def write_config(self):
        self.config_path.write_text(self.config_text())

    # -- lifecycle

    @property
    def running(self) -> bool:
        return self._p.running

    @property
    def pid(self) -> int | None:
        return self._p.pid

    def start(self, timeout: float = 30.0) -> "Headscale":
        self._p.spawn([self.exe, "-c", str(self.config_path), "serve"], cwd=self.workdir)
        try:
            _wait(self._ready, timeout, 0.1, "headscale to serve /health and its CLI socket")
        except TimeoutError as e:
            self.stop()
            raise PeerError(f"{e}; log tail ({self.log_path}):\n{log_tail(self.log_path)}") from None
        return self

    def _ready(self) -> bool:
        self._p.check_alive()
        try:
            with urllib.request.urlopen(self.url + "/health", timeout=2) as r:
                if r.status != 200:
                    return False
        except (urllib.error.URLError, OSError):
            return False
        if not self.socket_path.exists():
            return False
        r = self._run_cli(["health"], timeout=5)
        return r.returncode == 0

    def stop(self):
        self._p.stop()

    def kill(self):
        self._p.kill()

    def restart(self, down_seconds: float = 0.0, timeout: float = 30.0) -> "Headscale":
        """Stop, optionally stay down for down_seconds, start again (same ports, same db)."""
        self.stop()
        if down_seconds:
            time.sleep(down_seconds)
        return self.start(timeout=timeout)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # -- CLI

    def _run_cli(self, args: list[str], timeout: float = 30.0) -> subprocess.CompletedProcess:
        return subprocess.run(
            [self.exe, "-c", str(self.config_path), *args],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.workdir,
        )

    def cli(self, *args: str, json_out: bool = True, check: bool = True, timeout: float = 30.0) -> Any:
        """Run the headscale CLI against this instance.

        With json_out (default) adds `-o json` and returns the parsed JSON;
        otherwise returns stdout. Raises PeerError on failure when check.
        """
        argv = [*args, "-o", "json"] if json_out else list(args)
        r = self._run_cli(argv, timeout=timeout)
        if check and r.returncode != 0:
            raise PeerError(
                f"headscale {' '.join(argv)} failed ({r.returncode}):\nstdout: {r.stdout}\nstderr: {r.stderr}\n"
                f"server log tail ({self.log_path}):\n{log_tail(self.log_path)}"
            )
        if not json_out:
            return r.stdout
        out = r.stdout.strip()
        if not out:
            return None
        try:
            return json.loads(out)
        except json.JSONDecodeError:
            return out

    def create_user(self, name: str) -> int:
        u = self.cli("users", "create", name)
        return int(u["id"])

    def users(self) -> list[dict]:
        return self.cli("users", "list") or []

    def preauth_key(
        self,
        user_id: int,
        reusable: bool = False,
        ephemeral: bool = False,
        expiration: str = "1h",
        tags: list[str] | None = None,
    ) -> str:
        args = ["preauthkeys", "create", "--user", str(user_id), "--expiration", expiration]
        if reusable:
            args.append("--reusable")
        if ephemeral:
            args.append("--ephemeral")
        if tags:
            args += ["--tags", ",".join(tags)]
        k = self.cli(*args)
        return k["key"]

    def api_key(self, expiration: str = "1h") -> str:
        """A new API key for headscale's REST API (`headscale apikeys create`)."""
        out = self.cli("apikeys", "create", "--expiration", expiration, json_out=False).strip()
        key = out.splitlines()[-1].strip() if out else ""
        if not key.startswith("hskey-api-"):
            raise PeerError(f"headscale apikeys create printed no API key: {out[:40]!r}")
        return key

    def preauth_keys(self) -> list[dict]:
        return self.cli("preauthkeys", "list") or []

    def nodes(self) -> list[dict]:
        return self.cli("nodes", "list") or []

    def node(self, hostname: str) -> dict | None:
        for n in self.nodes():
            if hostname in (n.get("name"), n.get("given_name")):
                return n
        return None

    def expire_node(self, node_id: int | str):
        return self.cli("nodes", "expire", "--identifier", str(node_id))

    def delete_node(self, node_id: int | str):
        return self.cli("nodes", "delete", "--identifier", str(node_id), "--force")

    def wait_node_online(self, hostname: str, timeout: float = 30.0) -> dict:
        def online():
            n = self.node(hostname)
            return n if n and n.get("online") else None

        try:
            return _wait(online, timeout, 0.25, f"headscale to list node {hostname!r} online")
        except TimeoutError as e:
            raise PeerError(
                f"{e}; nodes: {json.dumps(self.nodes())}\nlog tail ({self.log_path}):\n{log_tail(self.log_path)}"
            ) from None


# --------------------------------------------------------------------------- tailscaled


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float | None):
        super().__init__(LOCALAPI_HOST, timeout=timeout)
        self._path = path

    def connect(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        if self.timeout is not None:
            s.settimeout(self.timeout)
        s.connect(self._path)
        self.sock = s


class LocalAPIError(PeerError):
    def __init__(self, status: int, body: str, msg: str):
        super().__init__(msg)
        self.status = status
        self.body = body


class BusWatcher:
    """Reads newline-delimited JSON notifies from watch-ipn-bus in a thread.

    Each item in .events is (seconds since the watcher started, notify dict).
    """

    def __init__(self, socket_path: str, mask: int):
        self.t0 = time.monotonic()
        self.events: list[tuple[float, dict]] = []
        self._q: queue.Queue = queue.Queue()
        self._conn = _UnixHTTPConnection(socket_path, timeout=None)
        self._conn.request("GET", f"/localapi/v0/watch-ipn-bus?mask={mask}")
        self._resp = self._conn.getresponse()
        if self._resp.status != 200:
            body = self._resp.read().decode(errors="replace")
            raise LocalAPIError(self._resp.status, body, f"watch-ipn-bus: {self._resp.status} {body}")
        self._th = threading.Thread(target=self._run, daemon=True)
        self._th.start()

    def _run(self):
        try:
            while True:
                line = self._resp.readline()
                if not line:
                    break
                line = line.strip()
                if not line:
                    continue
                ev = (round(time.monotonic() - self.t0, 3), json.loads(line))
                self.events.append(ev)
                self._q.put(ev)
        except Exception:  # noqa: BLE001 - connection closed
            pass
        self._q.put(None)

    def next(self, timeout: float) -> tuple[float, dict] | None:
        try:
            return self._q.get(timeout=timeout)
        except queue.Empty:
            return None

    def wait_for(self, pred, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no matching notify within {timeout}s; got {self.events!r}")
            ev = self.next(left)
            if ev is None:
                if not self._th.is_alive():
                    raise PeerError(f"bus closed; got {self.events!r}")
                continue
            if pred(ev[1]):
                return ev[1]

    def close(self):
        try:
            if self._conn.sock:
                self._conn.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._conn.close()
        self._th.join(timeout=5)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class Tailscaled:
    """A userspace-networking tailscaled with its own state dir and socket."""

    DEFAULT_ENV = {
        "TS_DISABLE_PORTMAPPER": "1",
        # headscale's embedded DERP serves plain HTTP on server_url's port.
        "TS_DEBUG_USE_DERP_HTTP": "1",
    }

    def __init__(
        self,
        workdir: Path | str,
        name: str,
        bin_dir: Path | str | None = None,
        env: dict[str, str] | None = None,
        extra_args: list[str] | None = None,
    ):
        self.name = name
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.bin = Path(bin_dir) if bin_dir else peers_bin()
        self.exe = str(self.bin / "tailscaled")
        self.cli_exe = str(self.bin / "tailscale")
        self.statedir = self.workdir / "state"
        self.socket = str(self.workdir / "tailscaled.sock")
        self.log_path = self.workdir / "tailscaled.log"
        self.logs_dir = self.workdir / "logs"
        # TS_LOGS_DIR keeps logpolicy's config file out of /var/lib/tailscale.
        self.env = {**self.DEFAULT_ENV, "TS_LOGS_DIR": str(self.logs_dir), **(env or {})}
        self.extra_args = list(extra_args or [])
        self._p = _Process(f"tailscaled[{name}]", self.log_path)

    # -- lifecycle

    @property
    def pid(self) -> int | None:
        return self._p.pid

    @property
    def running(self) -> bool:
        return self._p.running

    def start(self, timeout: float = 30.0) -> "Tailscaled":
        self.statedir.mkdir(parents=True, exist_ok=True)
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        argv = [
            self.exe,
            "--tun=userspace-networking",
            f"--statedir={self.statedir}",
            f"--socket={self.socket}",
            "--port=0",
            "--no-logs-no-support",
            *self.extra_args,
        ]
        self._p.spawn(argv, env=self.env, cwd=self.workdir)

        def ready():
            self._p.check_alive()
            return self.localapi("GET", "/localapi/v0/status?peers=false", timeout=2) is not None

        try:
            _wait(ready, timeout, 0.1, f"tailscaled[{self.name}] LocalAPI")
        except TimeoutError as e:
            self.stop()
            raise PeerError(f"{e}; log tail ({self.log_path}):\n{log_tail(self.log_path)}") from None
        return self

    def stop(self, timeout: float = 10.0):
        self._p.stop(timeout=timeout)

    def kill(self):
        self._p.kill()

    def wipe_state(self):
        """Remove the state dir (only while stopped)."""
        if self.running:
            raise PeerError(f"tailscaled[{self.name}] must be stopped before wipe_state()")
        shutil.rmtree(self.statedir, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # -- CLI

    def cli(self, *args: str, check: bool = True, timeout: float = 60.0) -> subprocess.CompletedProcess:
        """Run the tailscale CLI against this daemon; returns CompletedProcess (text)."""
        argv = [self.cli_exe, f"--socket={self.socket}", *args]
        r = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)
        if check and r.returncode != 0:
            raise PeerError(
                f"{' '.join(argv)} failed ({r.returncode}):\nstdout: {r.stdout}\nstderr: {r.stderr}\n"
                f"tailscaled log tail ({self.log_path}):\n{log_tail(self.log_path)}"
            )
        return r

    def write_key_file(self, key: str, name: str = "authkey") -> Path:
        """Write key to a 0600 file in the work dir; returns its path."""
        path = self.workdir / name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(key + "\n")
        os.chmod(path, 0o600)
        return path

    def up(
        self,
        login_server: str,
        key: str,
        hostname: str | None = None,
        extra: list[str] | None = None,
        check: bool = True,
        timeout: float = 60.0,
    ) -> subprocess.CompletedProcess:
        """`tailscale up --login-server URL --auth-key file:PATH` with a 0600 key file."""
        key_file = self.write_key_file(key)
        args = [
            "up",
            f"--login-server={login_server}",
            f"--auth-key=file:{key_file}",
            f"--hostname={hostname or self.name}",
            f"--timeout={int(timeout)}s",
            *(extra or []),
        ]
        return self.cli(*args, check=check, timeout=timeout + 15)

    def status(self, peers: bool = True) -> dict:
        args = ["status", "--json"] + ([] if peers else ["--peers=false"])
        return json.loads(self.cli(*args).stdout)

    def state(self) -> str:
        return self.status(peers=False)["BackendState"]

    def wait_state(self, name: str, timeout: float = 30.0) -> dict:
        """Wait until BackendState == name; returns the status dict."""
        last: dict = {}

        def check():
            nonlocal last
            self._p.check_alive()
            last = self.localapi("GET", "/localapi/v0/status?peers=false", timeout=5)
            return last if last.get("BackendState") == name else None

        try:
            return _wait(check, timeout, 0.2, f"tailscaled[{self.name}] BackendState {name}")
        except TimeoutError as e:
            raise PeerError(
                f"{e}; last BackendState={last.get('BackendState')!r} Health={last.get('Health')!r}\n"
                f"log tail ({self.log_path}):\n{log_tail(self.log_path)}"
            ) from None

    def ips(self) -> list[str]:
        return list(self.status(peers=False).get("TailscaleIPs") or [])

    def ipv4(self) -> str | None:
        return next((ip for ip in self.ips() if ":" not in ip), None)

    # -- raw LocalAPI

    def localapi(
        self,
        method: str,
        path: str,
        body: Any = None,
        timeout: float = 30.0,
        raw: bool = False,
    ) -> Any:
        """One LocalAPI request over the unix socket. Returns parsed JSON (or text
        if not JSON, or bytes if raw). Raises LocalAPIError on HTTP status >= 400."""
        conn = _UnixHTTPConnection(self.socket, timeout=timeout)
        try:
            headers = {}
            data = None
            if body is not None:
                data = body if isinstance(body, (bytes, str)) else json.dumps(body)
                if isinstance(data, str):
                    data = data.encode()
                headers["Content-Type"] = "application/json"
            conn.request(method, path, body=data, headers=headers)
            resp = conn.getresponse()
            payload = resp.read()
        finally:
            conn.close()
        if resp.status >= 400:
            text = payload.decode(errors="replace")
            raise LocalAPIError(resp.status, text, f"{method} {path}: HTTP {resp.status}: {text.strip()}")
        if raw:
            return payload
        text = payload.decode(errors="replace")
        if not text.strip():
            return None
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            return text

    def watch_bus(self, mask: int = 2) -> BusWatcher:
        """Open GET /localapi/v0/watch-ipn-bus?mask=MASK and record notifies."""
        return BusWatcher(self.socket, mask)

    def prefs(self) -> dict:
        return self.localapi("GET", "/localapi/v0/prefs")


def random_key() -> str:
    return secrets.token_hex(24)


def iter_states(events: list[tuple[float, dict]]) -> Iterator[tuple[float, str]]:
    for t, n in events:
        if "State" in n:
            yield t, IPN_STATES.get(n["State"], str(n["State"]))
