"""Shared pieces of the benchmark: the approaches that bring a tailscaled onto the tailnet, exact
timing of "socket accepting" and "BackendState Running", and per-process cost from /proc.

Every approach drives one node (one userspace-networking tailscaled with its own socket and
state dir) against one real headscale on loopback:

    (a) bare-up       `tailscale up --login-server … --auth-key file:…` fired at the first accept
    (b) tailjoin      `tailjoin run`, started at the first accept
    (c) classic       tests/bench/baselines/classic-autoconnect.sh (sleep 2, status | jq, up)
    (d) poll          tests/bench/baselines/poll-autoconnect.sh (status | jq every 0.5 s, up)
    (e) containerboot tailscale's containerboot (it starts tailscaled itself, userspace mode)

Times are time.monotonic() (CLOCK_MONOTONIC, shared by every process on the machine).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
import sys  # noqa: E402

sys.path.insert(0, str(ROOT / "tests" / "real_peers"))

import peers  # noqa: E402,F401  (re-exported for the other bench modules)

BASELINES = HERE / "baselines"
RUNNING = 6  # ipn.State Running
STATE_NAMES = peers.IPN_STATES

APPROACHES = ["bare-up", "tailjoin", "classic", "poll", "containerboot"]
# Not one of the five: tailjoin started together with tailscaled, before its socket exists, as
# at boot without systemd (then tailjoin looks for the socket with its retry backoff).
EARLY = "tailjoin-early"
LABELS = {
    "bare-up": "(a) bare `tailscale up --auth-key file:…` at the first accept",
    "tailjoin": "(b) tailjoin, started at the first accept",
    EARLY: "(b′) tailjoin, started together with tailscaled (no systemd)",
    "classic": "(c) classic script: `sleep 2`, status via CLI + jq, `up`",
    "poll": "(d) CLI + jq poll every 0.5 s (nixpkgs-style autoconnect)",
    "containerboot": "(e) containerboot (userspace mode)",
}
SHORT = {
    "bare-up": "(a) bare up",
    "tailjoin": "(b) tailjoin",
    EARLY: "(b′) tailjoin early",
    "classic": "(c) classic",
    "poll": "(d) poll 0.5 s",
    "containerboot": "(e) containerboot",
}


class BenchError(RuntimeError):
    pass


def tailjoin_bin() -> str:
    value = os.environ.get("TAILJOIN_BIN", "")
    if not value or not os.access(value, os.X_OK):
        raise BenchError(f"$TAILJOIN_BIN={value!r} is not an executable tailjoin")
    return value


def provisioner_bin() -> str:
    """$TAILJOIN_PROVISIONER_BIN, else `tailjoin-provisioner` beside $TAILJOIN_BIN."""
    value = os.environ.get("TAILJOIN_PROVISIONER_BIN", "") or str(Path(tailjoin_bin()).with_name("tailjoin-provisioner"))
    if not os.access(value, os.X_OK):
        raise BenchError(f"no executable tailjoin-provisioner at {value!r}: build agent/ or set $TAILJOIN_PROVISIONER_BIN")
    return value


def containerboot_bin() -> str:
    d = os.environ.get("TAILJOIN_CONTAINERBOOT_BIN", "")
    exe = Path(d) / "containerboot"
    if not d or not os.access(exe, os.X_OK):
        raise BenchError(
            f"$TAILJOIN_CONTAINERBOOT_BIN={d!r} holds no containerboot; run tests/bench/build-containerboot.sh"
        )
    return str(exe)


# --------------------------------------------------------------------------- timing


def wait_accept(sock: str | Path, timeout: float = 30.0, alive=None) -> float:
    """Polls connect() on the unix socket every 2 ms; returns the monotonic time of the first
    successful connect, i.e. when the socket started accepting."""
    deadline = time.monotonic() + timeout
    sock = str(sock)
    while True:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(sock)
            return time.monotonic()
        except OSError:
            pass
        finally:
            s.close()
        if time.monotonic() > deadline:
            raise BenchError(f"{sock} never accepted within {timeout}s")
        if alive is not None and not alive():
            raise BenchError(f"the process that should serve {sock} exited")
        time.sleep(0.002)


class StateWatch:
    """Follows tailscaled's IPN bus (`watch-ipn-bus?mask=2`: the initial state, then every State
    notify) and records when each state arrived. Event-driven: no polling of tailscaled."""

    def __init__(self, sock: str | Path, record_all: bool = False):
        self.events: list[tuple[float, int]] = []
        self.record_all = record_all
        self.notifies: list[tuple[float, dict]] = []  # every notify, with record_all (for debugging)
        self._cv = threading.Condition()
        self._closed = False
        self._s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._s.connect(str(sock))
        self._s.sendall(
            b"GET /localapi/v0/watch-ipn-bus?mask=2 HTTP/1.1\r\nHost: local-tailscaled.sock\r\n\r\n"
        )
        self._th = threading.Thread(target=self._run, daemon=True)
        self._th.start()

    def _run(self):
        f = self._s.makefile("rb")
        try:
            line = f.readline()
            if b" 200 " not in line:
                raise BenchError(f"watch-ipn-bus answered {line!r}")
            chunked = False
            while True:  # headers
                line = f.readline()
                if not line or line in (b"\r\n", b"\n"):
                    break
                if line.lower().startswith(b"transfer-encoding:") and b"chunked" in line.lower():
                    chunked = True
            buf = b""
            while True:
                if chunked:
                    size_line = f.readline()
                    if not size_line:
                        break
                    size = int(size_line.strip().split(b";")[0] or b"0", 16)
                    if size == 0:
                        break
                    data = f.read(size)
                    f.readline()
                else:
                    data = f.readline()
                    if not data:
                        break
                now = time.monotonic()
                buf += data
                while b"\n" in buf:
                    raw, buf = buf.split(b"\n", 1)
                    raw = raw.strip()
                    if not raw:
                        continue
                    try:
                        n = json.loads(raw)
                    except json.JSONDecodeError:
                        continue
                    if self.record_all:
                        self.notifies.append((now, n))
                    st = n.get("State")
                    if st is not None:
                        with self._cv:
                            self.events.append((now, st))
                            self._cv.notify_all()
        except (OSError, ValueError, BenchError):
            pass
        finally:
            with self._cv:
                self._closed = True
                self._cv.notify_all()

    def wait_state(self, state: int, timeout: float) -> float:
        deadline = time.monotonic() + timeout
        with self._cv:
            while True:
                for t, st in self.events:
                    if st == state:
                        return t
                left = deadline - time.monotonic()
                if self._closed:
                    raise BenchError(f"IPN bus closed before state {STATE_NAMES.get(state)}; saw {self.events}")
                if left <= 0:
                    raise BenchError(
                        f"no state {STATE_NAMES.get(state)} within {timeout}s; saw "
                        f"{[STATE_NAMES.get(s) for _, s in self.events]}"
                    )
                self._cv.wait(left)

    def close(self):
        try:
            self._s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._s.close()
        self._th.join(timeout=5)


def wait_running(sock: str | Path, timeout: float = 90.0) -> float:
    """Monotonic time of the first Running notify on a freshly accepting socket."""
    w = StateWatch(sock)
    try:
        return w.wait_state(RUNNING, timeout)
    finally:
        w.close()


# --------------------------------------------------------------------------- /proc


def proc_children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            try:
                out += [int(x) for x in Path(f"/proc/{pid}/task/{task}/children").read_text().split()]
            except OSError:
                pass
    except OSError:
        pass
    return out


def proc_cost(pid: int) -> dict:
    """Context switches summed over all threads, CPU seconds (run time of every thread from
    /proc/PID/task/*/schedstat, in ns, plus the user+system ticks of reaped children) and VmRSS
    (with its anonymous and file-backed parts) in KiB."""
    clk = os.sysconf("SC_CLK_TCK")
    vol = nonvol = 0
    run_ns = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            for line in Path(f"/proc/{pid}/task/{task}/status").read_text().splitlines():
                if line.startswith("voluntary_ctxt_switches:"):
                    vol += int(line.split()[1])
                elif line.startswith("nonvoluntary_ctxt_switches:"):
                    nonvol += int(line.split()[1])
            run_ns += int(Path(f"/proc/{pid}/task/{task}/schedstat").read_text().split()[0])
        except OSError:
            pass  # a thread ended meanwhile
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    cutime, cstime = int(fields[13]), int(fields[14])
    mem = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile", "RssShmem", "Threads"):
            mem[key] = int(value.split()[0])
    return {
        "ctxsw": vol + nonvol,
        "ctxsw_vol": vol,
        "cpu_s": run_ns / 1e9 + (cutime + cstime) / clk,
        "rss_kib": mem.get("VmRSS", 0),
        "rss_anon_kib": mem.get("RssAnon", 0),
        "rss_file_kib": mem.get("RssFile", 0),
        "threads": mem.get("Threads", 0),
    }


def cost_delta(a: dict, b: dict) -> dict:
    return {"ctxsw": b["ctxsw"] - a["ctxsw"], "cpu_s": b["cpu_s"] - a["cpu_s"], "rss_kib": b["rss_kib"],
            "rss_anon_kib": b["rss_anon_kib"], "rss_file_kib": b["rss_file_kib"], "threads": b["threads"]}


# --------------------------------------------------------------------------- nodes


def _terminate(p: subprocess.Popen | None, timeout: float = 10.0):
    if p is None or p.poll() is not None:
        return
    try:
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait(timeout=10)
    except ProcessLookupError:
        pass


def _kill_pid(pid: int | None):
    if not pid:
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    for _ in range(100):
        if not Path(f"/proc/{pid}").exists() or Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] == "Z":
            return
        time.sleep(0.05)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


# headscale 0.29 batches NodeStore writes and applies them every 500 ms (tuning.
# node_store_batch_timeout). A registration waits for one or two of those ticks, so with the
# default every join takes 1.3 or 1.8 s longer, at random: joins are 4.4 s or 4.9 s, a spread of
# 10 % that swamps what the approaches differ by. With 10 ms they take 3.1 s ± 0.01 s.
STORE_BATCH_TIMEOUT = "10ms"


class IsolatedHeadscale(peers.Headscale):
    """headscale with a policy that grants nothing: every node is alone in its tailnet.
    (An empty ACL list is not enough: headscale 0.29 treats it as no policy, i.e. allow all.
    One rule between two addresses no node has makes everything else denied.) With
    store_batch_timeout, headscale's NodeStore batching interval is set to it."""

    def __init__(self, workdir, store_batch_timeout: str | None = STORE_BATCH_TIMEOUT, **kw):
        self.store_batch_timeout = store_batch_timeout
        super().__init__(workdir, **kw)

    def config_text(self) -> str:
        policy = self.workdir / "policy.hujson"
        policy.write_text(
            '{"hosts": {"nobody": "192.0.2.1/32"},\n'
            ' "acls": [{"action": "accept", "src": ["nobody"], "dst": ["nobody:*"]}]}\n'
        )
        text = super().config_text().replace('  path: ""', f"  path: {policy}", 1)
        if self.store_batch_timeout:
            text += f"tuning:\n  node_store_batch_timeout: {self.store_batch_timeout}\n"
        return text


_DEFAULT_SOCKET_DIR = Path("/var/run/tailscale")


class Node:
    """One machine: a tailscaled brought onto the tailnet by one approach."""

    def __init__(self, approach: str, work: Path, name: str, login_server: str, key_file: Path | None = None,
                 keep_watching: bool = True, tailjoin_args: list[str] | None = None):
        self.approach = approach
        self.name = name
        self.login_server = login_server
        self.work = Path(work)
        self.work.mkdir(parents=True, exist_ok=True)
        # The harness class gives paths, env and the binaries; its process is not used for (e).
        self.ts = peers.Tailscaled(self.work, name)
        self.key_file = key_file
        self.keep_watching = keep_watching
        self.tailjoin_args = tailjoin_args or []
        self.helper: subprocess.Popen | None = None  # the approach's own process, if long-lived
        self.cboot: subprocess.Popen | None = None
        self.cboot_log = self.work / "containerboot.log"
        self.helper_log = self.work / f"{approach}.log"
        self.tailjoin_state = self.work / "tailjoin-state"

    # -- helpers

    @property
    def socket(self) -> str:
        return self.ts.socket

    def write_key(self, key: str):
        self.key_file = self.ts.write_key_file(key)

    def _popen(self, argv: list[str], env: dict | None = None, log: Path | None = None) -> subprocess.Popen:
        full = dict(os.environ)
        full = {k: v for k, v in full.items() if not k.startswith("TAILJOIN_")}
        full["PATH"] = f"{self.ts.bin}:{full.get('PATH', '')}"
        if env:
            full.update(env)
        with open(log or self.helper_log, "ab") as f:
            return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT, env=full,
                                    cwd=str(self.work), start_new_session=True)

    def spawn_tailscaled(self):
        self.ts.statedir.mkdir(parents=True, exist_ok=True)
        self.ts.logs_dir.mkdir(parents=True, exist_ok=True)
        self.ts._p.spawn(
            [self.ts.exe, "--tun=userspace-networking", f"--statedir={self.ts.statedir}",
             f"--socket={self.ts.socket}", "--port=0", "--no-logs-no-support"],
            env=self.ts.env, cwd=self.ts.workdir,
        )

    def tailjoin_argv(self) -> list[str]:
        return [tailjoin_bin(), "run", f"--socket={self.socket}", f"--login-server={self.login_server}",
                f"--hostname={self.name}", f"--state-dir={self.tailjoin_state}", "--log-level=info",
                f"--auth-key-file={self.key_file}", *self.tailjoin_args]

    def _script_argv(self, script: str) -> list[str]:
        return ["bash", str(BASELINES / script), self.socket, self.login_server, str(self.key_file), self.name]

    def _fire_up(self) -> subprocess.Popen:
        return self._popen([self.ts.cli_exe, f"--socket={self.socket}", "up", f"--login-server={self.login_server}",
                            f"--auth-key=file:{self.key_file}", f"--hostname={self.name}"])

    # -- containerboot

    def _start_containerboot(self):
        env = {
            **self.ts.env,
            "TS_AUTHKEY": f"file:{self.key_file}",
            "TS_USERSPACE": "true",
            "TS_STATE_DIR": str(self.ts.statedir),
            "TS_SOCKET": self.socket,
            "TS_HOSTNAME": self.name,
            "TS_EXTRA_ARGS": f"--login-server={self.login_server}",
            "TS_TAILSCALED_EXTRA_ARGS": "--port=0 --no-logs-no-support",
            "TS_KUBE_SECRET": "",
        }
        self.ts.statedir.mkdir(parents=True, exist_ok=True)
        self.ts.logs_dir.mkdir(parents=True, exist_ok=True)
        self.cboot = self._popen([containerboot_bin()], env=env, log=self.cboot_log)

    def containerboot_tailscaled_pid(self, timeout: float = 5.0) -> int | None:
        deadline = time.monotonic() + timeout
        while self.cboot is not None and time.monotonic() < deadline:
            for c in proc_children(self.cboot.pid):
                try:
                    if Path(f"/proc/{c}/comm").read_text().strip() == "tailscaled":
                        return c
                except OSError:
                    pass
            time.sleep(0.01)
        return None

    def tailscaled_pid(self) -> int | None:
        if self.approach == "containerboot":
            return self.containerboot_tailscaled_pid()
        return self.ts.pid

    def agent_pid(self) -> int | None:
        """The approach's own long-lived process (None for one-shot approaches)."""
        if self.approach == "containerboot":
            return self.cboot.pid if self.cboot else None
        return self.helper.pid if self.helper and self.helper.poll() is None else None

    # -- lifecycle

    def boot(self) -> float:
        """Starts tailscaled (for (e): containerboot, which starts it) and the approach; returns
        the monotonic time at which tailscaled's socket first accepted."""
        if self.approach == "containerboot":
            self._start_containerboot()
            t0 = wait_accept(self.socket, alive=lambda: self.cboot.poll() is None)
            return t0
        self.spawn_tailscaled()
        if self.approach == EARLY:
            self._start_approach()
        t0 = wait_accept(self.socket, alive=lambda: self.ts.running)
        if self.approach != EARLY:
            self._start_approach()
        return t0

    def _start_approach(self):
        if self.approach == "bare-up":
            self.helper = self._fire_up()
        elif self.approach in ("tailjoin", EARLY):
            if self.helper is None or self.helper.poll() is not None:
                self.helper = self._popen(self.tailjoin_argv())
        elif self.approach == "classic":
            self.helper = self._popen(self._script_argv("classic-autoconnect.sh"))
        elif self.approach == "poll":
            if self.helper is None or self.helper.poll() is not None:
                self.helper = self._popen(self._script_argv("poll-autoconnect.sh"),
                                          env={"KEEP_WATCHING": "1" if self.keep_watching else "0"})
        else:
            raise BenchError(f"unknown approach {self.approach}")

    def running_at(self, timeout: float = 90.0) -> float:
        return wait_running(self.socket, timeout)

    def restart_empty(self) -> tuple[float, float]:
        """tailscaled is stopped, its state wiped, and it starts again. Returns (time of the stop
        signal, time the new socket first accepted). Long-lived approaches (b, d) are left alone;
        one-shot ones (a, c) are started again at the accept, as a unit bound to tailscaled's
        (PartOf=/BindsTo=) would be; for (e) the container runtime's restart is emulated: when
        containerboot exits because its tailscaled went away, it is started again at once."""
        if self.approach == "containerboot":
            pid = self.containerboot_tailscaled_pid()
            t_stop = time.monotonic()
            _kill_pid(pid)
            try:
                self.cboot.wait(timeout=30)
            except subprocess.TimeoutExpired:
                _terminate(self.cboot)
            shutil.rmtree(self.ts.statedir, ignore_errors=True)
            self._start_containerboot()
            t0 = wait_accept(self.socket, alive=lambda: self.cboot.poll() is None)
            return t_stop, t0
        t_stop = time.monotonic()
        self.ts.stop()
        shutil.rmtree(self.ts.statedir, ignore_errors=True)
        if self.approach in ("bare-up", "classic") and self.helper is not None:
            _terminate(self.helper)
        self.spawn_tailscaled()
        t0 = wait_accept(self.socket, alive=lambda: self.ts.running)
        if self.approach in ("bare-up", "classic"):
            self._start_approach()
        return t_stop, t0

    def stop(self):
        _terminate(self.helper)
        if self.cboot is not None:
            ts_pid = self.containerboot_tailscaled_pid(timeout=0.5) if self.cboot.poll() is None else None
            _terminate(self.cboot, timeout=30)
            _kill_pid(ts_pid)
        self.ts.stop()


def cleanup_default_socket_link(work: Path, existed_before: bool):
    """containerboot symlinks /var/run/tailscale/tailscaled.sock to its socket when it may. Remove
    such a link if it points into this benchmark's work dir (never anything else), and the
    directory if it was not there before."""
    link = _DEFAULT_SOCKET_DIR / "tailscaled.sock"
    try:
        if link.is_symlink() and os.readlink(link).startswith(str(work)):
            link.unlink()
    except OSError:
        pass
    if not existed_before:
        try:
            _DEFAULT_SOCKET_DIR.rmdir()
        except OSError:
            pass


def default_socket_dir_exists() -> bool:
    return _DEFAULT_SOCKET_DIR.exists()
