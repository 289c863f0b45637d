"""Section 7 of the benchmark: power-on → Running of a diskless netbooted machine under qemu.

Two variants of the same diskless image (tests/boot/build-image.sh --netboot), each served by its
own `tailjoin-provisioner` netboot listener, so both take the same iPXE path (DHCP, boot script,
kernel, the same-size initrd) and get the same kernel command line:

- tailjoin: the image's tailjoin (key source kernel_cmdline) POSTs its identity with the boot
  token from the kernel line to the provisioner, which mints a key through headscale's API.
- tailjoin-tpm: the same image and provisioner path, on a machine with a TPM 2.0 (swtpm behind
  qemu's tpm-tis): the provisioner's `netboot.tpm` is `required` and the machine's EK enrolled
  beforehand (`approve MAC --ek`), so the agent proves its TPM (challenge, ActivateCredential,
  sealed key) instead of presenting the token. The TPM round trip is the one difference.
- seed:     `--seed-autoconnect KEY`: the seed's oneshot (`sleep 2`, `tailscale status | jq`,
  `tailscale up --authkey`) with a reusable ephemeral pre-auth key baked into the image, as the
  seed does. The one difference.

Metric, the same for both: host time from qemu's start to the guest kernel's first console line
("Linux version", printed at once by earlycon), plus the guest's CLOCK_MONOTONIC at READY:
tailjoin.service's ActiveEnterTimestampMonotonic (Type=notify: READY=1 when Running) or the
oneshot's ExecMainExitTimestampMonotonic. Cross-check: tailscaled's own "→ Running" journal line
(short-monotonic). Every boot is a fresh qemu (a power-on), with its own MAC; the variants alternate.
"""

from __future__ import annotations

import json
import re
import statistics
import sys
import time
from pathlib import Path

from common import ROOT, BenchError, peers

sys.path.insert(0, str(ROOT / "tests" / "boot"))

VARIANTS = ["tailjoin", "tailjoin-tpm", "seed"]
BOOT_TIMEOUT_S = 900
# earlycon: the kernel's banner reaches the serial port at once, not when the console driver
# registers; loglevel=6 (instead of quiet) lets that NOTICE-level banner through.
CMDLINE = ("console=ttyS0 earlycon=uart8250,io,0x3f8,115200 panic=-1 loglevel=6 systemd.show_status=1 "
           "tailjoin_test.scenario=netboot tailjoin_test.wait=300 tailjoin_test.hold=5")
BANNER = "Linux version"
JOURNAL_TS = re.compile(r"^\[\s*(\d+\.\d+)\]")


def _boot_modules():
    try:
        import netboot_vm
        import run_boot
        import test_boot
    except Exception as e:  # noqa: BLE001 (any import failure is reported in words)
        raise BenchError(f"cannot import tests/boot's harness: {e}") from e
    return test_boot, netboot_vm, run_boot


def _guard(what: str, fn, *a, **kw):
    """tests/boot's helpers fail through pytest.fail (an exception outside pytest too)."""
    try:
        return fn(*a, **kw)
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as e:  # noqa: BLE001
        raise BenchError(f"{what}: {e}") from e


def running_line_s(journal: str) -> float | None:
    """Guest monotonic seconds of tailscaled's first switch to Running."""
    for line in journal.splitlines():
        if "tailscaled" in line and re.search(r"(->|→)\s*Running\b", line):
            m = JOURNAL_TS.match(line)
            if m:
                return float(m.group(1))
    return None


def ready_us(variant: str, boot) -> tuple[int, dict]:
    if variant.startswith("tailjoin"):
        show = boot.show("show")
        return int(show.get("ActiveEnterTimestampMonotonic") or 0), show
    show = boot.show("show-autoconnect")
    return int(show.get("ExecMainExitTimestampMonotonic") or 0), show


def make_provisioner(workdir: Path, tls, hs, image: Path, macs: list[str]):
    """The boot test's netboot provisioner (tests/boot/test_netboot.py), with this bench's
    kernel command line."""
    try:
        from test_netboot import NetbootProvisioner
    except Exception as e:  # noqa: BLE001 (any import failure is reported in words)
        raise BenchError(f"cannot import tests/boot/test_netboot.py: {e}") from e
    return NetbootProvisioner(workdir, tls, hs, image, macs, cmdline=CMDLINE)


def one_boot(netboot_vm, run_boot, variant: str, run_dir: Path, mac: str, boot_url: str,
             tpm_state: Path | None = None) -> dict:
    swtpm = None
    if tpm_state is not None:
        from test_netboot_tpm import QemuSwtpm
        run_dir.mkdir(parents=True, exist_ok=True)
        swtpm = QemuSwtpm(tpm_state, run_dir)
    vm = netboot_vm.NetbootVM(run_dir, mac, boot_url, tpm_socket=swtpm.socket if swtpm else None)
    try:
        if swtpm:
            swtpm.start()
        vm.start()
        t_banner = None
        deadline = time.monotonic() + BOOT_TIMEOUT_S
        while t_banner is None:
            if BANNER in vm.console():
                t_banner = vm.now()
                break
            if vm.proc.poll() is not None or time.monotonic() > deadline:
                raise BenchError(f"{variant}: no {BANNER!r} on the console (accel {vm.accel}); "
                                 f"tail: {run_boot.tail(vm.console())}")
            time.sleep(0.05)
        boot = vm.wait_for_boot_done(1, BOOT_TIMEOUT_S)
        t_done = vm.now()
    except run_boot.BootError as e:
        raise BenchError(f"{variant}: {e}") from e
    finally:
        vm.stop()
        if swtpm:
            swtpm.stop()
    us, show = ready_us(variant, boot)
    ok = (show.get("ActiveState") == "active") if variant.startswith("tailjoin") else (show.get("Result") == "success")
    if not us or not ok:
        raise BenchError(f"{variant}: not READY in the guest's report ({run_dir}): {show}")
    run_s = running_line_s(boot.sections.get("journal-text", ""))
    return {
        "variant": variant, "mac": mac, "accel": vm.accel,
        "host_to_banner_s": t_banner, "guest_ready_s": us / 1e6,
        "power_on_to_ready_s": t_banner + us / 1e6,
        "guest_running_line_s": run_s,
        "power_on_to_running_line_s": t_banner + run_s if run_s is not None else None,
        "host_done_s": t_done,
    }


