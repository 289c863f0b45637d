"""A re-join keeps the prefs a person set with `tailscale set` (issue 14; nixpkgs' autoconnect
fails here: after a key renewal its `tailscale up` says "requires mentioning all non-default
flags", nixpkgs #509367). Real tailscaled and headscale: the node joins, the user changes prefs,
the node is expired on headscale, tailjoin logs it in again; every pref the user set is still
set, and still after a tailscaled restart. A first login (empty state, as at every netboot)
applies the config's prefs instead."""

from __future__ import annotations

import time

import peers
from test_agent_scenarios import agents, assert_joined, issue_key  # noqa: F401  (fixture)

USER_SET = ["--advertise-routes=10.99.0.0/24", "--ssh", "--accept-dns=false", "--shields-up"]


def user_prefs(ts: peers.Tailscaled) -> dict:
    p = ts.prefs()
    return {k: p.get(k) for k in ("AdvertiseRoutes", "RunSSH", "CorpDNS", "ShieldsUp")}


EXPECTED = {"AdvertiseRoutes": ["10.99.0.0/24"], "RunSSH": True, "CorpDNS": False, "ShieldsUp": True}


def wait_joins(agent, n: int, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    report = None
    while time.monotonic() < deadline:
        report = agent.status_file()
        if report and report.get("joins", 0) >= n and report.get("state") == "running":
            return report
        time.sleep(0.2)
    raise AssertionError(f"no join #{n} within {timeout}s; last status {report}\n{agent.log()[-4000:]}")


def test_rejoin_after_expiry_and_tailscaled_restart_keeps_the_users_prefs(headscale, tailscaled_factory, agents):
    ts = tailscaled_factory("prefs")
    # The config asks for the opposite of what the user will set, so a re-join that re-applied
    # the config would show.
    agent = agents(ts, key=issue_key(headscale, reusable=True),
                   args=["--accept-dns=true", "--retry-max-delay-ms=2000"])
    wait_joins(agent, 1, 60)
    assert user_prefs(ts)["CorpDNS"] is True and user_prefs(ts)["AdvertiseRoutes"] in (None, []), user_prefs(ts)

    ts.cli("set", *USER_SET)
    assert user_prefs(ts) == EXPECTED, user_prefs(ts)

    node = headscale.node("prefs")
    headscale.expire_node(node["id"])
    report = wait_joins(agent, 2, 90)
    assert report["joins"] == 2, report
    assert_joined(headscale, ts)
    assert user_prefs(ts) == EXPECTED, f"the re-join changed the user's prefs: {user_prefs(ts)}"
    assert "requires mentioning all non-default flags" not in agent.log()

    # tailscaled restarts with its state: still joined, still the user's prefs.
    ts.stop()
    ts.start()
    ts.wait_state("Running", timeout=60)
    agent.wait_state("running", timeout=60)
    assert user_prefs(ts) == EXPECTED, f"after a tailscaled restart: {user_prefs(ts)}"
    # headscale sees the advertised route, so the pref is not only local.
    deadline = time.monotonic() + 30
    while True:
        n = headscale.node("prefs") or {}
        routes = n.get("available_routes") or n.get("announced_routes") or []
        if "10.99.0.0/24" in routes:
            break
        assert time.monotonic() < deadline, f"headscale does not see the advertised route: {n}"
        time.sleep(0.5)


def test_first_login_on_empty_state_applies_the_configs_prefs(headscale, tailscaled_factory, agents):
    ts = tailscaled_factory("fresh")
    agent = agents(ts, key=issue_key(headscale, reusable=True),
                   args=["--accept-dns=false", "--advertise-routes=10.98.0.0/24"])
    wait_joins(agent, 1, 60)
    p = user_prefs(ts)
    assert p["CorpDNS"] is False and p["AdvertiseRoutes"] == ["10.98.0.0/24"], p
