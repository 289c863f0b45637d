"""Never stranded (issue 18, item 5), on the real provisioner, real headscale and tailscaled: a
machine's boot token expires while the provisioner is down (stopped right after it issued the
boot, kept away past `token_ttl_secs`, restarted). The real agent, with that token on its kernel
command line, is refused `403 Tailjoin-Refusal: boot_token_expired`, classifies it as cured by a
new boot, says so (why, and the delay), waits the jittered delay and asks systemd to reboot over
D-Bus. There is no systemd to reboot here: the agent is pointed at a system bus that does not
exist (DBUS_SYSTEM_BUS_ADDRESS), so the reboot request itself fails and the agent exits 4 naming
the D-Bus error. The reboot itself is exercised in a qemu guest by tests/boot/test_netboot.py
(scenario netboot-stranded). With the setting off, the same refusal ends the agent (exit 4) with
no reboot attempt, as before."""

from __future__ import annotations

import json
import time

from provisioner import Provisioner
from test_netboot_provisioner import (  # noqa: F401  (fixtures)
    boot_files,
    host_mac,
    issue,
    netboot_provisioner,
)

TTL = 30  # token_ttl_secs: the provisioner's minimum


def key_refusal(prov: Provisioner, token: str, macs: list[str]) -> tuple[int, str | None, str]:
    """POST /v1/key with `token`: the status, the Tailjoin-Refusal header, the body."""
    status, headers, body = prov.request("POST", body={"hostname": "stranded", "machine_id": "0" * 32,
                                                       "mac_addresses": macs}, token=token)
    assert status != 200, "a refused token must not get a key"
    return status, headers.get("tailjoin-refusal"), body


def wait_until(t: float) -> None:
    """Until the monotonic clock reads `t` (the token's expiry is the event waited for)."""
    while time.monotonic() < t:
        time.sleep(min(1.0, max(0.0, t - time.monotonic())))


def run_agent(agent_factory, tmp_path, ts, headscale, prov, cmdline: str, reboot: dict | None):
    """The real agent reading its key URL and token from a kernel command line file (as
    test_netboot_provisioner's agent_with_cmdline), with `reboot_on_key_failure` = `reboot`
    (None: unset), and a system bus address that leads nowhere, so that no reboot can happen
    on this host. Returns the agent, its exit status and how long it ran."""
    path = tmp_path / f"cmdline-{ts.name}"
    path.write_text(f"BOOT_IMAGE=/v1/files/kernel {cmdline}\n")
    cfg = {
        "auth_key": {"kernel_cmdline": {"path": str(path), "ca_file": str(prov.ca)}},
        "retry": {"initial_delay_ms": 100, "max_delay_ms": 500, "max_attempts": 3},
    }
    if reboot is not None:
        cfg["reboot_on_key_failure"] = reboot
    cfg_path = tmp_path / f"config-{ts.name}.json"
    cfg_path.write_text(json.dumps(cfg))
    env = {"DBUS_SYSTEM_BUS_ADDRESS": f"unix:path={tmp_path}/no-system-bus/{ts.name}.sock"}
    t0 = time.monotonic()
    a = agent_factory(tmp_path / f"agent-{ts.name}", ts, headscale.url, args=[f"--config={cfg_path}"], env=env)
    code = a.wait_exit(180)
    return a, code, time.monotonic() - t0


def test_expired_token_after_provisioner_restart_is_curable_reboot_attempted_not_exercised(
        headscale, tailscaled_factory, agent_factory, netboot_provisioner, tmp_path):
    mac = host_mac()
    prov = netboot_provisioner(allow={"networks": ["127.0.0.0/8"], "macs": [mac]},
                               netboot={"token_ttl_secs": TTL, "retry_secs": 5})
    boot = issue(prov, mac)
    issued_at = time.monotonic()
    assert [l["event"] for l in prov.audit].count("boot_issued") == 1, prov.audit
    prov.stop()
    # Away past the token's lifetime, then back: the token store remembers it as expired.
    wait_until(issued_at + TTL + 1)
    prov.start()

    ts = tailscaled_factory("stranded")
    a, code, took = run_agent(agent_factory, tmp_path, ts, headscale, prov, boot["cmdline"],
                              {"enabled": True, "delay_secs": 2, "jitter_secs": 1})
    log = a.log()
    assert code == 4, log
    # Why (the refusal's kind and the provisioner's own words), and the delay.
    assert "stranded (boot_token_expired)" in log, log
    assert "has expired" in log, log
    assert "rebooting in 2s" in log or "rebooting in 3s" in log, log
    # The delay was waited before the attempt.
    assert took >= 2, took
    # The attempt, and why it failed: the D-Bus error.
    assert "asking systemd to start reboot.target over D-Bus" in log, log
    assert "the reboot failed: systemd did not queue reboot.target over D-Bus:" in log, log
    assert "No such file or directory" in log, log
    assert "exiting with status 4" in log, log
    st = a.status_file()
    assert st["state"] == "failed" and st["summary"].startswith("stranded (boot_token_expired)"), st
    assert st["error"]["kind"] == "key-unavailable" and "has expired" in st["error"]["message"], st

    # The same refusal without the setting: exit 4 at once, no reboot attempt.
    ts2 = tailscaled_factory("settingoff")
    a2, code2, _ = run_agent(agent_factory, tmp_path, ts2, headscale, prov, boot["cmdline"], None)
    log2 = a2.log()
    assert code2 == 4, log2
    assert "giving up" in log2 and "has expired" in log2, log2
    assert "stranded (" not in log2 and "reboot.target" not in log2 and "rebooting" not in log2, log2
    assert a2.status_file()["summary"].startswith("failed:"), a2.status_file()

    # What the provisioner said, machine-readably, and that it is truthful after the restart:
    # the expired token is "expired", a token never issued is "unknown".
    status, kind, body = key_refusal(prov, boot["token"], [mac])
    assert (status, kind) == (403, "boot_token_expired") and "has expired" in body, (status, kind, body)
    status, kind, body = key_refusal(prov, "ab" * 32, [mac])
    assert (status, kind) == (403, "boot_token_unknown") and "never issued here" in body, (status, kind, body)
    reasons = [l["reason"] for l in prov.audit if l["event"] == "refused"]
    assert reasons == ["boot_token_expired"] * 3 + ["boot_token_unknown"], prov.audit
    assert headscale.preauth_keys() == [], "no refusal mints a key"