def run(work: Path, runs: int, log=print) -> dict:
    test_boot, netboot_vm, run_boot = _boot_modules()
    work.mkdir(parents=True, exist_ok=True)
    peers_bin = peers.peers_bin()
    hs = test_boot.GuestHeadscale(work / "headscale", bin_dir=peers_bin)
    hs.start()
    provs = []
    try:
        uid = hs.create_user("netboot")
        tls = _guard("the throwaway CA", test_boot.make_ca_and_server_cert, work / "tls",
                     ["IP:10.0.2.2", "IP:127.0.0.1"])
        seed_key = test_boot.owner_only(work / "seed-authkey",
                                        hs.preauth_key(uid, reusable=True, ephemeral=True, expiration="24h",
                                                       tags=["tag:netboot"]) + "\n")
        images = {}
        t = time.monotonic()
        images["tailjoin"] = _guard("build-image.sh --netboot", test_boot.build_image, hs, peers_bin, work,
                                    "--provisioner-ca", str(tls["ca"]), "--netboot", label="netboot_image",
                                    config_name="tailjoin-config-netboot.json",
                                    auth_key={"kernel_cmdline": {"ca_file": test_boot.PROV_CA_IN_GUEST}})
        images["seed"] = _guard("build-image.sh --netboot --seed-autoconnect", test_boot.build_image, hs, peers_bin,
                                work, "--provisioner-ca", str(tls["ca"]), "--netboot", "--seed-autoconnect",
                                str(seed_key), label="netboot_seed_image",
                                config_name="tailjoin-config-netboot-seed.json",
                                auth_key={"kernel_cmdline": {"ca_file": test_boot.PROV_CA_IN_GUEST}})
        images["tailjoin-tpm"] = images["tailjoin"]
        log(f"  images built in {time.monotonic() - t:.0f} s: {images['tailjoin']}, {images['seed']}")
        sizes = {v: {f: (images[v] / f).stat().st_size for f in ("vmlinuz", "netboot-initrd.img")} for v in VARIANTS}
        macs = {v: [f"52:54:00:7b:{k:02x}:{i:02x}" for i in range(runs)] for k, v in enumerate(VARIANTS)}
        prov = {}
        for v in VARIANTS:
            p = make_provisioner(work / f"provisioner-{v}", tls, hs, images[v], macs[v])
            if v == "tailjoin-tpm":
                p.config["netboot"]["tpm"] = "required"
                p.config_path.write_text(json.dumps(p.config, indent=1) + "\n")
            provs.append(p)
            prov[v] = _guard(f"tailjoin-provisioner ({v})", p.start)
        # The TPM machine's swtpm state: its EK, read once, enrolled for every MAC of the variant
        # (the same TPM; each boot is a fresh qemu with its own MAC).
        tpm_state = work / "swtpm-machine"
        from test_netboot_tpm import learn_ek
        ek = _guard("the swtpm's EK", learn_ek, tpm_state)
        for mac in macs["tailjoin-tpm"]:
            r = prov["tailjoin-tpm"].cli("approve", mac, "--ek", ek)
            if r.returncode != 0:
                raise BenchError(f"approve {mac} --ek {ek}: {r.stderr.strip()}")
        boots: dict[str, list] = {v: [] for v in VARIANTS}
        for i in range(runs):
            order = VARIANTS if i % 2 == 0 else VARIANTS[::-1]
            for v in order:
                r = one_boot(netboot_vm, run_boot, v, work / f"vm-{v}-{i}", macs[v][i], prov[v].boot_url,
                             tpm_state=(tpm_state / "state") if v == "tailjoin-tpm" else None)
                boots[v].append(r)
                log(f"  boot {i + 1}/{runs} {v}: power-on → READY {r['power_on_to_ready_s']:.1f} s "
                    f"(kernel banner at {r['host_to_banner_s']:.1f} s host, READY at {r['guest_ready_s']:.2f} s "
                    f"guest; tailscaled Running at {r['guest_running_line_s']} s guest)")
        med = {v: statistics.median(r["power_on_to_ready_s"] for r in boots[v]) for v in VARIANTS}
        return {
            "runs": runs, "cmdline": CMDLINE, "accel": boots["tailjoin"][0]["accel"],
            "sizes": sizes, "boots": boots,
            "ratio_tailjoin_to_seed": med["tailjoin"] / med["seed"],
            "ratio_tpm_to_tailjoin": med["tailjoin-tpm"] / med["tailjoin"],
            "tpm_issued": sum(1 for a in prov["tailjoin-tpm"].audit()
                              if a.get("event") == "issued" and "tpm_enrolled" in a.get("matched", [])),
            "minted_keys": len([k for k in hs.preauth_keys() if not k.get("reusable")]),
        }
    finally:
        for p in provs:
            p.stop()
        hs.stop()
