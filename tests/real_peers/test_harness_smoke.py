"""Proves the harness: real tailscaled joins real headscale, and peers talk over DERP."""

from __future__ import annotations

import ipaddress
import stat

import peers

CGNAT = ipaddress.ip_network("100.64.0.0/10")


def _join(hs: peers.Headscale, ts: peers.Tailscaled, key: str) -> dict:
    ts.up(hs.url, key)
    key_file = ts.workdir / "authkey"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    st = ts.wait_state("Running", timeout=30)
    return st


def test_node_joins_with_cli_auth_key_file(headscale, tailscaled_factory):
    ts = tailscaled_factory("alpha")
    assert ts.state() == "NeedsLogin"
    key = headscale.preauth_key(headscale.user_id)

    st = _join(headscale, ts, key)

    assert st["BackendState"] == "Running"
    v4 = [ipaddress.ip_address(ip) for ip in st["TailscaleIPs"] if ":" not in ip]
    assert v4 and all(ip in CGNAT for ip in v4), st["TailscaleIPs"]
    node = headscale.wait_node_online("alpha", timeout=30)
    assert node["online"] is True
    assert str(v4[0]) in node["ip_addresses"]
    assert int(node["user"]["id"]) == headscale.user_id


def test_two_nodes_ping_over_derp(headscale, tailscaled_factory):
    # Forbid direct UDP so every packet must go through headscale's embedded DERP.
    derp_only = {"TS_DEBUG_ALWAYS_USE_DERP": "1"}
    a = tailscaled_factory("alpha", env=derp_only)
    b = tailscaled_factory("beta", env=derp_only)
    key = headscale.preauth_key(headscale.user_id, reusable=True)
    _join(headscale, a, key)
    _join(headscale, b, key)
    headscale.wait_node_online("alpha")
    headscale.wait_node_online("beta")

    b_ip = b.ipv4()
    # Disco ping; --until-direct=false: a DERP pong is success (direct is impossible here).
    r = a.cli("ping", "--until-direct=false", "--c=3", "--timeout=5s", b_ip, check=False, timeout=90)
    assert r.returncode == 0, f"ping failed:\n{r.stdout}\n{r.stderr}\n{peers.log_tail(a.log_path)}"
    assert "pong from beta" in r.stdout and "via DERP(headscale)" in r.stdout, r.stdout

    # A TSMP ping exercises the WireGuard data path too.
    r = a.cli("ping", "--tsmp", "--until-direct=false", "--c=3", "--timeout=5s", b_ip, check=False, timeout=60)
    assert r.returncode == 0, f"tsmp ping failed:\n{r.stdout}\n{r.stderr}"

    # The DERP relay is the embedded one, so the DERP path works.
    st = a.status()
    peer = next(p for p in st["Peer"].values() if p["HostName"] == "beta")
    assert peer["Relay"] == "headscale", peer
