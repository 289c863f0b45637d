"""Every HTTP client of the agent and the provisioner against real hostile servers on loopback
(hostile.py): a 500 whose body never ends (announced as 4 GiB, or chunked without end), a 200
whose body never ends, a body trickled a byte a second, and a server that accepts and never
answers. Each client must read at most a small cap (the server counts what it got out), keep
its memory small (peak RSS from /proc), say what went wrong, give up within the overall key
deadline, and stop on SIGTERM at once. The agent runs against real tailscaled and headscale.

A push endpoint that never answers must not hold up the agent's exit beyond the short flush
bound, and the log names the reports it exits without."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest

import peers
from agent import Agent
from hostile import ENDLESS, SILENT, SMALL, TRICKLE, Behaviour, HostileServer, peak_rss_kib
from provisioner import credentials_dir, kernel_cmdline
from test_agent_scenarios import issue_key, key_file
from test_health_push import secret_file, wait_log

MIB = 1 << 20
# Each of these is far below what the hostile servers offer (4 GiB and more per request).
RSS_LIMIT_KIB = 64 * 1024  # the agent's and the provisioner's peak resident memory
SENT_PER_REQUEST = 64 * MIB  # what one request may have taken in, kernel socket buffers included
SIGTERM_BOUND = 5.0  # seconds from SIGTERM to exit
FAST_RETRY = {"initial_delay_ms": 100, "max_delay_ms": 300, "max_attempts": 1000}


@pytest.fixture
def start_agent(agent_factory, tmp_path, headscale):
    """start(ts, doc, args=None, env=None, key=None) -> an agent run with config `doc`; all
    stopped at teardown (a test that stops one itself, with stop_promptly, may fail halfway)."""

    def start(ts: peers.Tailscaled, doc: dict, args: list[str] | None = None, env: dict[str, str] | None = None,
              key: str | None = None) -> Agent:
        workdir = tmp_path / f"agent-{ts.name}"
        workdir.mkdir(parents=True, exist_ok=True)
        cfg = workdir / "config.json"
        cfg.write_text(json.dumps(doc, indent=1))
        return agent_factory(workdir, ts, headscale.url, args=[f"--config={cfg}", *(args or [])], env=env,
                             key_file=key_file(workdir / "key", key) if key else None)

    return start


def stop_promptly(proc, what: str, log_path: Path, bound: float = SIGTERM_BOUND) -> float:
    """Sends SIGTERM; asserts the process exits (status 0) within `bound` seconds; returns how long it took."""
    assert proc.poll() is None, f"{what} exited before SIGTERM:\n{peers.log_tail(log_path, 60)}"
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        code = proc.wait(timeout=bound + 20)
    except Exception:
        proc.kill()
        raise
    took = time.monotonic() - t0
    assert took < bound, f"{what} took {took:.1f}s to stop on SIGTERM (bound {bound}s):\n{peers.log_tail(log_path, 60)}"
    assert code == 0, f"{what} exited with {code} on SIGTERM:\n{peers.log_tail(log_path, 60)}"
    return took


def assert_bounded(srv: HostileServer, prefix: str = "/"):
    """No request took in more than SENT_PER_REQUEST; each finished one was cut off by the client."""
    seen = srv.under(prefix)
    assert seen, "the hostile server saw no request"
    worst = max(r.sent for r in seen)
    assert worst < SENT_PER_REQUEST, f"one request took {worst / MIB:.1f} MiB from the hostile server"


def assert_small(pid: int, what: str):
    peak = peak_rss_kib(pid)
    assert peak < RSS_LIMIT_KIB, f"{what}'s peak RSS is {peak / 1024:.1f} MiB"


def wait_running_retries(agent: Agent, srv: HostileServer, n: int, prefix: str = "/"):
    """Waits for n requests and the agent's word that it retries; the agent must still run."""
    srv.wait_requests(n, timeout=90, prefix=prefix)
    wait_log(agent, "retrying in", 30)
    assert agent.running, peers.log_tail(agent.log_path, 60)


