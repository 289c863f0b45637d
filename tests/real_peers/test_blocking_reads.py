"""Reads that must never hang the agent, and `tailjoin status` that must not vouch for what it
cannot see (issue 14, found on landed code): a key file or credential that is a FIFO nobody
writes to once froze `tailjoin run` (SIGTERM ignored); `tailjoin status` took 30 s on a hung
tailscaled and said "running since" for an agent that had died; a key with spaces around it was
refused. Real tailscaled and headscale; the FIFOs, the silent socket and SIGSTOP are real too."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

from agent import Agent, agent_bin
from test_agent_scenarios import agents, assert_joined, issue_key  # noqa: F401  (fixture)


def fifo(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(path, 0o600)
    return path


def wait_log(agent: Agent, needle: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        log = agent.log()
        if needle in log:
            return log
        time.sleep(0.2)
    raise AssertionError(f"{needle!r} not in the agent's log within {timeout}s:\n{agent.log()[-3000:]}")


def sigterm_exit_seconds(agent: Agent) -> float:
    if agent.proc.poll() is not None:
        return 0.0
    t0 = time.monotonic()
    agent.proc.send_signal(signal.SIGTERM)
    try:
        agent.proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        agent.proc.kill()
        raise AssertionError(f"the agent ignored SIGTERM for 10 s:\n{agent.log()[-3000:]}")
    return time.monotonic() - t0


def test_a_fifo_key_file_is_refused_at_once_and_sigterm_ends_the_agent(headscale, tailscaled_factory, agent_factory,
                                                                        tmp_path):
    ts = tailscaled_factory("fifo-key")
    a = agent_factory(tmp_path / "agent", ts, headscale.url, key_file=fifo(tmp_path / "keys" / "authkey"))
    log = wait_log(a, "FIFO", 60)
    assert "not a regular file" in log, log[-2000:]
    assert sigterm_exit_seconds(a) < 5


def test_a_fifo_credential_is_refused_at_once(headscale, tailscaled_factory, agent_factory, tmp_path):
    ts = tailscaled_factory("fifo-cred")
    creds = tmp_path / "creds"
    fifo(creds / "ts-key")
    a = agent_factory(tmp_path / "agent", ts, headscale.url, args=["--auth-key-credential=ts-key"],
                      env={"CREDENTIALS_DIRECTORY": str(creds)})
    wait_log(a, "FIFO", 60)
    assert sigterm_exit_seconds(a) < 5


def test_a_fifo_config_is_refused_by_check_config_and_run(tmp_path):
    cfg = fifo(tmp_path / "config.json")
    for argv in ([agent_bin(), "check-config", str(cfg)], [agent_bin(), "run", f"--config={cfg}"]):
        t0 = time.monotonic()
        r = subprocess.run(argv, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
        assert time.monotonic() - t0 < 10, argv
        assert r.returncode == 2, (argv, r.returncode, r.stdout, r.stderr)
        assert "FIFO" in r.stderr and str(cfg) in r.stderr, r.stderr


def test_spaces_around_the_key_are_trimmed_and_it_joins(headscale, tailscaled_factory, agent_factory, tmp_path):
    ts = tailscaled_factory("spaced")
    key = issue_key(headscale)
    path = tmp_path / "k" / "authkey"
    path.parent.mkdir()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(f"  {key}  \n")
    a = agent_factory(tmp_path / "agent", ts, headscale.url, key_file=path)
    a.wait_state("running", timeout=60)
    assert_joined(headscale, ts)


def status(state_dir: Path, sock: Path) -> tuple[int, str, float]:
    t0 = time.monotonic()
    r = subprocess.run([agent_bin(), "status", f"--state-dir={state_dir}", f"--socket={sock}"],
                       capture_output=True, text=True, timeout=60)
    return r.returncode, r.stdout + r.stderr, time.monotonic() - t0


def test_status_answers_within_seconds_when_tailscaled_hangs(headscale, tailscaled_factory, tmp_path):
    # A socket that accepts and never answers.
    silent = tmp_path / "silent.sock"
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(str(silent))
    srv.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept():
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(srv.accept()[0])
            except OSError:
                pass
    t = threading.Thread(target=accept, daemon=True)
    t.start()
    try:
        code, out, took = status(tmp_path / "no-state", silent)
        assert took < 5, f"tailjoin status took {took:.1f}s on a silent socket:\n{out}"
        assert code != 0 and "not responding" in out, out
    finally:
        stop.set()
        t.join(timeout=10)
        srv.close()
        for c in held:
            c.close()

    # A real tailscaled, stopped with SIGSTOP.
    ts = tailscaled_factory("stopped")
    ts.wait_state("NeedsLogin", timeout=30)
    os.kill(ts.pid, signal.SIGSTOP)
    try:
        code, out, took = status(tmp_path / "no-state", ts.socket)
        assert took < 5, f"tailjoin status took {took:.1f}s on a SIGSTOPped tailscaled:\n{out}"
        assert code != 0 and "not responding" in out, out
    finally:
        os.kill(ts.pid, signal.SIGCONT)


def test_status_does_not_vouch_for_a_dead_agent(headscale, tailscaled_factory, agents):
    ts = tailscaled_factory("dies")
    a = agents(ts, key=issue_key(headscale))
    a.wait_state("running", timeout=60)
    code, out = a.status_command(as_json=False)
    assert code == 0 and "running since" in out, out

    a.proc.kill()
    a.proc.wait(timeout=10)
    code, out = a.status_command(as_json=False)
    assert code != 0, out
    assert "NOT RUNNING" in out and "the last state it recorded was running at" in out, out
    assert "running since" not in out, out
    code, out = a.status_command(as_json=True)
    doc = json.loads(out)
    assert code != 0 and doc["agent_alive"] is False and doc["running"] is False, doc
    assert doc["agent"]["state"] == "running", doc


def test_a_fifo_ca_bundle_is_refused_at_once(headscale, tailscaled_factory, agent_factory, tmp_path):
    ts = tailscaled_factory("fifo-ca")
    ca = fifo(tmp_path / "ca" / "lab-ca.pem")
    a = agent_factory(tmp_path / "agent", ts, headscale.url,
                      args=["--auth-key-url=https://127.0.0.1:9/key", f"--auth-key-ca-file={ca}"])
    log = wait_log(a, "FIFO", 60)
    assert "CA bundle" in log, log[-2000:]
    assert sigterm_exit_seconds(a) < 5
