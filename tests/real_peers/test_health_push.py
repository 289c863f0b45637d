"""Push-side health against real peers: the agent's webhook, healthchecks.io-style ping and
Uptime Kuma push reporters (the contract: push-spec / docs/schema/report-v1.json), delivered to
a real HTTP(S) server on loopback (receiver.py) while the real agent joins a real headscale
through a real tailscaled.

Every push URL carries a fake token in its path and every bearer token is fake; all are
registered with the leak machinery, and test_zz_leaks proves they (and every auth key) never
reach agent logs, argv, status files, metrics or the bodies the agent sent.
"""

from __future__ import annotations

import ipaddress
import itertools
import json
import os
import re
import secrets
import socket
import subprocess
import time
from datetime import datetime
from pathlib import Path

import jsonschema
import pytest
from jsonschema import Draft202012Validator

import peers
from agent import Agent, agent_bin
from leaks import remember
from provisioner import credentials_dir
from receiver import Receiver, Request
from test_agent_scenarios import KEYS, assert_joined, issue_key, key_file
from test_health_pull import get, samples

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "docs" / "schema" / "report-v1.json"

# Every push secret (URL tokens, whole URLs, bearer tokens) and every auth key these tests used,
# for test_zz_leaks.
PUSH_SECRETS: list[str] = []
PUSH_KEYS: list[str] = []

PENDING = {"starting", "waiting-for-tailscaled", "waiting-for-backend", "joining", "awaiting-approval", "resuming"}
DOWN = {"failed", "degraded", "retrying", "stopped"}
JOIN_BOUND = 60  # seconds: the bound every other real-peer test gives a join


# ------------------------------------------------------------------------------ helpers


def agent_version() -> str:
    out = subprocess.run([agent_bin(), "--version"], capture_output=True, text=True, timeout=10).stdout.split()
    assert len(out) == 2 and out[0] == "tailjoin", f"unexpected `tailjoin --version` output: {out}"
    return out[1]


def secret(*values: str):
    PUSH_SECRETS.extend(values)
    remember(*values)


def secret_file(path: Path, text: str, mode: int = 0o600) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as f:
        f.write(text + "\n")
    os.chmod(path, mode)
    return path


def push_url(rx: Receiver, prefix: str, kind: str, query: str = "") -> tuple[str, str]:
    """(url, path): a URL on rx whose path ends in a fake token; all of it is remembered as secret."""
    path, token = Receiver.secret_path(prefix, kind)
    url = rx.url(path, query)
    secret(token, url)
    return url, path