# ------------------------------------------------------------------------ HTTP key source


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length-4GiB", "chunked-endless"])
def test_hostile_key_server_500_with_an_endless_body(headscale, tailscaled_factory, start_agent, tmp_path, chunked):
    with HostileServer(Behaviour(ENDLESS, 500, chunked=chunked)) as srv:
        ts = tailscaled_factory("hostile500" + ("c" if chunked else "l"))
        agent = start_agent(ts, {
            "auth_key": {"http": {"url": srv.url(), "allow_plain_http": True}}, "retry": FAST_RETRY})

        wait_running_retries(agent, srv, 4)
        assert_small(agent.proc.pid, "the agent")
        assert_bounded(srv)
        log = agent.log()
        assert "HTTP 500 Internal Server Error: oops the server is sorry" in log, peers.log_tail(agent.log_path, 30)
        assert f"fetching the key from HTTP source {srv.url()} failed" in log
        assert ts.state() == "NeedsLogin"
        stop_promptly(agent.proc, "the agent", agent.log_path)
    # The excerpt is short: no log line carries more than a few hundred bytes of the body.
    assert max(len(line) for line in agent.log().splitlines()) < 1500


def test_hostile_key_server_200_with_an_endless_body_is_refused_at_the_cap(headscale, tailscaled_factory, start_agent,
                                                                           tmp_path):
    with HostileServer(Behaviour(ENDLESS, 200, chunked=True)) as srv:
        ts = tailscaled_factory("hostile200")
        agent = start_agent(ts, {
            "auth_key": {"http": {"url": srv.url(), "allow_plain_http": True}}, "retry": FAST_RETRY})
        code = agent.wait_exit(timeout=60)
        assert code == 4, peers.log_tail(agent.log_path, 30)
        assert len(srv.requests) == 1, "an oversized answer is not retried"
        assert_bounded(srv)
        assert "larger than 16384 bytes" in agent.status_file()["error"]["message"]


def test_silent_key_server_does_not_delay_sigterm(headscale, tailscaled_factory, start_agent, tmp_path):
    with HostileServer(Behaviour(SILENT)) as srv:
        ts = tailscaled_factory("silent")
        agent = start_agent(ts, {
            "auth_key": {"http": {"url": srv.url(), "allow_plain_http": True, "timeout_secs": 120}},
            "retry": FAST_RETRY})
        srv.wait_requests(1, timeout=60)
        stop_promptly(agent.proc, "the agent waiting for an answer", agent.log_path)


def test_trickling_key_server_hits_the_overall_deadline(headscale, tailscaled_factory, start_agent, tmp_path):
    # Announced within the cap, so that only time can stop it.
    with HostileServer(Behaviour(TRICKLE, 200, announced=1000)) as srv:
        ts = tailscaled_factory("trickle")
        agent = start_agent(ts, {
            "auth_key": {"http": {"url": srv.url(), "allow_plain_http": True, "timeout_secs": 120}},
            "retry": {**FAST_RETRY, "key_fetch_deadline_secs": 4}})
        (first,) = srv.wait_requests(1, timeout=60)
        code = agent.wait_exit(timeout=60)
        took = time.monotonic() - first.arrived
        assert code == 4, peers.log_tail(agent.log_path, 30)
        assert took < 4 + 5, f"the key fetch ran {took:.1f}s past a deadline of 4s"
        msg = agent.status_file()["error"]["message"]
        assert f"HTTP source {srv.url()}" in msg and "overall deadline of 4s" in msg, msg
        assert "retry.key_fetch_deadline_secs" in msg, msg
        assert 1 <= srv.requests[0].sent < 20, "the trickle was read as it came"


def test_silent_key_server_hits_the_overall_deadline_named_on_the_command_line(headscale, tailscaled_factory,
                                                                               start_agent, tmp_path):
    with HostileServer(Behaviour(SILENT)) as srv:
        ts = tailscaled_factory("silentdl")
        agent = start_agent(ts, {
            "auth_key": {"http": {"url": srv.url(), "allow_plain_http": True, "timeout_secs": 120}},
            "retry": FAST_RETRY}, args=["--key-fetch-deadline=3"])
        (first,) = srv.wait_requests(1, timeout=60)
        assert agent.wait_exit(timeout=60) == 4, peers.log_tail(agent.log_path, 30)
        assert time.monotonic() - first.arrived < 3 + 5
        msg = agent.status_file()["error"]["message"]
        assert "overall deadline of 3s" in msg and "had not finished" in msg, msg


