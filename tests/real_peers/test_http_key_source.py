"""The HTTP(S) key source against a real HTTPS server with a self-signed CA on loopback, and
real headscale + tailscaled: the key fetched over TLS joins the node; refusals and server errors
are explained, retried only when retrying can help, and the key never shows up in the logs."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from agent import Agent
from keyserver import KeyServer

USED_KEYS: list[str] = []


@pytest.fixture
def keyserver(tmp_path):
    with KeyServer(tmp_path / "tls") as ks:
        yield ks


def write_config(path: Path, http: dict, **extra) -> Path:
    doc = {"auth_key": {"http": http}, "retry": {"initial_delay_ms": 100, "max_delay_ms": 500}, **extra}
    path.write_text(json.dumps(doc))
    return path


def owner_only(path: Path, text: str) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text + "\n")
    return path


@pytest.fixture
def start_agent(agent_factory, tmp_path, headscale):
    """start(ts, http) -> an agent whose key source is auth_key.http = `http`; all stopped at teardown."""

    def start(ts, http: dict) -> Agent:
        cfg = write_config(tmp_path / f"config-{ts.name}.json", http)
        return agent_factory(tmp_path / f"agent-{ts.name}", ts, headscale.url, args=[f"--config={cfg}"])

    return start


def test_get_over_https_with_a_private_ca_joins(headscale, tailscaled_factory, keyserver, start_agent, tmp_path):
    key = headscale.preauth_key(headscale.user_id)
    USED_KEYS.append(key)
    keyserver.respond((200, key + "\n"))
    ts = tailscaled_factory("httpget")

    agent = start_agent(ts, {"url": keyserver.url(), "ca_file": str(keyserver.ca)})

    report = agent.wait_state("running", timeout=60)
    assert report["key_source"] == f"HTTP source {keyserver.url()}"
    assert [r["method"] for r in keyserver.requests] == ["GET"]
    assert keyserver.requests[0]["authorization"] is None
    assert headscale.wait_node_online("httpget")["online"]


def test_post_sends_identity_and_bearer_token_and_reads_json(
        headscale, tailscaled_factory, keyserver, start_agent, tmp_path):
    key = headscale.preauth_key(headscale.user_id)
    USED_KEYS.append(key)
    token = "fake-provisioner-token-123"
    USED_KEYS.append(token)
    keyserver.respond((200, {"key": key, "expires_in": 600}))
    ts = tailscaled_factory("httppost")
    token_file = owner_only(tmp_path / "token", token)

    agent = start_agent(ts, {
        "url": keyserver.url("/v1/key?boot_token=fake-one-time-boot-token"),
        "method": "post", "response": "json", "ca_file": str(keyserver.ca),
        "bearer_token": {"file": str(token_file)},
    })

    agent.wait_state("running", timeout=60)
    req = keyserver.requests[0]
    assert req["method"] == "POST" and req["path"].endswith("boot_token=fake-one-time-boot-token")
    assert req["authorization"] == f"Bearer {token}"
    identity = json.loads(req["body"])
    assert set(identity) == {"hostname", "machine_id", "boot_id", "mac_addresses"}
    assert identity["hostname"] and identity["boot_id"]
    # The one-time token in the query is not repeated in logs or the status file.
    assert "fake-one-time-boot-token" not in agent.log()
    assert "fake-one-time-boot-token" not in json.dumps(agent.status_file())


@pytest.mark.parametrize(
    "status, advice",
    [(401, "bearer token"), (403, "allowlist"), (404, "check auth_key.http.url")],
)
def test_refusals_fail_at_once_with_advice(
        headscale, tailscaled_factory, keyserver, start_agent, tmp_path, status, advice):
    keyserver.respond((status, "no"))
    ts = tailscaled_factory(f"refused{status}")

    agent = start_agent(ts, {"url": keyserver.url(), "ca_file": str(keyserver.ca)})

    assert agent.wait_exit(timeout=30) == 4, agent.log()
    assert len(keyserver.requests) == 1, "a refusal must not be retried"
    report = agent.status_file()
    assert report["error"]["kind"] == "key-unavailable"
    assert f"HTTP {status}" in report["error"]["message"] and advice in report["error"]["message"], report
    assert ts.state() == "NeedsLogin"


def test_server_errors_are_retried_with_backoff_then_join(
        headscale, tailscaled_factory, keyserver, start_agent, tmp_path):
    key = headscale.preauth_key(headscale.user_id)
    USED_KEYS.append(key)
    keyserver.respond((503, "warming up"), (500, "oops"), (200, key))
    ts = tailscaled_factory("flaky")

    agent = start_agent(ts, {"url": keyserver.url(), "ca_file": str(keyserver.ca)})

    agent.wait_state("running", timeout=60)
    assert len(keyserver.requests) == 3
    assert agent.log().count("retrying in") >= 2


def test_an_untrusted_certificate_is_refused_with_advice(
        headscale, tailscaled_factory, keyserver, start_agent, tmp_path):
    keyserver.respond((200, "fake-never-served"))
    ts = tailscaled_factory("untrusted")

    agent = start_agent(ts, {"url": keyserver.url()})  # no ca_file

    assert agent.wait_exit(timeout=30) == 4, agent.log()
    assert keyserver.requests == []
    assert "ca_file" in agent.status_file()["error"]["message"]


def test_an_oversized_response_is_refused(headscale, tailscaled_factory, keyserver, start_agent, tmp_path):
    keyserver.respond((200, "x" * 5000))
    ts = tailscaled_factory("huge")

    agent = start_agent(ts, {
        "url": keyserver.url(), "ca_file": str(keyserver.ca), "max_response_bytes": 1024,
    })

    assert agent.wait_exit(timeout=30) == 4
    assert "larger than 1024 bytes" in agent.status_file()["error"]["message"]


def test_zz_http_keys_and_tokens_never_logged(tmp_path_factory):
    assert len(USED_KEYS) >= 4, "run the whole module"
    base = tmp_path_factory.getbasetemp()
    texts = [p.read_text(errors="replace") for p in base.rglob("tailjoin.log")]
    texts += [p.read_text(errors="replace") for p in base.rglob("status.json")]
    assert len(texts) >= 8
    leaks = [k for k in USED_KEYS for t in texts if k in t]
    assert not leaks, f"found in agent logs or status files: {leaks}"
