"""Runs last. The two sources not exercised elsewhere against real peers (a systemd-style
credential directory, an environment variable), then the leak test across ALL key sources:
no secret any test handed out — pre-made keys (file, credential, env, HTTP), minted keys
(headscale, Tailscale OAuth), API keys, OAuth client secrets, bearer and boot tokens — appears
in the argv of any process (sampled every 20 ms all session), in agent or provisioner logs,
status outputs, state files, status reports and metrics textfiles, error messages, audit logs or
the bodies (and query strings) of the push reports the agent sent. The store files the
NixOS module renders are checked by tests/nix/check.sh (\"store leak\" checks)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import test_agent_scenarios
import test_health_push
import test_http_key_source
import test_minting
import test_provisioner
from agent import LEAK_EVIDENCE
from leaks import SECRETS, remember
from provisioner import credentials_dir
from receiver import BODIES_FILE

SOURCES_RUN: list[str] = []


def test_credential_source_joins(headscale, tailscaled_factory, agent_factory, tmp_path):
    key = headscale.preauth_key(headscale.user_id)
    creds = credentials_dir(tmp_path / "creds", tailscale_auth_key=key)
    ts = tailscaled_factory("credsrc")
    a = agent_factory(tmp_path / "agent", ts, headscale.url, args=["--auth-key-credential=tailscale-auth-key"],
                      env={"CREDENTIALS_DIRECTORY": str(creds)})
    assert a.wait_state("running", timeout=60)["key_source"] == "systemd credential tailscale-auth-key"
    SOURCES_RUN.append("credential")


def test_env_source_joins(headscale, tailscaled_factory, agent_factory, tmp_path):
    key = headscale.preauth_key(headscale.user_id)
    remember(key)
    ts = tailscaled_factory("envsrc")
    a = agent_factory(tmp_path / "agent", ts, headscale.url, args=["--auth-key-env=TS_AUTH_KEY"],
                      env={"TS_AUTH_KEY": key})
    assert a.wait_state("running", timeout=60)["key_source"] == "environment variable TS_AUTH_KEY"
    SOURCES_RUN.append("env")


def _haystacks(argv_watcher, tmp_path_factory) -> list[tuple[str, bytes]]:
    """(where, contents) of every place a secret must never be: every argv seen, agent and
    provisioner logs, state dirs, status outputs and files, audit logs, metrics textfiles, and
    the bodies and query strings the push receivers got (not their paths: those carry the
    endpoints' own tokens by design)."""
    haystacks: list[tuple[str, bytes]] = [(f"argv {argv[:120]!r}", argv) for argv in argv_watcher.seen]
    files: set[Path] = {Path(f) for f in LEAK_EVIDENCE["files"]}
    for d in LEAK_EVIDENCE["dirs"]:
        if Path(d).exists():
            files.update(p for p in Path(d).rglob("*") if p.is_file())
    base = tmp_path_factory.getbasetemp()
    for pattern in ("tailjoin.log", "provisioner.log", "status.json", "audit.jsonl", "used-boot-tokens", "*.prom",
                    BODIES_FILE):
        files.update(base.rglob(pattern))
    haystacks += [(str(f), f.read_bytes()) for f in files if f.exists()]
    haystacks += [("tailjoin status output", t.encode()) for t in LEAK_EVIDENCE["texts"]]
    return haystacks


def test_zz_push_reports_leak_no_secret(argv_watcher, tmp_path_factory):
    """The push reporters' URLs (and the tokens in them), their bearer tokens and the auth keys
    of the push tests appear in no argv, agent log, status or state file, metrics textfile, and
    in no body or query string the agent pushed. Runs with test_health_push.py alone too."""
    push = test_health_push.PUSH_SECRETS
    if not push or not test_health_push.PUSH_KEYS:
        pytest.fail("run test_health_push.py before this test: no push secrets were recorded", pytrace=False)
    haystacks = _haystacks(argv_watcher, tmp_path_factory)
    bodies = [(w, d) for w, d in haystacks if Path(w).name == BODIES_FILE]
    assert bodies and any(b'"schema_version"' in d for _, d in bodies), "no pushed webhook body was searched"
    assert any(b"status=down" in d for _, d in bodies), "no pushed uptime kuma query was searched"
    logs = [w for w, _ in haystacks if Path(w).name == "tailjoin.log"]
    assert logs, "no agent log was searched"
    secrets = set(push) | set(test_health_push.PUSH_KEYS) | set(test_agent_scenarios.KEYS) | set(SECRETS)
    leaks = sorted({where for s in secrets for where, data in haystacks if s.encode() in data})
    assert not leaks, f"secrets found in: {json.dumps(leaks, indent=1)}"


def test_zz_no_secret_from_any_source_leaked(argv_watcher, tmp_path_factory):
    by_source = {
        "file (scenarios)": test_agent_scenarios.KEYS,
        "http": test_http_key_source.USED_KEYS,
        "minted (headscale, oauth, provisioner)": test_minting.MINTED,
        "boot tokens": list(test_provisioner.TOKENS.values()),
        "credentials, env, API keys, client secrets": SECRETS,
        "push reporter URLs, URL tokens and bearer tokens": test_health_push.PUSH_SECRETS,
    }
    empty = [name for name, values in by_source.items() if not values]
    if empty or len(SOURCES_RUN) < 2:
        pytest.fail(f"run the whole real-peer suite: no secrets recorded from {empty or SOURCES_RUN}", pytrace=False)
    secrets = {s for values in by_source.values() for s in values if s}
    assert len(secrets) >= 25 and argv_watcher.samples > 1000, (len(secrets), argv_watcher.samples)

    haystacks = _haystacks(argv_watcher, tmp_path_factory)
    kinds = {Path(w).name for w, _ in haystacks}
    for needed in ("tailjoin.log", "provisioner.log", "status.json", "audit.jsonl", "used-boot-tokens", BODIES_FILE):
        assert needed in kinds, f"no {needed} was searched"
    assert any(k.endswith(".prom") for k in kinds), "no metrics textfile was searched"

    leaks = sorted({where for s in secrets for where, data in haystacks if s.encode() in data})
    assert not leaks, f"secrets found in: {json.dumps(leaks, indent=1)}"