# -------------------------------------------------------------------- kernel command line


def test_hostile_provisioner_on_the_kernel_command_line(headscale, tailscaled_factory, start_agent, tmp_path):
    with HostileServer(Behaviour(ENDLESS, 500)) as srv:
        ts = tailscaled_factory("hostilecmd")
        cmdline = kernel_cmdline(tmp_path / "cmdline", key_url=srv.url("/v1/key"),
                                 boot_token="fake-boot-token-hostile-0123")
        agent = start_agent(ts, {
            "auth_key": {"kernel_cmdline": {"path": str(cmdline), "allow_plain_http": True}},
            "retry": FAST_RETRY})

        wait_running_retries(agent, srv, 4, prefix="/v1/key")
        assert all(r.method == "POST" and r.headers.get("authorization") == "Bearer fake-boot-token-hostile-0123"
                   for r in srv.requests)
        assert_small(agent.proc.pid, "the agent")
        assert_bounded(srv)
        assert "HTTP 500 Internal Server Error: oops" in agent.log()
        stop_promptly(agent.proc, "the agent", agent.log_path)
    assert "fake-boot-token-hostile-0123" not in agent.log()


# ------------------------------------------------------------------- headscale minting API


def mint_doc(srv: HostileServer) -> dict:
    return {"auth_key": {"headscale": {"url": srv.base, "allow_plain_http": True,
                                       "api_key": {"credential": "headscale-api-key"}}},
            "advertise_tags": ["tag:netboot"], "retry": FAST_RETRY}


def test_hostile_headscale_api_500_with_an_endless_body(headscale, tailscaled_factory, start_agent, tmp_path):
    """A hostile server posing as headscale's API (no real headscale misbehaves on purpose)."""
    creds = credentials_dir(tmp_path / "creds", headscale_api_key="hskey-api-fakeHOSTILEfake-" + "y" * 40)
    with HostileServer(Behaviour(ENDLESS, 500, chunked=True)) as srv:
        ts = tailscaled_factory("hostilemint")
        agent = start_agent(ts, mint_doc(srv), env={"CREDENTIALS_DIRECTORY": str(creds)})
        wait_running_retries(agent, srv, 4, prefix="/api/v1/preauthkey")
        assert_small(agent.proc.pid, "the agent")
        assert_bounded(srv)
        assert "minting a key failed (headscale answered HTTP 500: oops the server is sorry" in agent.log()
        stop_promptly(agent.proc, "the agent", agent.log_path)


def test_hostile_headscale_api_200_with_an_endless_body_is_refused_at_the_cap(headscale, tailscaled_factory,
                                                                              start_agent, tmp_path):
    """A hostile server posing as headscale's API."""
    creds = credentials_dir(tmp_path / "creds", headscale_api_key="hskey-api-fakeHOSTILEfake-" + "z" * 40)
    with HostileServer(Behaviour(ENDLESS, 200, announced=5 << 30)) as srv:
        ts = tailscaled_factory("hostilemint2")
        agent = start_agent(ts, mint_doc(srv), env={"CREDENTIALS_DIRECTORY": str(creds)})
        assert agent.wait_exit(timeout=60) == 4, peers.log_tail(agent.log_path, 30)
        assert len(srv.requests) == 1
        assert_bounded(srv)
        msg = agent.status_file()["error"]["message"]
        assert "headscale's answer is larger than 1048576 bytes" in msg, msg


# --------------------------------------------------------------------------- push reporters


