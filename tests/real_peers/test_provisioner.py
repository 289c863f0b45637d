"""The provisioner (`tailjoin-provisioner`) on real headscale: netbooting machines whose kernel
command line carries the provisioner's URL and a one-time boot token get distinct freshly minted
single-use keys; unlisted machines, reused or unknown tokens are refused; requests are rate
limited and audited; the key and the tokens appear in no log."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from agent import Agent, provisioner_bin
from provisioner import Provisioner, credentials_dir, kernel_cmdline, owner_only
from test_minting import MINTED

TOKENS = {
    "alpha": "fake-boot-token-alpha-0123456789",
    "beta": "fake-boot-token-beta-9876543210",
    "spare": "fake-boot-token-spare-5555555555",
}
TOKENS_FILE = "# one-time boot tokens\n" + "".join(f"{t} {label}\n" for label, t in TOKENS.items())


@pytest.fixture
def prov_creds(headscale, tmp_path):
    return credentials_dir(tmp_path / "prov-creds", headscale_api_key=headscale.api_key(),
                           boot_tokens=TOKENS_FILE)


@pytest.fixture
def make_provisioner(tmp_path, headscale, prov_creds, provisioner_factory):
    """make(workdir=tmp_path, **config overrides) -> a started Provisioner; all stopped at teardown."""

    def make(workdir: Path = tmp_path, **overrides) -> Provisioner:
        return provisioner_factory(workdir / "provisioner", provisioner_config(headscale, **overrides), prov_creds)

    return make


def provisioner_config(headscale, **overrides) -> dict:
    return {
        "mint": {"headscale": {"url": headscale.url, "allow_plain_http": True,
                               "api_key": {"credential": "headscale-api-key"}}},
        "tags": ["tag:netboot"],
        "key_expiry_secs": 120,
        "allow": {"networks": ["127.0.0.0/8"], "boot_tokens": {"credential": "boot-tokens"}},
        **overrides,
    }


@pytest.fixture
def netboot_agent(agent_factory, tmp_path, headscale):
    """start(ts, prov, **kernel params) -> an agent whose only key source is the kernel command
    line, as on a netbooted machine; all stopped at teardown."""

    def start(ts, prov: Provisioner, **params) -> Agent:
        cmdline = kernel_cmdline(tmp_path / f"cmdline-{ts.name}", key_url=prov.url, **params)
        cfg = tmp_path / f"config-{ts.name}.json"
        cfg.write_text(json.dumps({
            "auth_key": {"kernel_cmdline": {"path": str(cmdline), "ca_file": str(prov.ca)}},
            "retry": {"initial_delay_ms": 100, "max_delay_ms": 500, "max_attempts": 3},
        }))
        return agent_factory(tmp_path / f"agent-{ts.name}", ts, headscale.url, args=[f"--config={cfg}"])

    return start


def test_two_machines_get_distinct_single_use_keys_and_an_unlisted_one_is_refused(
        headscale, tailscaled_factory, netboot_agent, make_provisioner, provisioner_factory, prov_creds, tmp_path):
    prov = make_provisioner()
    a = netboot_agent(tailscaled_factory("nodea"), prov, boot_token=TOKENS["alpha"])
    b = netboot_agent(tailscaled_factory("nodeb"), prov, boot_token=TOKENS["beta"])
    # The third machine is not on the list: it has no boot token.
    c = netboot_agent(tailscaled_factory("nodec"), prov)
    a.wait_state("running", timeout=60)
    b.wait_state("running", timeout=60)
    assert c.wait_exit(timeout=30) == 4
    assert "a boot token is required" in c.log() and "HTTP 401" in c.log()
    assert headscale.node("nodec") is None

    keys = headscale.preauth_keys()
    MINTED.extend(k["key"] for k in keys)
    assert len(keys) == 2 and keys[0]["id"] != keys[1]["id"]
    for k in keys:
        assert k.get("reusable", False) is False and k["ephemeral"] is True and k["used"] is True, k
        assert k["acl_tags"] == ["tag:netboot"]
    nodes = {n: headscale.wait_node_online(n) for n in ("nodea", "nodeb")}
    assert nodes["nodea"]["pre_auth_key"]["id"] != nodes["nodeb"]["pre_auth_key"]["id"]

    issued = [l for l in prov.audit if l["event"] == "issued"]
    assert len(issued) == 2, prov.audit
    assert {l["boot_token"] for l in issued} == {"alpha", "beta"}
    assert {l["key_id"] for l in issued} == {str(k["id"]) for k in keys}
    for l in issued:
        assert l["client"] == "127.0.0.1" and l["matched"] == ["boot_token", "network"]
        assert l["ephemeral"] is True and l["tags"] == ["tag:netboot"] and l["expires"]
        assert l["machine_id"] and l["macs"], "the agent's POST carries its identity"
    refused = [l for l in prov.audit if l["event"] == "refused"]
    assert [l["reason"] for l in refused] == ["boot_token_missing"]

    # A boot token works once: machine A rebooting with the same token is refused.
    status, _, body = prov.request("POST", body={"hostname": "nodea"}, token=TOKENS["alpha"])
    assert status == 403 and "used already" in body and "alpha" in body
    status, _, body = prov.request("POST", body={"hostname": "guess"}, token="fake-boot-token-guessed-000000")
    assert status == 403 and "not one this provisioner knows" in body
    assert len(headscale.preauth_keys()) == 2, "refusals mint nothing"
    prov.stop()

    # Tokens stay spent across a restart (only their hashes are on disk).
    used = (prov.state_dir / "used-boot-tokens").read_text()
    assert all(t not in used for t in TOKENS.values()) and len(used.split()) == 2
    prov2 = provisioner_factory(tmp_path / "provisioner", {k: v for k, v in prov.config.items()
                                                           if k not in ("listen", "tls", "state_dir", "log_level")},
                                prov_creds, start=False)
    prov2.state_dir = prov.state_dir
    prov2.config["state_dir"] = str(prov.state_dir)
    prov2.config_path.write_text(json.dumps(prov2.config))
    prov2.start()
    status, _, body = prov2.request("POST", body={"hostname": "nodeb"}, token=TOKENS["beta"])
    assert status == 403 and "used already" in body
    assert "2 unused" not in prov2.log() and "1 unused boot token" in prov2.log()


def test_mac_and_network_allowlists(make_provisioner, tmp_path):
    prov = make_provisioner(allow={"macs": ["52:54:00:aa:bb:01", "52:54:00:aa:bb:02"]})
    listed = {"hostname": "rack1", "machine_id": "0" * 32, "mac_addresses": ["52:54:00:AA:BB:02"]}
    status, _, body = prov.request("POST", body=listed)
    assert status == 200, body
    doc = json.loads(body)
    MINTED.append(doc["key"])
    assert doc["key"].startswith("hskey-auth-") and doc["ephemeral"] is True and doc["tags"] == ["tag:netboot"]
    unlisted = {"hostname": "intruder", "mac_addresses": ["52:54:00:aa:bb:99"]}
    status, _, body = prov.request("POST", body=unlisted)
    assert status == 403 and "allow.macs" in body
    status, _, body = prov.request("POST", body="not an object")  # type: ignore[arg-type]
    assert status == 400
    assert [l["event"] for l in prov.audit] == ["issued", "refused"]
    assert doc["key"] not in prov.log() and doc["key"] not in json.dumps(prov.audit)
    prov.stop()

    prov = make_provisioner(tmp_path / "other", allow={"networks": ["10.99.0.0/24"]})
    status, _, body = prov.request("POST", body={"hostname": "x"})
    assert status == 403 and "127.0.0.1 is in none of allow.networks" in body


def test_requests_are_rate_limited_per_client(headscale, make_provisioner):
    prov = make_provisioner(allow={"networks": ["127.0.0.1/32"]},
                            rate_limit={"per_minute": 60, "burst": 10, "per_client_per_minute": 2})
    codes = [prov.request("POST", body={"hostname": f"n{i}"}) for i in range(3)]
    assert [c[0] for c in codes[:2]] == [200, 200]
    status, headers, _ = codes[2]
    assert status == 429 and int(headers["retry-after"]) >= 1
    MINTED.extend(json.loads(c[2])["key"] for c in codes[:2])
    assert len(headscale.preauth_keys()) == 2


def test_minting_failure_does_not_burn_the_boot_token(headscale, make_provisioner):
    prov = make_provisioner()
    headscale.stop()
    status, _, body = prov.request("POST", body={"hostname": "early"}, token=TOKENS["spare"])
    assert status == 502 and "could not mint" in body
    headscale.start()
    status, _, body = prov.request("POST", body={"hostname": "early"}, token=TOKENS["spare"])
    assert status == 200, body
    MINTED.append(json.loads(body)["key"])
    assert [l["event"] for l in prov.audit] == ["refused", "issued"]
    assert prov.audit[0]["reason"].startswith("mint_failed")


@pytest.mark.parametrize("change, field", [
    ({"allow": {}}, "allow"),
    ({"allow": {"macs": ["zz"]}}, "allow.macs[0]"),
    ({"tls": None, "allow_plain_http": None}, "tls"),
    ({"mint": {"headscale": {"url": "http://hs", "api_key": {"credential": "k"}}}}, "mint.headscale.url"),
    ({"listen": "nowhere"}, "listen"),
    ({"surprise": 1}, "unknown field"),
])
def test_bad_provisioner_configs_are_refused_with_the_field_named(tmp_path, change, field):
    base = {"listen": "127.0.0.1:1", "allow_plain_http": True, "tags": ["tag:a"],
            "mint": {"headscale": {"url": "https://hs.example", "api_key": {"credential": "k"}}},
            "allow": {"networks": ["10.0.0.0/8"]}}
    for k, v in change.items():
        if v is None:
            base.pop(k, None)
        else:
            base[k] = v
    cfg = tmp_path / "p.json"
    cfg.write_text(json.dumps(base))
    r = subprocess.run([provisioner_bin(), f"--config={cfg}", "--check"], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 2, r
    assert field in r.stderr and str(cfg) in r.stderr, r.stderr
    assert "panicked" not in r.stderr
