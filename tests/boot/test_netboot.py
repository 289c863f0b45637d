"""The diskless PXE boot, end to end (issue 12): a qemu machine with no disk at all boots from
the network with Debian's iPXE ROM, asks the real `tailjoin-provisioner` on the host for its boot
script, gets the kernel, an initrd that carries the whole root file system as a squashfs (under
a tmpfs overlay, as NixOS netboot does) and a fresh one-time boot token on its kernel command
line, mints a key through the provisioner and joins real headscale. Then it is power-cycled and
does it all again with a new token and a new key, while headscale drops the first boot's
ephemeral node. A replayed token and a machine whose MAC nobody approved get nothing.

    tests/boot/run.sh -k netboot          (TAILJOIN_BOOT_SCENARIOS=netboot for this file alone)
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path

import pytest

import netboot_vm
import run_boot
from test_boot import (  # noqa: F401  (fixtures shared with the disk-image boot test)
    HOSTNAME,
    PROV_CA_IN_GUEST,
    GuestHeadscale,
    HostProvisioner,
    build_image,
    file_contains,
    note,
    out_root,
    peers_bin,
    provisioner_tls,
    selected,
)

import peers  # noqa: E402  (tests/real_peers, put on sys.path by test_boot)

pytestmark = pytest.mark.skipif(not (selected("netboot") or selected("netboot-stranded")),
                                reason="not in TAILJOIN_BOOT_SCENARIOS")
# Each scenario's tests, selected by name (the module runs when either is selected).
netboot_scenario = pytest.mark.skipif(not selected("netboot"), reason="netboot not in TAILJOIN_BOOT_SCENARIOS")
stranded_scenario = pytest.mark.skipif(not selected("netboot-stranded"),
                                       reason="netboot-stranded not in TAILJOIN_BOOT_SCENARIOS")

# The approved machine, and one that nobody approved; the machine stranded by an expired token.
MAC_A = "52:54:00:7a:20:01"
MAC_B = "52:54:00:7a:20:02"
MAC_S = "52:54:00:7a:20:03"
# netboot-stranded: the token's lifetime (the provisioner's minimum) and the image's
# reboot_on_key_failure (on, as in the NixOS netboot profile; short, for the test).
STRANDED_TTL_S = 30
STRANDED_RETURN_TTL_S = 900
REBOOT_ON_KEY_FAILURE = {"enabled": True, "delay_secs": 5, "jitter_secs": 5}
# headscale removes an offline ephemeral node after this long (its minimum is just over 65 s).
EPHEMERAL_TIMEOUT_S = 70
# Generous bounds for a TCG guest on a busy 2-core machine: iPXE fetches ~100+ MB over qemu's
# user network, the kernel unpacks it, systemd starts, tailjoin joins.
BOOT_TIMEOUT_S = 900
GUEST_CMDLINE = ("console=ttyS0 panic=-1 quiet systemd.show_status=1 "
                 "tailjoin_test.scenario=netboot tailjoin_test.wait=300 tailjoin_test.hold=86400")


def netboot_headscale(workdir: Path, peers_bin):
    """A netboot scenario's headscale in `workdir` (ephemeral inactivity timeout
    EPHEMERAL_TIMEOUT_S) with its user `netboot`; a generator for a module fixture: stopped when
    the fixture ends."""
    h = GuestHeadscale(workdir, bin_dir=peers_bin, ephemeral_inactivity_timeout=f"{EPHEMERAL_TIMEOUT_S}s")
    h.start()
    try:
        h.user_id = h.create_user("netboot")
        yield h
    finally:
        h.stop()


@pytest.fixture(scope="module")
def hs(peers_bin, out_root):
    yield from netboot_headscale(out_root / "netboot-headscale", peers_bin)


@pytest.fixture(scope="module")
def netboot_image(hs, peers_bin, out_root, provisioner_tls) -> Path:
    """The diskless image: the keyless kernel_cmdline config, the provisioner's CA (public), no
    disk: vmlinuz and netboot-initrd.img (busybox init + the tree as a squashfs)."""
    return build_image(hs, peers_bin, out_root, "--provisioner-ca", str(provisioner_tls["ca"]), "--netboot",
                       label="netboot_image", config_name="tailjoin-config-netboot.json",
                       auth_key={"kernel_cmdline": {"ca_file": PROV_CA_IN_GUEST}},
                       extra={"reboot_on_key_failure": REBOOT_ON_KEY_FAILURE})


class NetbootProvisioner(HostProvisioner):
    """The host's `tailjoin-provisioner` with its netboot section: HTTPS /v1/key for the booted OS
    on one port, plain-HTTP boot scripts and files for the firmware on another (the ROM has no
    TLS). No pre-shared tokens: the provisioner issues one per boot."""

    def __init__(self, workdir: Path, tls, headscale, image: Path, macs: list[str],
                 cmdline: str = GUEST_CMDLINE):
        super().__init__(workdir, tls, headscale, macs=macs, tokens={})
        (self.creds / "boot-tokens").unlink()
        self.plain_port = peers.free_port()
        self.config["allow"] = {"macs": macs, "networks": ["127.0.0.0/8"]}
        self.config["netboot"] = {
            "listen": f"127.0.0.1:{self.plain_port}",
            "key_url": self.guest_url(),
            "kernel": str(image / "vmlinuz"),
            "initrds": [str(image / "netboot-initrd.img")],
            "cmdline": cmdline,
            "token_ttl_secs": 300,
            "retry_secs": 5,
        }
        self.config_path.write_text(json.dumps(self.config, indent=1) + "\n")

    @property
    def boot_url(self) -> str:
        return f"http://{GuestHeadscale.GUEST_HOST}:{self.plain_port}/v1/boot.ipxe"

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TAILJOIN_")}
        return subprocess.run([os.environ["TAILJOIN_PROVISIONER_BIN"], f"--config={self.config_path}", *args],
                              capture_output=True, text=True, env=env, timeout=60)


def node_for(hs, boot: netboot_vm.Boot) -> dict | None:
    """headscale's node whose addresses the guest reported, if headscale lists it online."""
    ips = set(re.findall(r"100\.\d+\.\d+\.\d+", boot.sections.get("status-json", "")))
    for n in hs.nodes():
        if ips & set(n.get("ip_addresses") or []) and n.get("online"):
            return n
    return None