def read_id(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return ""


def hostnames(ts: peers.Tailscaled) -> set[str]:
    # The spec's example is the node's name; the OS hostname is the other sane reading.
    return {ts.name, socket.gethostname()}


def wait_log(agent: Agent, needle: str | re.Pattern, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while True:
        log = agent.log()
        if (needle.search(log) if isinstance(needle, re.Pattern) else needle in log):
            return log
        if time.monotonic() > deadline:
            raise AssertionError(f"agent log lacks {needle!r} after {timeout}s:\n{peers.log_tail(agent.log_path, 80)}")
        time.sleep(0.1)


def log_lines(agent: Agent, needle: str) -> list[str]:
    return [line for line in agent.log().splitlines() if needle in line]


def wait_exit_at(agent: Agent, timeout: float) -> tuple[int, float]:
    """(exit code, monotonic time the exit was seen; the real exit is at most ~10 ms earlier)."""
    deadline = time.monotonic() + timeout
    while (code := agent.proc.poll()) is None:
        if time.monotonic() > deadline:
            raise AssertionError(f"agent still running after {timeout}s\n{peers.log_tail(agent.log_path, 80)}")
        time.sleep(0.01)
    return code, time.monotonic()


def metric(port: int, name: str, **labels: str) -> float | None:
    status, _, text = get(f"http://127.0.0.1:{port}/metrics")
    assert status == 200, text
    return samples(text).get((name, tuple(sorted(labels.items()))))


def wait_metric(port: int, minimum: float, timeout: float, name: str, **labels: str) -> float:
    deadline = time.monotonic() + timeout
    while True:
        value = metric(port, name, **labels)
        if value is not None and value >= minimum:
            return value
        if time.monotonic() > deadline:
            _, _, text = get(f"http://127.0.0.1:{port}/metrics")
            raise AssertionError(f"{name}{labels} is {value}, wanted >= {minimum} within {timeout}s; /metrics:\n{text}")
        time.sleep(0.2)


def body(r: Request) -> dict:
    try:
        return json.loads(r.body)
    except json.JSONDecodeError as e:
        raise AssertionError(f"webhook body is not JSON ({e}): {r.describe()}") from None


def is_transition_to(state: str):
    def pred(reqs: list[Request]) -> bool:
        for r in reqs:
            try:
                b = json.loads(r.body)
            except json.JSONDecodeError:
                continue
            if r.delivered and b.get("event") == "transition" and b.get("state") == state:
                return True
        return False

    return pred


def unique_reports(reqs: list[Request]) -> list[tuple[dict, list[Request]]]:
    """Distinct bodies in the order they first arrived, each with every request that carried it."""
    order: list[bytes] = []
    by_body: dict[bytes, list[Request]] = {}
    for r in reqs:
        if r.body not in by_body:
            order.append(r.body)
            by_body[r.body] = []
        by_body[r.body].append(r)
    return [(body(by_body[b][0]), by_body[b]) for b in order]


def assert_transition_chain(bodies: list[dict], first: str, last: str, dump: str):
    """The transitions start at `first` (previous_state null), each names the one before it as
    its previous_state (none lost, none reordered), and the last is `last`."""
    ts = [b for b in bodies if b["event"] == "transition"]
    states = [b["state"] for b in ts]
    assert ts, f"no transition reports at all:\n{dump}"
    assert ts[0]["state"] == first and ts[0]["previous_state"] is None, f"first transition {ts[0]}; states {states}"
    for prev, cur in zip(ts, ts[1:]):
        assert cur["previous_state"] == prev["state"], (
            f"transition {cur['previous_state']} -> {cur['state']} follows a report of {prev['state']}: "
            f"a transition was lost or reordered; states {states}"
        )
    assert ts[-1]["state"] == last, f"last transition is {ts[-1]['state']}, wanted {last}; states {states}"


_VALIDATOR: Draft202012Validator | None = None


def validator() -> Draft202012Validator:
    global _VALIDATOR
    if _VALIDATOR is None:
        assert SCHEMA_PATH.exists(), f"the webhook body schema {SCHEMA_PATH} is missing"
        schema = json.loads(SCHEMA_PATH.read_text())
        Draft202012Validator.check_schema(schema)
        assert schema.get("$schema") == "https://json-schema.org/draft/2020-12/schema", schema.get("$schema")
        v = Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())
        assert not v.is_valid({"schema_version": 1}), "the schema accepts a body without its fields"
        _VALIDATOR = v
    return _VALIDATOR


def check_webhook_requests(reqs: list[Request], ts: peers.Tailscaled, version: str, since_wall: float,
                           bearer: str | None = None) -> list[dict]:
    """Everything every webhook request must satisfy; returns the parsed bodies."""
    v = validator()
    machine_id, boot_id = read_id("/etc/machine-id"), read_id("/proc/sys/kernel/random/boot_id")
    out = []
    for r in reqs:
        assert r.method == "POST", r.describe()
        assert r.headers.get("content-type", "").split(";")[0].strip() == "application/json", r.headers
        assert r.headers.get("user-agent") == f"tailjoin/{version}", r.headers.get("user-agent")
        if bearer is not None:
            assert r.headers.get("authorization") == f"Bearer {bearer}", "Authorization is not the bearer token"
        else:
            assert "authorization" not in r.headers
        b = body(r)
        errors = sorted(v.iter_errors(b), key=lambda e: list(e.absolute_path))
        assert not errors, "webhook body does not match report-v1.json:\n" + "\n".join(
            f"  {'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in errors
        ) + f"\nbody: {json.dumps(b, indent=1)}"
        # The schema is not vacuous: it refuses an unknown field and a missing one.
        assert not v.is_valid({**b, "auth_key": "x"}), "report-v1.json accepts an unknown field"
        assert not v.is_valid({k: x for k, x in b.items() if k != "state"}), "report-v1.json accepts no state"
        assert b["schema_version"] == 1 and b["agent_version"] == version, b
        assert b["hostname"] in hostnames(ts), (b["hostname"], hostnames(ts))
        assert b["machine_id"] == machine_id and b["boot_id"] == boot_id, (b["machine_id"], b["boot_id"])
        assert b["event"] in ("transition", "heartbeat"), b
        text = b["timestamp"]
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?Z", text), f"timestamp {text!r} is not RFC 3339 UTC"
        assert since_wall - 2 <= stamp(text) <= r.arrived_wall + 2, (
            f"timestamp {text} is not between the agent's start and the request's arrival"
        )
        if b["state"] == "running":
            assert b["error"] is None and b["backend_state"] == "Running", b
        if b["time_to_join_ms"] is None:
            assert b["joins"] == 0, b
        out.append(b)
    return out


def stamp(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def assert_stamped_when_it_happened(transition: dict, status_report: dict):
    """A transition report's timestamp is when the transition happened (the status file's
    `since`), not when the report finally left the queue."""
    assert transition["event"] == "transition" and transition["state"] == status_report["state"], transition
    late = stamp(transition["timestamp"]) - stamp(status_report["since"])
    assert abs(late) <= 0.5, (
        f"the {transition['state']} transition happened at {status_report['since']} (status.json since) but its "
        f"report is stamped {transition['timestamp']} ({late:+.3f}s)"
    )


def check_running_report(b: dict, hs: peers.Headscale, ts: peers.Tailscaled, status_report: dict):
    """A running report carries the node's real addresses and names, as tailscaled and headscale see them."""
    st = ts.status(peers=False)
    assert b["tailscale_ips"] == st["Self"]["TailscaleIPs"], (b["tailscale_ips"], st["Self"]["TailscaleIPs"])
    v4 = next(ip for ip in b["tailscale_ips"] if ":" not in ip)
    assert ipaddress.ip_address(v4) in ipaddress.ip_network("100.64.0.0/10"), v4
    node = next(n for n in hs.nodes() if v4 in n.get("ip_addresses", []))
    assert set(b["tailscale_ips"]) == set(node["ip_addresses"]), (b["tailscale_ips"], node["ip_addresses"])
    assert b["dns_name"] == f"{ts.name}.{hs.base_domain}", b["dns_name"]
    assert b["backend_state"] == "Running" and b["error"] is None, b
    assert b["tailscale_version"] == st["Version"], (b["tailscale_version"], st["Version"])
    assert b["tailnet"] == (status_report["node"]["tailnet"] or None), (b["tailnet"], status_report["node"])
    assert b["time_to_join_ms"] == status_report["time_to_join_ms"] and b["time_to_join_ms"] > 0, b
    assert b["joins"] == 1, b
    assert v4 in b["summary"], b["summary"]


@pytest.fixture
def push_setup(headscale, tailscaled_factory, agent_factory, receiver_factory, tmp_path):
    """start(name, health, key=..., args=[], env={}) -> (Tailscaled, Agent, key); receiver(...) ->
    Receiver (not started). Agents and receivers are stopped at teardown."""
    numbers = itertools.count()

    def receiver(**kw) -> Receiver:
        return receiver_factory(tmp_path / f"receiver-{next(numbers)}", start=False, **kw)

    def start(name: str, health: dict, key: str | None = None, args: list[str] | None = None,
              env: dict[str, str] | None = None) -> tuple[peers.Tailscaled, Agent, str]:
        ts = tailscaled_factory(name)
        key = key or issue_key(headscale)
        PUSH_KEYS.append(key)
        workdir = tmp_path / f"agent-{name}"
        config = workdir / "tailjoin.json"
        config.parent.mkdir(parents=True, exist_ok=True)
        config.write_text(json.dumps({"health": health}, indent=1))
        a = agent_factory(workdir, ts, headscale.url, key_file=key_file(workdir / "key", key),
                          args=[f"--config={config}", *(args or [])], env=env, start=False)
        a.start_wall = time.time()
        a.start()
        return ts, a, key

    return start, receiver


# ------------------------------------------------------------------------------ webhook


def test_webhook_posts_every_transition_and_heartbeats_over_https_with_bearer_token(headscale, push_setup, tmp_path):
    start, receiver = push_setup
    version = agent_version()
    rx = receiver(tls=True).start()
    url, path = push_url(rx, "/hooks", "webhook")
    bearer = "fake-bearer-" + secrets.token_hex(16)
    secret(bearer)
    creds = credentials_dir(tmp_path / "creds", tailjoin_webhook_url=url, tailjoin_webhook_token=bearer)
    health = {
        "heartbeat_secs": 1, "push_timeout_secs": 2, "push_attempts": 3, "ca_file": str(rx.ca_file),
        "webhook": {"url": {"credential": "tailjoin-webhook-url"},
                    "bearer_token": {"credential": "tailjoin-webhook-token"}},
    }
    ts, agent, _ = start("hooked", health, env={"CREDENTIALS_DIRECTORY": str(creds)})

    report = agent.wait_state("running", timeout=JOIN_BOUND)
    assert_joined(headscale, ts)

    def three_running_heartbeats(reqs):
        return sum(1 for r in reqs if r.delivered and json.loads(r.body).get("event") == "heartbeat"
                   and json.loads(r.body).get("state") == "running") >= 3

    rx.wait_for(three_running_heartbeats, 20, "three heartbeats while running", prefix=path)
    every = rx.under("/")
    assert all(r.path == path and r.query == "" for r in every), f"requests elsewhere:\n{rx.dump()}"
    assert not any(r.answer_error for r in every), rx.dump()
    reqs = [r for r in every if r.answered is not None]  # leaves out one still being answered
    bodies = check_webhook_requests(reqs, ts, version, agent.start_wall, bearer=bearer)

    # Every transition, in order, from the agent's start to running; none sent twice.
    assert_transition_chain(bodies, "starting", "running", rx.dump())
    transitions = [b for b in bodies if b["event"] == "transition"]
    assert len({json.dumps(b, sort_keys=True) for b in transitions}) == len(transitions), "a transition was sent twice"
    assert {b["state"] for b in transitions[:-1]} <= PENDING, [b["state"] for b in transitions]
    for b in transitions[:-1]:
        assert b["time_to_join_ms"] is None and b["joins"] == 0 and b["error"] is None, b
    running = transitions[-1]
    check_running_report(running, headscale, ts, report)
    assert_stamped_when_it_happened(running, report)

    # Reports leave in the order they were made.
    stamps = [stamp(b["timestamp"]) for b in bodies]
    assert stamps == sorted(stamps), [b["timestamp"] for b in bodies]

    # Heartbeats repeat the current state about every heartbeat_secs (1 s).
    current = None
    for r, b in zip(reqs, bodies):
        if b["event"] == "transition":
            current = b
            continue
        assert current is not None, "a heartbeat came before the first transition"
        assert b["state"] == current["state"], f"heartbeat says {b['state']} while the agent is {current['state']}"
        if b["state"] == "running":
            check_running_report(b, headscale, ts, report)
    running_hb = [r for r, b in zip(reqs, bodies) if b["event"] == "heartbeat" and b["state"] == "running"]
    gaps = [round(b.arrived - a.arrived, 2) for a, b in zip(running_hb, running_hb[1:])]
    assert all(0.5 <= g <= 2.5 for g in gaps), f"heartbeat gaps {gaps} (heartbeat_secs 1)"


def test_webhook_endpoint_down_at_boot_neither_delays_the_join_nor_loses_reports(push_setup, tmp_path):
    start, receiver = push_setup
    version = agent_version()
    rx = receiver()  # its port is chosen, nothing listens there yet
    url, path = push_url(rx, "/hooks", "webhook")
    health = {"heartbeat_secs": 0, "push_timeout_secs": 1, "push_attempts": 8, "allow_plain_http": True,
              "webhook": {"url": {"file": str(secret_file(tmp_path / "secrets" / "webhook-url", url))}}}
    ts, agent, _ = start("hookdown", health)

    report = agent.wait_state("running", timeout=JOIN_BOUND)
    running_seen = time.monotonic()
    assert report["time_to_join_ms"] < JOIN_BOUND * 1000, report
    # The reports were tried while the endpoint was down, and failed, without holding the join.
    wait_log(agent, "webhook report failed", 5)
    assert rx.up_at is None and not rx.requests

    # "A few seconds later" the endpoint comes up: at least 6 s after the agent started.
    time.sleep(max(1.0, agent.started_at + 6 - time.monotonic()))
    rx.start()
    up_wall = time.time()
    assert running_seen < rx.up_at, "the agent reached running only after the endpoint came up"

    reqs = rx.wait_for(is_transition_to("running"), 45, "the running transition after the endpoint came up",
                       prefix=path)
    bodies = check_webhook_requests(reqs, ts, version, agent.start_wall)
    assert_transition_chain(bodies, "starting", "running", rx.dump())
    assert stamp(bodies[0]["timestamp"]) < up_wall - 1, "the first report was not made while the endpoint was down"
    m = re.search(r"webhook report delivered after (\d+) attempts", agent.log())
    assert m and int(m.group(1)) >= 2, f"no 'delivered after N attempts' line:\n{peers.log_tail(agent.log_path, 60)}"
    # Reports queued during the outage still say when their transition happened.
    assert_stamped_when_it_happened([b for b in bodies if b["event"] == "transition"][-1], report)


def test_slow_webhook_endpoint_is_timed_out_and_retried_without_delaying_the_join(push_setup, tmp_path):
    start, receiver = push_setup
    version = agent_version()
    rx = receiver().start()
    rx.slow_first(2, 5.0)  # far longer than push_timeout_secs
    url, path = push_url(rx, "/hooks", "webhook")
    health = {"heartbeat_secs": 0, "push_timeout_secs": 1, "push_attempts": 5, "allow_plain_http": True,
              "webhook": {"url": {"file": str(secret_file(tmp_path / "secrets" / "webhook-url", url))}}}
    ts, agent, _ = start("hookslow", health)

    report = agent.wait_state("running", timeout=JOIN_BOUND)
    assert report["time_to_join_ms"] < JOIN_BOUND * 1000

    reqs = rx.wait_for(is_transition_to("running"), 40, "the running transition", prefix=path)
    bodies = check_webhook_requests(reqs, ts, version, agent.start_wall)
    assert len(reqs) >= 3, rx.dump()
    # The first report: two slow attempts abandoned after the 1 s timeout, the third answered.
    assert reqs[0].body == reqs[1].body == reqs[2].body, f"the first report was not retried as is:\n{rx.dump()}"
    assert [r.reply.delay for r in reqs[:3]] == [5.0, 5.0, 0.0], rx.dump()
    gap = reqs[1].arrived - reqs[0].arrived
    assert gap < 4.5, f"the agent waited {gap:.1f}s for a slow answer (push_timeout_secs is 1)"
    assert sum(1 for r in reqs if r.body == reqs[0].body) == 3, rx.dump()
    assert_transition_chain([b for b, _ in unique_reports(reqs)], "starting", "running", rx.dump())
    assert_stamped_when_it_happened([b for b in bodies if b["event"] == "transition"][-1], report)
    assert "webhook report delivered after 3 attempts" in agent.log(), peers.log_tail(agent.log_path, 60)
    assert log_lines(agent, "webhook report failed") and all(
        "retrying in" in line for line in log_lines(agent, "webhook report failed")
    ), log_lines(agent, "webhook report failed")


def test_webhook_5xx_is_retried_with_the_very_same_report(push_setup, tmp_path):
    start, receiver = push_setup
    version = agent_version()
    rx = receiver().start()
    rx.fail_first(2, 500)
    url, path = push_url(rx, "/hooks", "webhook")
    listen = peers.free_port()
    health = {"listen": f"127.0.0.1:{listen}", "heartbeat_secs": 0, "push_timeout_secs": 1, "push_attempts": 5,
              "allow_plain_http": True,
              "webhook": {"url": {"file": str(secret_file(tmp_path / "secrets" / "webhook-url", url))}}}
    ts, agent, _ = start("hook500", health)

    agent.wait_state("running", timeout=JOIN_BOUND)
    reqs = rx.wait_for(is_transition_to("running"), 40, "the running transition", prefix=path)
    check_webhook_requests(reqs, ts, version, agent.start_wall)

    assert [r.reply.status for r in reqs[:3]] == [500, 500, 200], rx.dump()
    assert reqs[0].body == reqs[1].body == reqs[2].body, f"the retried report changed (timestamp?):\n{rx.dump()}"
    assert sum(1 for r in reqs if r.body == reqs[0].body) == 3, f"the first report was seen other than 3 times:\n{rx.dump()}"
    assert json.loads(reqs[0].body)["state"] == "starting"
    reports = unique_reports(reqs)
    assert all(len(rs) == 1 for _, rs in reports[1:]), f"a report answered 200 was sent again:\n{rx.dump()}"
    assert_transition_chain([b for b, _ in reports], "starting", "running", rx.dump())
    assert "webhook report delivered after 3 attempts" in agent.log(), peers.log_tail(agent.log_path, 60)
    wait_metric(listen, len(reports), 10, "tailjoin_push_reports_total", reporter="webhook", outcome="sent")
    assert not metric(listen, "tailjoin_push_reports_total", reporter="webhook", outcome="failed")


def test_webhook_always_500_gives_up_after_push_attempts_and_4xx_is_never_retried(push_setup, tmp_path):
    start, receiver = push_setup
    rx = receiver().start()
    rx.always(500, prefix="/hooks")
    rx.always(404, prefix="/ping")
    hook_url, hook_path = push_url(rx, "/hooks", "webhook")
    hc_url, hc_path = push_url(rx, "/ping", "hc")
    listen = peers.free_port()
    health = {"listen": f"127.0.0.1:{listen}", "heartbeat_secs": 0, "push_timeout_secs": 1, "push_attempts": 3,
              "allow_plain_http": True,
              "webhook": {"url": {"file": str(secret_file(tmp_path / "secrets" / "webhook-url", hook_url))}},
              "healthchecks": {"url": {"file": str(secret_file(tmp_path / "secrets" / "hc-url", hc_url))}}}
    ts, agent, _ = start("hookfail", health)

    report = agent.wait_state("running", timeout=JOIN_BOUND)
    assert report["time_to_join_ms"] < JOIN_BOUND * 1000
    wait_log(agent, "webhook report not delivered after 3 attempts", 30)
    wait_metric(listen, 1, 10, "tailjoin_push_reports_total", reporter="webhook", outcome="failed")
    # healthchecks: /start (404) and, once running, the success ping (404), each tried once.
    rx.wait_for(lambda rs: any(r.path == hc_path for r in rs), 20, "the healthchecks success ping", prefix=hc_path)
    time.sleep(2.5)  # room for a (wrong) retry of either

    hooks = rx.under(hook_path)
    assert all(r.reply.status == 500 for r in hooks)
    counts = [len(rs) for _, rs in unique_reports(hooks)]
    assert counts[0] == 3 and hooks[0].body == hooks[1].body == hooks[2].body, (
        f"the first report was not tried exactly push_attempts=3 times:\n{rx.dump(hook_path)}"
    )
    assert json.loads(hooks[0].body)["state"] == "starting"
    assert max(counts) <= 3, f"a report was tried more than push_attempts=3 times: {counts}\n{rx.dump(hook_path)}"

    hcs = rx.under(hc_path)
    seen = [(r.path, r.body) for r in hcs]
    assert len(seen) == len(set(seen)), f"a 404 was retried:\n{rx.dump(hc_path)}"
    assert [r.path for r in hcs][:1] == [hc_path + "/start"] and hcs[-1].path == hc_path, rx.dump(hc_path)
    assert any("healthchecks" in line and "404" in line for line in agent.log().splitlines()), (
        "the 404 is not logged:\n" + peers.log_tail(agent.log_path, 60)
    )
    wait_metric(listen, 1, 10, "tailjoin_push_reports_total", reporter="healthchecks", outcome="failed")
    assert agent.running, "giving up on a report stopped the agent"
    for prefix in ("/hooks", "/ping"):  # lets the agent flush its queue at once when it is stopped
        rx.always(200, prefix=prefix)


# ------------------------------------------------------------------- healthchecks, uptime kuma


def test_healthchecks_and_uptime_kuma_report_up_for_a_good_key(headscale, push_setup, tmp_path):
    start, receiver = push_setup
    version = agent_version()
    rx = receiver().start()
    hc_url, hc_path = push_url(rx, "/ping", "hc", query="tj=keep")
    kuma_url, kuma_path = push_url(rx, "/api/push", "kuma", query="status=up&msg=OK&ping=&tj=keep")
    creds = credentials_dir(tmp_path / "creds", tailjoin_uptime_kuma_url=kuma_url)
    health = {"heartbeat_secs": 1, "push_timeout_secs": 2, "push_attempts": 3, "allow_plain_http": True,
              "healthchecks": {"url": {"file": str(secret_file(tmp_path / "secrets" / "hc-url", hc_url))}},
              "uptime_kuma": {"url": {"credential": "tailjoin-uptime-kuma-url"}}}
    ts, agent, _ = start("pinged", health, env={"CREDENTIALS_DIRECTORY": str(creds)})

    report = agent.wait_state("running", timeout=JOIN_BOUND)
    assert_joined(headscale, ts)
    ips = report["node"]["tailscale_ips"]
    assert ips == ts.status(peers=False)["Self"]["TailscaleIPs"]
    dns_name = f"{ts.name}.{headscale.base_domain}"
    rx.wait_for(lambda rs: sum(r.path == hc_path for r in rs) >= 3, 15, "3 success pings (heartbeats)", prefix=hc_path)
    rx.wait_for(lambda rs: len(rs) >= 3, 15, "3 uptime kuma pushes (heartbeats)", prefix=kuma_path)

    hcs = rx.settled(hc_path)
    for r in hcs:
        assert r.method == "POST" and r.query == "tj=keep", r.describe()
        assert r.headers.get("content-type", "").split(";")[0].strip() == "text/plain", r.headers
        assert r.delivered, r.describe()
    assert [r.path for r in hcs].count(hc_path + "/start") == 1, f"one start per join:\n{rx.dump(hc_path)}"
    assert hcs[0].path == hc_path + "/start", rx.dump(hc_path)
    m = re.fullmatch(rf"tailjoin {re.escape(version)} on (\S+): (\S+)", hcs[0].text.strip())
    assert m and m.group(1) in hostnames(ts) and m.group(2) in PENDING, hcs[0].text
    assert all(r.path == hc_path for r in hcs[1:]), f"only success pings once running:\n{rx.dump(hc_path)}"
    for r in hcs[1:]:
        assert r.text.startswith("running ") and all(ip in r.text for ip in ips) and dns_name in r.text, r.text

    kumas = rx.settled(kuma_path)
    for r in kumas:
        assert r.method == "GET" and r.path == kuma_path and r.body == b"", r.describe()
        assert set(r.params) == {"status", "msg", "ping", "tj"} and r.param("tj") == "keep", r.query
        assert r.param("status") == "up", f"a push before running or not up:\n{rx.dump(kuma_path)}"
        assert r.param("msg") and ips[0] in r.param("msg"), r.query
        assert r.param("ping").isdigit() and int(r.param("ping")) == report["time_to_join_ms"], (
            r.param("ping"), report["time_to_join_ms"])
        assert r.delivered, r.describe()


def test_rejected_key_pings_fail_and_pushes_down_before_the_agent_exits(push_setup, tmp_path):
    start, receiver = push_setup
    version = agent_version()
    rx = receiver().start()
    rx.always(200, delay=0.3)  # every answer takes a while: the reports are still queued at exit
    hook_url, hook_path = push_url(rx, "/hooks", "webhook")
    hc_url, hc_path = push_url(rx, "/ping", "hc")
    kuma_url, kuma_path = push_url(rx, "/api/push", "kuma", query="status=up&msg=OK&ping=")
    bogus = "0123456789abcdef" + secrets.token_hex(16)
    KEYS.append(bogus)
    files = tmp_path / "secrets"
    health = {"heartbeat_secs": 1, "push_timeout_secs": 2, "push_attempts": 3, "allow_plain_http": True,
              "webhook": {"url": {"file": str(secret_file(files / "webhook-url", hook_url))}},
              "healthchecks": {"url": {"file": str(secret_file(files / "hc-url", hc_url))}},
              "uptime_kuma": {"url": {"file": str(secret_file(files / "kuma-url", kuma_url))}}}
    ts, agent, _ = start("rejected", health, key=bogus, args=["--key-attempts=2", "--retry-initial-delay-ms=200"])

    code, exited = wait_exit_at(agent, 90)
    assert code == 3, peers.log_tail(agent.log_path, 60)
    final = agent.status_file()
    assert final["state"] == "failed" and final["error"]["kind"] == "key-rejected", final
    for r in rx.under("/"):
        assert bogus.encode() not in r.body and bogus not in r.query, f"the rejected key was pushed: {r.describe()}"

    hcs = rx.under(hc_path)
    assert hcs and hcs[0].path == hc_path + "/start", rx.dump(hc_path)
    assert all(r.method == "POST" for r in hcs)
    assert hc_path not in [r.path for r in hcs], f"a success ping for a rejected key:\n{rx.dump(hc_path)}"
    paths = [r.path for r in hcs]
    assert not any(a == b == hc_path + "/start" for a, b in zip(paths, paths[1:])), f"/start twice:\n{rx.dump(hc_path)}"
    last = hcs[-1]
    assert last.path == hc_path + "/fail", f"the last ping is not /fail:\n{rx.dump(hc_path)}"
    # The reason of the final state (failed, not the earlier retrying): the report made just
    # before the exit was flushed.
    assert "failed" in last.text and "key-rejected" in last.text and len(last.text) <= 1000, last.text
    assert last.delivered and last.answered < exited, f"/fail not answered before the exit:\n{rx.dump(hc_path)}"

    kumas = rx.under(kuma_path)
    assert kumas, "no uptime kuma push for the failure"
    for r in kumas:
        assert r.method == "GET" and r.param("status") == "down", f"kuma push other than down:\n{rx.dump(kuma_path)}"
        assert "key-rejected" in r.param("msg") and r.param("ping") == "", r.query
    assert "failed" in kumas[-1].param("msg"), kumas[-1].query
    assert kumas[-1].delivered and kumas[-1].answered < exited, rx.dump(kuma_path)

    hooks = rx.under(hook_path)
    bodies = check_webhook_requests(hooks, ts, version, agent.start_wall)
    transitions = [b for b in bodies if b["event"] == "transition"]
    assert transitions[0]["state"] == "starting" and transitions[-1]["state"] == "failed", [
        b["state"] for b in transitions]
    assert_transition_chain(bodies, "starting", "failed", rx.dump(hook_path))
    assert {b["state"] for b in transitions} <= PENDING | DOWN, [b["state"] for b in transitions]
    assert transitions[-1]["error"]["kind"] == "key-rejected" and transitions[-1]["time_to_join_ms"] is None
    failed_req = next(r for r, b in zip(hooks, bodies) if b is transitions[-1])
    assert failed_req.delivered and failed_req.answered < exited, rx.dump(hook_path)
    assert_stamped_when_it_happened(transitions[-1], final)


# ------------------------------------------------------------------------- refused settings


def test_plain_http_push_urls_are_refused_without_allow_plain_http(headscale, push_setup, tmp_path):
    start, receiver = push_setup
    rx = receiver().start()
    files = tmp_path / "secrets"
    hook_url, _ = push_url(rx, "/hooks", "webhook")
    hc_url, _ = push_url(rx, "/ping", "hc")
    kuma_url, _ = push_url(rx, "/api/push", "kuma", query="status=up&msg=OK&ping=")
    health = {"heartbeat_secs": 1, "push_timeout_secs": 1, "push_attempts": 2,
              "webhook": {"url": {"file": str(secret_file(files / "webhook-url", hook_url))}},
              "healthchecks": {"url": {"file": str(secret_file(files / "hc-url", hc_url))}},
              "uptime_kuma": {"url": {"file": str(secret_file(files / "kuma-url", kuma_url))}}}
    ts, agent, _ = start("plainhttp", health)

    agent.wait_state("running", timeout=JOIN_BOUND)
    assert_joined(headscale, ts)
    time.sleep(2.5)  # two heartbeats' time
    assert not rx.requests, f"a plain-http report was sent:\n{rx.dump()}"
    for name in ("webhook", "healthchecks", "uptime-kuma"):
        lines = log_lines(agent, f"{name} reporter disabled")
        assert lines, f"no '{name} reporter disabled' line:\n{peers.log_tail(agent.log_path, 60)}"
        assert "http" in lines[0].lower(), f"the reason does not mention http: {lines[0]}"
    assert agent.running


def test_push_urls_come_from_credentials_and_owner_only_files(headscale, push_setup, tmp_path):
    start, receiver = push_setup
    version = agent_version()
    rx = receiver().start()
    hook_url, hook_path = push_url(rx, "/hooks", "webhook")
    hc_url, hc_path = push_url(rx, "/ping", "hc")
    kuma_url, kuma_path = push_url(rx, "/api/push", "kuma", query="status=up&msg=OK&ping=")
    creds = credentials_dir(tmp_path / "creds", tailjoin_webhook_url=hook_url)
    files = tmp_path / "secrets"
    bearer = "fake-bearer-" + secrets.token_hex(16)
    secret(bearer)
    health = {"heartbeat_secs": 0, "push_timeout_secs": 2, "push_attempts": 3, "allow_plain_http": True,
              "webhook": {"url": {"credential": "tailjoin-webhook-url"},
                          "bearer_token": {"file": str(secret_file(files / "hook-token", bearer))}},
              "healthchecks": {"url": {"file": str(secret_file(files / "hc-url", hc_url, mode=0o600))}},
              # group-readable: refused like a group-readable key file
              "uptime_kuma": {"url": {"file": str(secret_file(files / "kuma-url", kuma_url, mode=0o640))}}}
    ts, agent, _ = start("sourced", health, env={"CREDENTIALS_DIRECTORY": str(creds)})

    agent.wait_state("running", timeout=JOIN_BOUND)
    assert_joined(headscale, ts)
    hooks = rx.wait_for(is_transition_to("running"), 20, "the webhook's running transition", prefix=hook_path)
    check_webhook_requests(hooks, ts, version, agent.start_wall, bearer=bearer)
    hcs = rx.wait_for(lambda rs: any(r.path == hc_path for r in rs), 20, "the healthchecks success ping",
                      prefix=hc_path)
    assert hcs[0].path == hc_path + "/start", rx.dump(hc_path)
    time.sleep(1)
    assert not rx.under(kuma_path), f"the group-readable uptime kuma URL was used:\n{rx.dump(kuma_path)}"
    assert log_lines(agent, "uptime-kuma reporter disabled"), peers.log_tail(agent.log_path, 60)
    assert not log_lines(agent, "webhook reporter disabled") and not log_lines(agent, "healthchecks reporter disabled")
    assert agent.running
