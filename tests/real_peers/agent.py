"""Runs the real `tailjoin` binary against a real tailscaled, for the scenario tests.

The binary comes from $TAILJOIN_BIN (tests/run-all.sh builds it and exports the path).
Every agent's log, status outputs and state directory are recorded in LEAK_EVIDENCE so the
leak test can search them for keys after all scenarios ran.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import procs
from peers import PeerError, Tailscaled, log_tail

BIN_ENV = "TAILJOIN_BIN"
PROVISIONER_BIN_ENV = "TAILJOIN_PROVISIONER_BIN"

# Paths and texts the leak check searches: agent logs, state dirs, `tailjoin status` outputs.
LEAK_EVIDENCE: dict[str, list] = {"files": [], "dirs": [], "texts": []}


def provisioner_bin() -> str:
    """The provisioner, `tailjoin-provisioner`: $TAILJOIN_PROVISIONER_BIN, else the binary beside
    $TAILJOIN_BIN (one cargo build of agent/ makes both)."""
    value = os.environ.get(PROVISIONER_BIN_ENV, "").strip()
    if not value:
        value = str(Path(agent_bin()).with_name("tailjoin-provisioner"))
    if not os.access(value, os.X_OK):
        raise PeerError(
            f"no tailjoin-provisioner at {value}: build the workspace (cd agent && cargo build --release) "
            f"or set ${PROVISIONER_BIN_ENV}"
        )
    return value


def agent_bin() -> str:
    value = os.environ.get(BIN_ENV, "").strip()
    if not value:
        raise PeerError(
            f"${BIN_ENV} is not set: build the agent (cd agent && cargo build --release) and "
            f"export {BIN_ENV}=$PWD/agent/target/release/tailjoin, or run tests/run-all.sh"
        )
    if not os.access(value, os.X_OK):
        raise PeerError(f"${BIN_ENV}={value} is not an executable file")
    return value


class Agent:
    """One `tailjoin run` process for one tailscaled."""

    def __init__(
        self,
        workdir: Path,
        tailscaled: Tailscaled,
        login_server: str,
        key_file: Path | None = None,
        args: list[str] | None = None,
        env: dict[str, str] | None = None,
        log_level: str = "debug",
    ):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.exe = agent_bin()
        self.tailscaled = tailscaled
        self.state_dir = self.workdir / "state"
        self.log_path = self.workdir / "tailjoin.log"
        self.argv = [
            self.exe,
            "run",
            f"--socket={tailscaled.socket}",
            f"--login-server={login_server}",
            f"--hostname={tailscaled.name}",
            f"--state-dir={self.state_dir}",
            f"--log-level={log_level}",
            *([f"--auth-key-file={key_file}"] if key_file else []),
            *(args or []),
        ]
        self.env = env or {}
        self.proc: subprocess.Popen | None = None
        self.started_at: float | None = None
        LEAK_EVIDENCE["files"].append(self.log_path)
        LEAK_EVIDENCE["dirs"].append(self.state_dir)

    def start(self) -> "Agent":
        if self.running:
            raise PeerError(f"the agent is already running (pid {self.proc.pid})")
        env = {k: v for k, v in os.environ.items() if not k.startswith("TAILJOIN_")}
        env.update(self.env)
        log = open(self.log_path, "ab")
        self.started_at = time.monotonic()
        try:
            self.proc = procs.spawn(
                self.argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                start_new_session=True,
            )
        finally:
            log.close()
        return self

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def status_file(self) -> dict | None:
        try:
            return json.loads((self.state_dir / "status.json").read_text())
        except (OSError, json.JSONDecodeError):
            return None

    def wait_state(self, state: str, timeout: float) -> dict:
        """Waits until the agent's status file says `state` (e.g. "running")."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            last = self.status_file()
            if last and last.get("state") == state:
                return last
            if not self.running and not (last and last.get("state") == state):
                break
            time.sleep(0.1)
        raise PeerError(
            f"agent did not reach {state!r} within {timeout}s; last status {json.dumps(last)}; "
            f"exit code {self.proc.poll() if self.proc else None}\n--- agent log:\n{log_tail(self.log_path, 80)}\n"
            f"--- tailscaled log:\n{log_tail(self.tailscaled.log_path, 30)}"
        )

    def wait_exit(self, timeout: float) -> int:
        assert self.proc is not None
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise PeerError(
                f"agent still running after {timeout}s\n--- agent log:\n{log_tail(self.log_path, 80)}"
            ) from None

    def status_command(self, as_json: bool = True) -> tuple[int, str]:
        """Runs `tailjoin status` for this agent; returns (exit code, stdout)."""
        argv = [self.exe, "status", f"--state-dir={self.state_dir}", f"--socket={self.tailscaled.socket}"]
        if as_json:
            argv.append("--json")
        r = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        LEAK_EVIDENCE["texts"].append(r.stdout + r.stderr)
        return r.returncode, r.stdout

    def stop(self):
        """SIGTERM, up to 10 s to exit, then SIGKILL. Safe to call again, or on an agent that exited."""
        procs.stop(self.proc)