def wait(what: str, predicate, timeout: float):
    deadline = time.monotonic() + timeout
    while True:
        got = predicate()
        if got:
            return got
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} within {timeout:.0f}s", pytrace=False)
        time.sleep(1)


@pytest.fixture(scope="module")
def two_boots(hs, netboot_image, provisioner_tls, out_root):
    """Boots the approved machine, power-cycles it, boots it again; waits (bounded) until
    headscale has dropped the first boot's ephemeral node; replays the first boot's token.
    Returns the evidence; each test below asserts one part of it."""
    keys_before = {str(k["id"]) for k in hs.preauth_keys()}
    prov = NetbootProvisioner(out_root / "netboot" / "provisioner", provisioner_tls, hs, netboot_image, [MAC_A])
    prov.start()
    vm = netboot_vm.NetbootVM(out_root / "netboot" / "vm-a", MAC_A, prov.boot_url)
    ev: dict = {"prov": prov, "vm": vm, "keys_before": keys_before}
    try:
        vm.start()
        b1 = vm.wait_for_boot_done(1, BOOT_TIMEOUT_S)
        ev["b1"] = b1
        ev["node1"] = wait("node of boot 1 online in headscale", lambda: node_for(hs, b1), 120)
        ev["keys_after_1"] = [k for k in hs.preauth_keys() if str(k["id"]) not in keys_before]
        vm.reset()
        b2 = vm.wait_for_boot_done(2, BOOT_TIMEOUT_S)
        ev["b2"] = b2
        ev["node2"] = wait("node of boot 2 online in headscale", lambda: node_for(hs, b2), 120)
        ev["keys_after_2"] = [k for k in hs.preauth_keys() if str(k["id"]) not in keys_before]

        # The first boot's node went offline at the power cut; headscale deletes an offline
        # ephemeral node after its inactivity timeout. Bounded well past that timeout.
        first_id = str(ev["node1"]["id"])
        t0 = time.monotonic()
        ev["node1_gone"] = wait_gone(hs, first_id, EPHEMERAL_TIMEOUT_S + 240)
        ev["node1_gone_after_s"] = round(time.monotonic() - t0, 1)
        ev["nodes_at_end"] = hs.nodes()

        # Replay: the first boot's token, sent again with that machine's identity.
        keys_before_replay = len(hs.preauth_keys())
        ev["replay"] = prov.request("POST", "/v1/key", {"hostname": HOSTNAME, "mac_addresses": [MAC_A]},
                                    token=b1.checks.get("boot_token"))
        ev["replay_minted"] = len(hs.preauth_keys()) - keys_before_replay
        ev["audit"] = prov.audit()
        ev["power_ons"] = vm.power_ons
        ev["seen"] = vm.seen
        note("netboot.accel", vm.accel)
        note("netboot.host_seconds", {"power_ons": vm.power_ons, "seen": vm.seen})
    except run_boot.BootError as e:
        vm.stop()
        prov.stop()
        pytest.fail(f"{e}\nprovisioner log: {prov.log()[-3000:]}", pytrace=False)
    try:
        yield ev
    finally:
        vm.stop()
        prov.stop()


