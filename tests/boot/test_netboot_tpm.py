"""The diskless PXE boot with a TPM (scenario `netboot-tpm`): the machine of test_netboot.py, with
a TPM 2.0 (swtpm behind qemu's `tpm-tis`), boots from a provisioner whose `netboot.tpm` is
`required` and which has never heard of its MAC (`allow` lists networks only).

1. Before the machine exists, its swtpm is started once on TCP and tpm2-tools read its EK
   (`tpm2_createek`); its fingerprint is what the operator expects to approve. The EK is derived
   from the seed kept in the swtpm's state directory, so the TPM the machine boots with later
   (the same state, now behind qemu) has the same EK.
2. The unknown MAC still gets its boot script (`tpm: required` lets its TPM show itself), the
   agent's key request shows its EK and gets 503 "waiting for approval"; the test waits until
   `tailjoin-provisioner pending --json` lists the MAC with that EK, checks the fingerprint
   against the one from step 1 and runs `approve MAC`, which binds the EK. The agent, still
   retrying, gets a challenge, its TPM activates it, and the key comes back sealed: the audit's
   `issued` line names the EK, `matched` has `tpm_enrolled`, and no boot token was used.
3. A power cycle (qemu's system_reset; the swtpm keeps running): boot 2 joins again with its
   TPM alone, with no pending and no approve.

    tests/boot/run.sh -k netboot_tpm      (TAILJOIN_BOOT_SCENARIOS=netboot-tpm for this file alone)
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

import netboot_vm
import run_boot
from test_netboot import (  # noqa: F401  (the netboot scenario's fixtures and helpers)
    BOOT_TIMEOUT_S,
    NetbootProvisioner,
    assert_diskless_and_keyless,
    netboot_headscale,
    netboot_image,
    node_for,
    wait,
)
from test_boot import (  # noqa: F401
    file_contains,
    note,
    out_root,
    peers_bin,
    provisioner_tls,
    selected,
)

import procs  # noqa: E402  (tests/real_peers, put on sys.path by test_boot)
import tpm_machine  # noqa: E402

pytestmark = pytest.mark.skipif(not selected("netboot-tpm"), reason="not in TAILJOIN_BOOT_SCENARIOS")

# A MAC nobody approved and no allowlist names.
MAC_T = "52:54:00:7a:20:04"
# The guest's kernel command line (the provisioner's netboot.cmdline). tailjoin_test.scenario
# stays `netboot`: the collector then runs the diskless and keyless checks of that scenario.
# tailjoin_test.wait (how long the collector waits for tailjoin before reporting) is raised
# from 300 s: here tailjoin becomes active only after the approval. earlycon and loglevel=6
# (instead of quiet) put the kernel's banner on the console at once, which times the power-on
# the way tests/bench/netboot_bench.py does.
CMDLINE = ("console=ttyS0 earlycon=uart8250,io,0x3f8,115200 panic=-1 loglevel=6 systemd.show_status=1 "
           "tailjoin_test.scenario=netboot tailjoin_test.wait=900 tailjoin_test.hold=86400")
BANNER = "Linux version"
# The agent's key fetch (the image's config sets no `retry`): attempts with backoff from 0.5 s
# up to 30 s, 10 in all (about two minutes or more), within key_fetch_deadline_secs 300; a 503
# is transient. The test approves within seconds of seeing the machine pending, so the agent's
# retries outlast the wait by far; NRestarts == 0 below proves it never had to start over.


@pytest.fixture(scope="module")
def hs(peers_bin, out_root):
    """test_netboot.py's headscale, in a directory of this scenario's own (its module-scoped
    fixture keeps its database under out_root/netboot-headscale, where a second instance would
    find the user it creates). netboot_image, imported from there, builds the same image recipe
    for this headscale."""
    yield from netboot_headscale(out_root / "netboot-tpm" / "headscale", peers_bin)


class QemuSwtpm:
    """The machine's swtpm as qemu's `-tpmdev emulator` wants it: control channel on a unix
    socket, no data channel of its own (qemu passes one over the control channel), no
    not-need-init (qemu sends the init at power-on and at each reset). Started through
    procs.spawn; stop() ends it (SIGTERM, bounded, then SIGKILL)."""

    def __init__(self, state_dir: Path, workdir: Path):
        self.state_dir = state_dir
        self.log_path = workdir / "swtpm-qemu.log"
        # A unix socket path is at most 107 bytes; a deep $TAILJOIN_BOOT_OUT would not fit.
        sock = workdir / "swtpm.sock"
        if len(str(sock)) > 100:
            sock = Path(tempfile.mkdtemp(prefix="tj-swtpm-")) / "swtpm.sock"
        self.socket = sock
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 60.0) -> "QemuSwtpm":
        self.socket.unlink(missing_ok=True)
        self.log_path.unlink(missing_ok=True)
        argv = ["swtpm", "socket", "--tpm2", "--tpmstate", f"dir={self.state_dir}",
                "--ctrl", f"type=unixio,path={self.socket}", "--log", f"file={self.log_path},level=2"]
        (self.log_path.parent / "swtpm-qemu.argv").write_text(" ".join(argv) + "\n")
        self.proc = procs.spawn(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while not self.socket.is_socket():
            if self.proc.poll() is not None:
                raise run_boot.BootError(f"swtpm exited with {self.proc.returncode} before it listened on "
                                         f"{self.socket}: {run_boot.read_text(self.log_path)[-2000:]}")
            if time.monotonic() > deadline:
                raise run_boot.BootError(f"swtpm did not create {self.socket} within {timeout:.0f}s")
            time.sleep(0.05)
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        procs.stop(self.proc)
        self.socket.unlink(missing_ok=True)


def learn_ek(workdir: Path) -> str:
    """Step 1: the swtpm on TCP (not-need-init, startup-clear), tpm2_createek, the EK's
    fingerprint as the provisioner shows it ("sha256:" + sha256 of the TPM2B_PUBLIC without its
    size), computed here from ek.pub; then that swtpm is stopped. Its state (with the EK's seed)
    stays in workdir/state."""
    try:
        tpm_machine.need_tools()
    except RuntimeError as e:
        pytest.fail(str(e), pytrace=False)
    tpm = tpm_machine.Swtpm(workdir)
    try:
        tpm.start()
        ek_pub = (workdir / "ek.pub").read_bytes()
        # TPM2B_PUBLIC: a 2-byte big-endian size, then the TPMT_PUBLIC.
        assert int.from_bytes(ek_pub[:2], "big") == len(ek_pub) - 2, f"ek.pub is not a TPM2B_PUBLIC: {ek_pub[:8].hex()}"
        fp = "sha256:" + hashlib.sha256(ek_pub[2:]).hexdigest()
        assert fp == tpm.ek_fingerprint, (fp, tpm.ek_fingerprint)
        # Cross-check with what tpm2-tools call the EK's Name: 000b (sha256) + that digest.
        r = tpm.run("tpm2_readpublic", "-c", "ek.ctx")
        name = re.search(r"^name:\s*([0-9a-f]+)", r.stdout.decode(errors="replace"), re.M)
        assert r.returncode == 0 and name and name.group(1) == "000b" + fp.split(":", 1)[1], \
            (r.returncode, r.stdout[-600:], r.stderr[-600:])
    finally:
        tpm.stop()
    if not list((workdir / "state").glob("tpm2-00.permall")):
        pytest.fail(f"swtpm left no permanent state in {workdir / 'state'}: {sorted(os.listdir(workdir / 'state'))}",
                    pytrace=False)
    return fp


def agent_messages(b: netboot_vm.Boot) -> str:
    out = []
    for line in b.sections.get("journal-tailjoin", "").splitlines():
        line = line.strip()
        if line:
            try:
                out.append(str(json.loads(line).get("MESSAGE", "")))
            except ValueError:
                pass
    return "\n".join(out)


def pending_entries(prov) -> list[dict]:
    r = prov.cli("pending", "--json")
    if r.returncode != 0:
        raise run_boot.BootError(f"tailjoin-provisioner pending --json failed ({r.returncode}): {r.stderr}")
    return json.loads(r.stdout)["pending"]


def timing(vm: netboot_vm.NetbootVM, b: netboot_vm.Boot, power_on: float, banner: float) -> dict:
    """power-on → READY: host seconds from the power-on to the kernel's banner on the console,
    plus the guest's CLOCK_MONOTONIC when tailjoin.service became active (Type=notify: READY=1
    once Running), as tests/bench/netboot_bench.py measures it."""
    ready_us = int(b.show().get("ActiveEnterTimestampMonotonic") or 0)
    return {
        "power_on_to_banner_s": round(banner - power_on, 1),
        "guest_ready_s": round(ready_us / 1e6, 2),
        "power_on_to_running_s": round(banner - power_on + ready_us / 1e6, 1) if ready_us else None,
    }


@pytest.fixture(scope="module")
def tpm_boots(hs, netboot_image, provisioner_tls, out_root):
    """Learns the TPM's EK, boots the unknown machine with its TPM, approves it once its EK is on
    the pending list, waits for it to join, power-cycles it and waits for boot 2 to join. Returns
    the evidence; the tests below assert its parts."""
    work = out_root / "netboot-tpm"
    tpm_dir = work / "tpm"
    shutil.rmtree(tpm_dir, ignore_errors=True)
    tpm_dir.mkdir(parents=True)
    t0 = time.monotonic()
    expected_ek = learn_ek(tpm_dir)
    note("netboot-tpm.ek_learnt_seconds", round(time.monotonic() - t0, 1))
    note("netboot-tpm.ek_fingerprint", expected_ek)

    keys_before = {str(k["id"]) for k in hs.preauth_keys()}
    prov = NetbootProvisioner(work / "provisioner", provisioner_tls, hs, netboot_image, [], cmdline=CMDLINE)
    # The MAC is in no allowlist and was never approved: allow checks the network only, and
    # netboot.tpm "required" boots unknown MACs so that their TPM can show itself.
    prov.config["allow"] = {"networks": ["127.0.0.0/8"]}
    prov.config["netboot"]["tpm"] = "required"
    prov.config_path.write_text(json.dumps(prov.config, indent=1) + "\n")
    swtpm = QemuSwtpm(tpm_dir / "state", work)
    vm = netboot_vm.NetbootVM(work / "vm", MAC_T, prov.boot_url, tpm_socket=swtpm.socket)
    ev: dict = {"prov": prov, "vm": vm, "swtpm": swtpm, "expected_ek": expected_ek, "keys_before": keys_before}
    try:
        prov.start()
        swtpm.start()
        vm.start()
        vm.wait_for_console(BANNER, BOOT_TIMEOUT_S)
        banner1 = vm.now()

        def pending_with_ek():
            for p in pending_entries(prov):
                if p.get("mac") == MAC_T and p.get("ek_fingerprint"):
                    return p
            # What would keep the machine off the list for good: a refusal (e.g. tpm-required,
            # when the agent could not use the TPM and asked without it), or the guest giving up.
            refused = [a for a in prov.audit() if a.get("event") == "refused" and MAC_T in (a.get("macs") or [])]
            if refused:
                # Why, in the guest's words: the agent gives up (the refusal is final) and the
                # collector reports its journal, unless the image's reboot_on_key_failure
                # reboots the machine first (a second kernel banner): bounded either way.
                def report_or_reboot():
                    boots = vm.boots()
                    if boots and boots[0].done:
                        return boots[0]
                    return "rebooted" if vm.console().count(BANNER) > 1 else None
                try:
                    got = vm.wait_for("the guest's report after the refusal", report_or_reboot, 300)
                except run_boot.BootError as e:
                    got = f"no report ({e})"
                if isinstance(got, netboot_vm.Boot):
                    tpm_lines = [x for x in got.sections.get("journal-text", "").splitlines() if "tpm" in x.lower()]
                    why = (f"\nthe guest's tailjoin journal:\n{agent_messages(got)[-4000:]}\n"
                           f"journal lines on the TPM: {tpm_lines[:12]}")
                else:
                    why = f"\n(the guest did not report its journal: {got}; console tail:\n{run_boot.tail(vm.console(), 40)})"
                raise run_boot.BootError(f"the provisioner refused the machine's key request instead of "
                                         f"holding it pending: {refused}{why}")
            boots = vm.boots()
            if boots and boots[0].done:
                raise run_boot.BootError("the guest reported before its MAC was pending with an EK; its "
                                         f"tailjoin journal:\n{agent_messages(boots[0])[-3000:]}")
            if not swtpm.alive():
                raise run_boot.BootError(f"swtpm exited: {run_boot.read_text(swtpm.log_path)[-2000:]}")
            return None

        ev["pending"] = vm.wait_for("the MAC pending with its EK", pending_with_ek, BOOT_TIMEOUT_S)
        ev["pending_at"] = vm.now()
        ev["audit_before_approve"] = prov.audit()
        assert ev["pending"]["ek_fingerprint"] == expected_ek, \
            f"the EK the machine showed is not its swtpm's: {ev['pending']} vs {expected_ek}"
        ev["approve"] = prov.cli("approve", MAC_T)
        ev["approved_at"] = vm.now()
        b1 = vm.wait_for_boot_done(1, BOOT_TIMEOUT_S)
        ev["b1"] = b1
        ev["node1"] = wait("node of boot 1 online in headscale", lambda: node_for(hs, b1), 120)
        ev["audit_1"] = prov.audit()
        ev["keys_after_1"] = [k for k in hs.preauth_keys() if str(k["id"]) not in keys_before]
        ev["timing1"] = timing(vm, b1, 0.0, banner1)
        ev["timing1"].update(pending_seen_s=round(ev["pending_at"], 1), approved_s=round(ev["approved_at"], 1))
        if ev["timing1"]["power_on_to_running_s"] is not None:
            ev["timing1"]["approve_to_running_s"] = round(ev["timing1"]["power_on_to_running_s"] - ev["approved_at"], 1)

        # Power cycle. The swtpm stays up; qemu re-initialises it at the reset.
        offset = len(vm.console())
        vm.reset()
        power_on2 = vm.power_ons[-1]
        vm.wait_for_console(BANNER, BOOT_TIMEOUT_S, after=offset)
        banner2 = vm.now()
        b2 = vm.wait_for_boot_done(2, BOOT_TIMEOUT_S)
        ev["b2"] = b2
        ev["node2"] = wait("node of boot 2 online in headscale", lambda: node_for(hs, b2), 120)
        ev["audit_2"] = prov.audit()
        ev["keys_after_2"] = [k for k in hs.preauth_keys() if str(k["id"]) not in keys_before]
        ev["pending_after_2"] = pending_entries(prov)
        ev["swtpm_alive_at_end"] = swtpm.alive()
        ev["timing2"] = timing(vm, b2, power_on2, banner2)
        note("netboot-tpm.accel", vm.accel)
        note("netboot-tpm.boot1", ev["timing1"])
        note("netboot-tpm.boot2", ev["timing2"])
        note("netboot-tpm.host_seconds", {"power_ons": vm.power_ons, "seen": vm.seen})
    except run_boot.BootError as e:
        vm.stop()
        swtpm.stop()
        prov.stop()
        pytest.fail(f"{e}\nprovisioner log: {prov.log()[-3000:]}\nswtpm log ({swtpm.log_path}): "
                    f"{run_boot.read_text(swtpm.log_path)[-1500:]}", pytrace=False)
    except BaseException:
        vm.stop()
        swtpm.stop()
        prov.stop()
        raise
    try:
        yield ev
    finally:
        vm.stop()
        swtpm.stop()
        prov.stop()


def issued_for(audit: list[dict]) -> list[dict]:
    return [a for a in audit if a.get("event") == "issued" and MAC_T in (a.get("macs") or [])]


def key_prefix(listed: str) -> str:
    """headscale 0.29 lists "hskey-auth-PREFIX-***"; every copy of the key holds hskey-auth-PREFIX."""
    assert listed.startswith("hskey-auth-") and listed.endswith("-***"), listed
    return listed[: -len("-***")]


def test_the_unknown_machine_waits_with_its_ek_until_approve_binds_it(tpm_boots):
    ev = tpm_boots
    fp = ev["expected_ek"]
    # The machine showed the EK of its swtpm (learnt with tpm2-tools before it ever booted).
    assert ev["pending"]["mac"] == MAC_T and ev["pending"]["ek_fingerprint"] == fp, ev["pending"]
    # It was held, not refused, and nothing was issued before the approval.
    before = ev["audit_before_approve"]
    assert not issued_for(before), f"a key was issued before the approval: {before}"
    assert not [a for a in before if a.get("event") == "refused"], before
    reasons = {(a.get("event"), a.get("reason")) for a in before}
    assert ("pending", "tpm-pending-approval") in reasons, f"no tpm-pending-approval in the audit: {before}"
    a = ev["approve"]
    assert a.returncode == 0, (a.returncode, a.stdout, a.stderr)
    assert f"bound to its TPM (EK {fp})" in a.stdout, a.stdout
    approved = json.loads((ev["prov"].state_dir / "netboot-approved.json").read_text())["macs"][MAC_T]
    assert approved.get("ek_fingerprint") == fp, approved


def test_first_boot_joins_with_its_tpm_and_no_boot_token(tpm_boots, netboot_image):
    ev = tpm_boots
    b1, prov, fp = ev["b1"], ev["prov"], ev["expected_ek"]
    ctx = f"(evidence in {ev['vm'].run_dir})"
    # The guest's checks of the netboot scenario hold unchanged: the boot script still puts a
    # token on the kernel command line (the provisioner issues one per boot); a TPM-proven
    # machine does not need it, and it is in no journal entry, argv, environment or file.
    assert_diskless_and_keyless(b1, ctx)
    assert b1.checks.get("kernel_cmdline_key_url") == prov.guest_url(), b1.checks
    assert MAC_T in b1.checks.get("guest_macs", "").split(), b1.checks
    # The agent used the kernel's TPM device, with the EK of the swtpm; it waited through the
    # provisioner's 503s without giving up (no restart of the unit).
    msgs = agent_messages(b1)
    assert f"proving this machine's TPM (device:/dev/tpmrm0) to the provisioner: EK {fp}" in msgs, \
        f"the agent did not prove the TPM {ctx}: {msgs[-3000:]}"
    assert re.search(r"503.*retrying in", msgs), f"the agent never waited on a 503 {ctx}: {msgs[-3000:]}"
    assert b1.show().get("NRestarts") == "0", f"tailjoin restarted while waiting for approval {ctx}: {b1.show()}"
    # The audit: one issued line for this machine, proven by its enrolled TPM, no boot token.
    issued = issued_for(ev["audit_1"])
    assert len(issued) == 1, f"expected one issued line after boot 1 {ctx}: {ev['audit_1']}"
    line = issued[0]
    assert line.get("ek_fingerprint") == fp, line
    assert "tpm_enrolled" in line.get("matched", []), line
    assert "boot_token" not in line, f"a TPM-proven machine used a boot token: {line}"
    assert line.get("machine_id") == b1.checks.get("machine_id"), (line, b1.checks.get("machine_id"))
    # One key: single-use, ephemeral, tagged; the node is that key's.
    keys = ev["keys_after_1"]
    assert len(keys) == 1, f"expected one minted key after boot 1 {ctx}: {keys}"
    k = keys[0]
    assert k.get("ephemeral") is True and k.get("used") is True and not k.get("reusable"), k
    assert k.get("acl_tags") == ["tag:netboot"], k
    assert line.get("key_id") == str(k["id"]), (line, k)
    node = ev["node1"]
    assert str((node.get("pre_auth_key") or {}).get("id")) == str(k["id"]), node
    assert node.get("tags") == ["tag:netboot"], node
    note("netboot-tpm.audit_issued_1", {x: line.get(x) for x in ("macs", "matched", "ek_fingerprint", "key_id")})


def test_reboot_joins_again_with_the_same_tpm_and_no_approval(tpm_boots):
    ev = tpm_boots
    b1, b2, fp = ev["b1"], ev["b2"], ev["expected_ek"]
    ctx = f"(evidence in {ev['vm'].run_dir})"
    assert ev["swtpm_alive_at_end"], "the swtpm did not outlive the power cycle"
    assert_diskless_and_keyless(b2, ctx)
    assert b1.checks["boot_id"] != b2.checks["boot_id"], "the second report is not from a new boot"
    msgs = agent_messages(b2)
    assert f"proving this machine's TPM (device:/dev/tpmrm0) to the provisioner: EK {fp}" in msgs, \
        f"boot 2's agent did not prove the TPM {ctx}: {msgs[-3000:]}"
    assert "503" not in msgs, f"boot 2 was made to wait although its EK is bound {ctx}: {msgs[-3000:]}"
    assert b2.show().get("NRestarts") == "0", b2.show()
    issued = issued_for(ev["audit_2"])
    assert len(issued) == 2, f"expected two issued lines after boot 2 {ctx}: {ev['audit_2']}"
    line = issued[1]
    assert line.get("ek_fingerprint") == fp and "tpm_enrolled" in line.get("matched", []), line
    assert "boot_token" not in line, f"a TPM-proven machine used a boot token: {line}"
    # No pending entry and no second approval: the EK bound at boot 1 is enough.
    after_1 = len(ev["audit_1"])
    assert not [a for a in ev["audit_2"][after_1:] if a.get("event") in ("pending", "refused")], ev["audit_2"][after_1:]
    assert not [p for p in ev["pending_after_2"] if p.get("mac") == MAC_T], ev["pending_after_2"]
    keys = ev["keys_after_2"]
    assert len(keys) == 2, f"expected two minted keys after two boots {ctx}: {keys}"
    assert line.get("key_id") == str(keys[1]["id"]), (line, keys)
    assert ev["node2"]["id"] != ev["node1"]["id"], (ev["node1"], ev["node2"])
    assert str((ev["node2"].get("pre_auth_key") or {}).get("id")) == str(keys[1]["id"]), ev["node2"]


def test_the_keys_never_appear_in_clear_outside_the_guest(tpm_boots, netboot_image):
    """The keys went out sealed to the TPM: neither is in the console, the guest's report, the
    provisioner's logs, qemu's argv or the files the machine booted."""
    ev = tpm_boots
    vm, prov = ev["vm"], ev["prov"]
    texts = {
        "console": vm.console(),
        "guest's report, boot 1": json.dumps(ev["b1"].sections),
        "guest's report, boot 2": json.dumps(ev["b2"].sections),
        "provisioner log": prov.log(),
        "audit": json.dumps(ev["audit_2"]),
        "qemu argv": (vm.run_dir / "qemu.argv").read_text(),
        "swtpm log": run_boot.read_text(ev["swtpm"].log_path),
    }
    for k in ev["keys_after_2"]:
        prefix = key_prefix(k["key"])
        for name, text in texts.items():
            assert prefix not in text, f"key {k['id']} in the {name}"
        for p in (netboot_image / "vmlinuz", netboot_image / "netboot-initrd.img"):
            assert not file_contains(p, prefix.encode()), f"key {k['id']} in {p}"