def test_hostile_push_endpoints_with_endless_answers_do_not_fill_the_agent(headscale, tailscaled_factory, start_agent,
                                                                          tmp_path):
    """The webhook answers 200 and the healthchecks endpoint 500, each with a body that never ends."""
    with HostileServer(Behaviour(ENDLESS, 200)) as srv:
        srv.plan("/hc", Behaviour(ENDLESS, 500, chunked=True))
        files = tmp_path / "secrets"
        health = {"allow_plain_http": True, "heartbeat_secs": 1, "push_attempts": 2,
                  "webhook": {"url": {"file": str(secret_file(files / "hook", srv.url("/hook/fake-hook-token-1")))}},
                  "healthchecks": {"url": {"file": str(secret_file(files / "hc", srv.url("/hc/fake-hc-token-22")))}}}
        ts = tailscaled_factory("hostilepush")
        agent = start_agent(ts, {"health": health}, key=issue_key(headscale))
        agent.wait_state("running", timeout=60)
        srv.wait_requests(6, timeout=60, prefix="/hook")
        srv.wait_requests(4, timeout=60, prefix="/hc")
        assert_small(agent.proc.pid, "the agent")
        assert_bounded(srv)
        assert "webhook report failed" not in agent.log(), "a 2xx is delivered whatever its body"
        wait_log(agent, "healthchecks report failed (HTTP 500 Internal Server Error", 30)
        stop_promptly(agent.proc, "the agent", agent.log_path)
        log = agent.log()
    assert "fake-hook-token-1" not in log and "fake-hc-token-22" not in log


def test_webhook_that_never_answers_holds_the_exit_only_for_the_flush_bound(headscale, tailscaled_factory, start_agent,
                                                                            tmp_path):
    with HostileServer(Behaviour(SILENT)) as srv:
        hook = srv.url("/hook/fake-silent-hook-token-333")
        health = {"allow_plain_http": True,
                  "webhook": {"url": {"file": str(secret_file(tmp_path / "secrets" / "hook", hook))}}}
        ts = tailscaled_factory("silenthook")
        agent = start_agent(ts, {"health": health}, key=issue_key(headscale))
        agent.wait_state("running", timeout=60)
        srv.wait_requests(1, timeout=30)
        took = stop_promptly(agent.proc, "the agent", agent.log_path, bound=6.0)
        assert took >= 1.5, f"the agent stopped after {took:.1f}s without waiting for the report in flight"
        line = next((l for l in agent.log().splitlines() if "undelivered report" in l), None)
        assert line, peers.log_tail(agent.log_path, 30)
        assert "webhook reporter: exiting without" in line and "health.flush_timeout_secs" in line, line
        assert "transition to starting" in line and "transition to running" in line, line
        assert "fake-silent-hook-token-333" not in agent.log() and "127.0.0.1" not in line, line


# -------------------------------------------------------------- the provisioner's mint call


@pytest.mark.parametrize("status, expect", [(500, "headscale answered HTTP 500: oops the server is sorry"),
                                            (200, "headscale's answer is larger than 1048576 bytes")])
def test_provisioner_minting_from_a_hostile_headscale_api(provisioner_factory, tmp_path, status, expect):
    """A hostile server posing as headscale's API behind the real provisioner."""
    token = "fake-boot-token-provhostile-" + str(status) + "00000"
    creds = credentials_dir(tmp_path / "prov-creds", headscale_api_key="hskey-api-fakePROVfake-" + "q" * 40,
                            boot_tokens=f"{token} hostile\n")
    with HostileServer(Behaviour(ENDLESS, status, chunked=True)) as srv:
        prov = provisioner_factory(tmp_path / "provisioner", {
            "mint": {"headscale": {"url": srv.base, "allow_plain_http": True,
                                   "api_key": {"credential": "headscale-api-key"}}},
            "tags": ["tag:netboot"], "key_expiry_secs": 120,
            "allow": {"networks": ["127.0.0.0/8"], "boot_tokens": {"credential": "boot-tokens"}},
        }, creds)
        for _ in range(3):
            code, _, text = prov.request("POST", body={"hostname": "hostile"}, token=token)
            assert code == 502 and expect in text, (code, text)
        assert len(srv.under("/api/v1/preauthkey")) == 3
        assert_small(prov.proc.pid, "the provisioner")
        assert_bounded(srv)
        assert expect in prov.log()
        stop_promptly(prov.proc, "the provisioner", prov.log_path)