def wait_gone(hs, node_id: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if node_id not in {str(n["id"]) for n in hs.nodes()}:
            return True
        time.sleep(2)
    return False


def assert_diskless_and_keyless(b: netboot_vm.Boot, ctx: str) -> None:
    c = b.checks
    assert c.get("root_fstype") == "overlay", f"/ is not the RAM overlay {ctx}: {c}"
    assert "upperdir=/mnt/rw/upper" in c.get("root_options", ""), c
    assert c.get("block_devices", "").strip() == "", f"the machine has a disk {ctx}: {c.get('block_devices')}"
    # The initrd's squashfs file, unlinked by switch_root when it emptied the initramfs.
    assert c.get("loop_backing", "").startswith("/root.squashfs"), c
    # tailscaled's state directory is on the overlay (whose upper layer is tmpfs): lost at reboot.
    assert c.get("tailscale_state_fstype") == "overlayfs", c
    assert c.get("system_credential") == "absent", f"a credential reached the guest {ctx}: {c}"
    assert c.get("control_key_pattern") == "1", f"the in-guest key search is broken {ctx}: {c}"
    for k in ("cmdline_with_key", "journal_entries_with_key", "processes_with_key_in_argv",
              "processes_with_key_in_environ", "files_with_key"):
        assert c.get(k) == "0", f"{k} {ctx}: {c}"
    assert c.get("control_token_in_proc_cmdline") == "1", c
    for k in ("tailjoin_journal_entries_with_token", "processes_with_token_in_argv",
              "processes_with_token_in_environ", "files_with_token"):
        assert c.get(k) == "0", f"{k} {ctx}: {c}"
    show = b.show()
    assert show.get("ActiveState") == "active", f"tailjoin is not active {ctx}: {show}"
    assert re.search(r"100\.\d+\.\d+\.\d+", show.get("StatusText", "")), show
    status = json.loads(b.sections.get("status-json") or "{}")
    assert status.get("running") is True and (status.get("agent") or {}).get("state") == "running", \
        f"`tailjoin status --json` in the guest {ctx}: {status}"


@netboot_scenario
def test_first_boot_joins_with_a_per_boot_token(two_boots, netboot_image):
    ev = two_boots
    b1, prov = ev["b1"], ev["prov"]
    ctx = f"(evidence in {ev['vm'].run_dir})"
    assert_diskless_and_keyless(b1, ctx)
    assert b1.checks.get("kernel_cmdline_key_url") == prov.guest_url(), b1.checks
    assert MAC_A in b1.checks.get("guest_macs", "").split(), b1.checks
    token = b1.checks.get("boot_token", "")
    assert len(token) >= 32, f"no per-boot token on the guest's kernel command line {ctx}: {b1.checks}"
    # The token was made for this boot: it is in no file of the image the machine booted.
    for p in (netboot_image / "vmlinuz", netboot_image / "netboot-initrd.img"):
        assert not file_contains(p, token.encode()), f"the boot token is in {p}"
    # One key minted for boot 1, single-use, ephemeral, tagged; the node is that key's.
    keys = ev["keys_after_1"]
    assert len(keys) == 1, f"expected one minted key after boot 1 {ctx}: {keys}"
    k = keys[0]
    assert k.get("ephemeral") is True and k.get("used") is True and not k.get("reusable"), k
    assert k.get("acl_tags") == ["tag:netboot"], k
    node = ev["node1"]
    assert str((node.get("pre_auth_key") or {}).get("id")) == str(k["id"]), node
    assert node.get("tags") == ["tag:netboot"], node
    note("netboot.boot1", {"node": node.get("given_name"), "checks_uptime": b1.checks.get("uptime")})


@netboot_scenario
def test_reboot_gets_a_new_token_and_a_new_key_and_joins_again(two_boots):
    ev = two_boots
    b1, b2 = ev["b1"], ev["b2"]
    ctx = f"(evidence in {ev['vm'].run_dir})"
    assert_diskless_and_keyless(b2, ctx)
    assert b1.checks["boot_id"] != b2.checks["boot_id"], "the second report is not from a new boot"
    assert b2.checks.get("boot_token") and b2.checks["boot_token"] != b1.checks["boot_token"], \
        "the reboot did not get a new boot token"
    # tailscaled's state did not survive the power cycle: boot 2 is a new node with a new key.
    keys = ev["keys_after_2"]
    assert len(keys) == 2, f"expected two minted keys after two boots {ctx}: {keys}"
    assert ev["node2"]["id"] != ev["node1"]["id"], (ev["node1"], ev["node2"])
    assert str((ev["node2"].get("pre_auth_key") or {}).get("id")) == str(keys[1]["id"]), ev["node2"]


@netboot_scenario
def test_first_boots_ephemeral_node_is_gone_after_its_timeout(two_boots):
    ev = two_boots
    assert ev["node1_gone"], f"boot 1's node is still in headscale: {ev['nodes_at_end']}"
    ids = [str(n["id"]) for n in ev["nodes_at_end"]]
    assert ids == [str(ev["node2"]["id"])], f"stale nodes piled up: {ev['nodes_at_end']}"
    note("netboot.first_node_gone_after_seconds", ev["node1_gone_after_s"])


@netboot_scenario
def test_replayed_boot_token_is_refused(two_boots):
    ev = two_boots
    status, body = ev["replay"]
    assert status == 403, (status, body)
    assert ev["replay_minted"] == 0, "a replayed token got a key minted"


@netboot_scenario
def test_unapproved_mac_is_refused_on_its_console_then_approved_once(hs, netboot_image, provisioner_tls, out_root):
    """A machine nobody approved: its firmware console says why and how to fix it, it goes on the
    provisioner's pending list, nothing is minted. Approved once with `tailjoin-provisioner
    approve`, the same machine (still retrying on its own) boots and joins unattended."""
    keys_before = len(hs.preauth_keys())
    prov = NetbootProvisioner(out_root / "netboot" / "provisioner-b", provisioner_tls, hs, netboot_image, [MAC_A])
    prov.start()
    vm = netboot_vm.NetbootVM(out_root / "netboot" / "vm-b", MAC_B, prov.boot_url)
    try:
        vm.start()
        line = vm.wait_for_console("approve", BOOT_TIMEOUT_S)
        assert MAC_B in line, f"the refusal does not name the machine's MAC: {line!r}"
        # It keeps asking (the script retries with backoff) and is still refused.
        refused_at = len(vm.console())
        vm.wait_for_console("approve", 120, after=refused_at)
        assert len(hs.preauth_keys()) == keys_before, "a key was minted for an unapproved machine"
        assert "tailjoin.boot_token=" not in vm.console(), "a refused machine was sent a boot token"
        pending = prov.cli("pending")
        assert pending.returncode == 0 and MAC_B in pending.stdout, (pending.returncode, pending.stdout, pending.stderr)
        approved = prov.cli("approve", MAC_B)
        assert approved.returncode == 0, (approved.stdout, approved.stderr)
        b = vm.wait_for_boot_done(1, BOOT_TIMEOUT_S)
        assert_diskless_and_keyless(b, f"(evidence in {vm.run_dir})")
        assert MAC_B in b.checks.get("guest_macs", "").split(), b.checks
        node = wait("approved machine's node online", lambda: node_for(hs, b), 120)
        assert node.get("tags") == ["tag:netboot"], node
        assert len(hs.preauth_keys()) == keys_before + 1
    except run_boot.BootError as e:
        pytest.fail(str(e), pytrace=False)
    finally:
        vm.stop()
        prov.stop()


# --------------------------------------------------------------------------- netboot-stranded


@pytest.fixture(scope="module")
def stranded(hs, netboot_image, provisioner_tls, out_root):
    """Never stranded, for real: the provisioner (token_ttl_secs 30) serves the boot script, the
    kernel and the initrd, and is stopped as soon as the guest's kernel runs (the console's
    "Welcome to"), before the guest's tailjoin asks for its key. It comes back once the token has
    expired. The guest's tailjoin is refused 403 boot_token_expired, reboots the machine by
    itself (reboot_on_key_failure in the image's config; the host never resets it), iPXE asks
    for a new boot script, gets a new token, and the machine joins. The provisioner comes back
    with a lifetime of STRANDED_RETURN_TTL_S: a TCG guest on a busy host takes longer than 30 s
    from its boot script to its key request, so with 30 s every boot would find its token expired
    and reboot again (token_ttl_secs must exceed a machine's boot; secrets/README.md says so)."""
    keys_before = {str(k["id"]) for k in hs.preauth_keys()}
    work = out_root / "netboot-stranded"
    prov = NetbootProvisioner(work / "provisioner", provisioner_tls, hs, netboot_image, [MAC_S])
    prov.config["netboot"]["token_ttl_secs"] = STRANDED_TTL_S
    prov.config_path.write_text(json.dumps(prov.config, indent=1) + "\n")
    prov.start()
    vm = netboot_vm.NetbootVM(work / "vm", MAC_S, prov.boot_url)
    ev: dict = {"prov": prov, "vm": vm}
    try:
        vm.start()
        wait("boot_issued line in the audit log",
             lambda: any(l["event"] == "boot_issued" for l in prov.audit()), BOOT_TIMEOUT_S)
        issued_at = time.monotonic()
        vm.wait_for_console("Welcome to", BOOT_TIMEOUT_S)
        ev["key_requests_before_stop"] = [l for l in prov.audit() if l["event"] in ("issued", "refused")]
        prov.stop()
        ev["stopped_after_issue_s"] = round(time.monotonic() - issued_at, 1)
        # Away past the token's lifetime (the event waited for is its expiry), then back, with a
        # lifetime longer than this guest's boot for the tokens it issues from now on.
        while time.monotonic() < issued_at + STRANDED_TTL_S + 2:
            time.sleep(min(1.0, max(0.0, issued_at + STRANDED_TTL_S + 2 - time.monotonic())))
        prov.config["netboot"]["token_ttl_secs"] = STRANDED_RETURN_TTL_S
        prov.config_path.write_text(json.dumps(prov.config, indent=1) + "\n")
        prov.start()
        ev["restarted_at"] = vm.now()
        b2 = vm.wait_for_boot_done(2, BOOT_TIMEOUT_S)
        ev["b2"] = b2
        ev["node"] = wait("node of the second boot online in headscale", lambda: node_for(hs, b2), 120)
        ev["boots"] = vm.boots()
        ev["keys"] = [k for k in hs.preauth_keys() if str(k["id"]) not in keys_before]
        ev["audit"] = prov.audit()
        ev["console"] = vm.console()
        ev["power_ons"] = vm.power_ons
        note("netboot_stranded.host_seconds", {"restarted_at": ev["restarted_at"], "seen": vm.seen,
                                               "stopped_after_issue_s": ev["stopped_after_issue_s"]})
    except BaseException as e:  # an interrupted wait too: no qemu or provisioner left behind
        vm.stop()
        prov.stop()
        if isinstance(e, run_boot.BootError):
            pytest.fail(f"{e}\nprovisioner log: {prov.log()[-3000:]}", pytrace=False)
        raise
    try:
        yield ev
    finally:
        vm.stop()
        prov.stop()


@stranded_scenario
def test_stranded_machine_reboots_by_itself_and_joins_after_the_provisioner_returns(stranded):
    ev = stranded
    ctx = f"(evidence in {ev['vm'].run_dir})"
    assert ev["key_requests_before_stop"] == [], \
        f"the guest asked for its key before the provisioner was stopped; the race was lost {ctx}"
    # The provisioner's audit: boot script, the refusal of the expired token, a second boot
    # script (the machine rebooted itself), and the key for that boot.
    events = [(l["event"], l.get("reason")) for l in ev["audit"]
              if l["event"] in ("boot_issued", "issued", "refused")]
    assert events == [("boot_issued", None), ("refused", "boot_token_expired"), ("boot_issued", None),
                      ("issued", None)], f"{events} {ctx}"
    for l in ev["audit"]:
        if l["event"] in ("boot_issued", "issued"):
            assert MAC_S in l["macs"], l
    # Nobody reset the machine: one power-on; its firmware asked for a boot script twice.
    assert len(ev["power_ons"]) == 1, ev["power_ons"]
    assert ev["console"].count(f"tailjoin: booting {MAC_S}") == 2, f"iPXE did not boot twice {ctx}"
    # The first boot reported hello and never got to report (it rebooted); the second joined.
    boots = ev["boots"]
    assert len(boots) == 2 and boots[0].hello and not boots[0].done and boots[1].done, \
        f"{[(b.hello_line, b.done) for b in boots]} {ctx}"
    assert_diskless_and_keyless(ev["b2"], ctx)
    assert len(ev["keys"]) == 1 and ev["keys"][0].get("used") is True, ev["keys"]
    assert ev["node"].get("tags") == ["tag:netboot"], ev["node"]
