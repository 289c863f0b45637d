"""`tests/demo.sh --vm` end to end: the Debian image boots under qemu and joins the demo's headscale.

Runs the demo exactly as a newcomer would (it builds the agent and the peers when needed, then
tests/boot/demo_vm.py), with TAILJOIN_DEMO_OUT so that its evidence stays: the console, the
guest's sections (shipped over its second serial port), headscale's node list taken while the VM
was up, and summary.json. Asserted: the node is online in headscale with a tailnet address, the
guest's tailjoin is active and says running, the key came as the fw_cfg system credential (never
on qemu's command line, never printed), and what the newcomer sees says so.

Run by tests/boot/run.sh (and so by CI): one more qemu boot (~1 min under TCG on a 2-core host,
plus the image build: seconds with the cached base, minutes the first time). Needs root, like the
demo; alone:

    sudo python3 -m pytest -v -s tests/boot/test_demo_vm.py
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
HOSTNAME = "tailjoin-demo-vm"
CREDENTIAL = "tailscale-auth-key"
# A generous bound for the whole demo: the agent and the peers may need building (minutes), the
# base image may need debootstrapping (minutes), then one TCG boot (30-90 s).
DEMO_TIMEOUT_S = 3600


def key_values(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def test_demo_vm_boots_and_joins(tmp_path):
    if os.geteuid() != 0:
        pytest.fail("tests/demo.sh --vm builds a Debian image with debootstrap and needs root; "
                    "run this test as root", pytrace=False)
    out = tmp_path / "demo"
    env = dict(os.environ, TAILJOIN_DEMO_OUT=str(out))
    t0 = time.monotonic()
    r = subprocess.run([str(ROOT / "tests" / "demo.sh"), "--vm"], cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                       capture_output=True, text=True, timeout=DEMO_TIMEOUT_S)
    seconds = round(time.monotonic() - t0, 1)
    print(f"\n[demo-vm] tests/demo.sh --vm took {seconds} s (exit {r.returncode})")
    shown = r.stdout
    ctx = f"\nstdout tail:\n{shown[-4000:]}\nstderr tail:\n{r.stderr[-3000:]}"
    assert r.returncode == 0, f"tests/demo.sh --vm exited {r.returncode}{ctx}"

    runs = sorted(out.glob("demo-vm-*"))
    assert len(runs) == 1, f"expected one kept run under {out}, found {runs}{ctx}"
    run = runs[0]
    summary = json.loads((run / "summary.json").read_text())
    print(f"[demo-vm] summary: {json.dumps(summary)}")

    # headscale's view, taken by the demo while the VM was up: the node, online, with an address
    # from the tailnet's range.
    nodes = json.loads((run / "headscale-nodes.json").read_text())
    mine = [n for n in nodes if HOSTNAME in (n.get("name"), n.get("given_name"))]
    assert len(mine) == 1, f"headscale lists {len(mine)} nodes named {HOSTNAME}: {nodes}"
    node = mine[0]
    assert node.get("online"), f"headscale does not list {HOSTNAME} online: {node}"
    v4 = [ip for ip in node["ip_addresses"] if re.fullmatch(r"100\.(6[4-9]|[7-9]\d|1[01]\d|12[0-7])\.\d+\.\d+", ip)]
    assert v4, f"no 100.64.0.0/10 address on the node: {node}"

    # The guest's own view: tailjoin active (READY=1) and running, with that address.
    boot = run / "boot"
    show = key_values((boot / "section-show.txt").read_text())
    assert show.get("ActiveState") == "active", f"tailjoin in the guest is {show}"
    assert show.get("StatusText", "").startswith("Running as ") and v4[0] in show["StatusText"], show
    status = json.loads((boot / "section-status-json.txt").read_text())
    assert status["agent"]["state"] == "running", status["agent"]
    assert v4[0] in status["agent"]["node"]["tailscale_ips"], status["agent"]
    journal = [json.loads(line) for line in (boot / "section-journal-tailjoin.txt").read_text().splitlines() if line.strip()]
    assert any(e.get("TAILJOIN_STATE") == "running" for e in journal), [e.get("MESSAGE") for e in journal]

    # The key came as the fw_cfg system credential and was loaded into the unit by name.
    assert status["agent"]["key_source"] == f"systemd credential {CREDENTIAL}", status["agent"]
    checks = key_values((boot / "section-checks.txt").read_text())
    assert checks.get("system_credential") == "present", checks
    assert checks.get("control_key_found_in_credential") == "1", checks
    for k in ("journal_entries_with_key", "processes_with_key_in_argv", "processes_with_key_in_environ",
              "files_with_key_outside_credentials"):
        assert checks.get(k) == "0", f"{k}: {checks}"
    argv = (boot / "qemu.argv").read_text()
    assert f"-fw_cfg name=opt/io.systemd.credentials/{CREDENTIAL},file={boot}/credential" in argv, argv
    assert "-smbios" not in argv, argv
    assert not (boot / "credential").exists(), "the credential file outlived qemu"
    # headscale's keys start hskey-; none in what qemu got on its command line, what the guest
    # printed on its console, or what the newcomer was shown.
    for name, text in (("qemu argv", argv), ("console", (boot / "console.log").read_text(errors="replace")),
                       ("stdout", shown), ("stderr", r.stderr)):
        assert "hskey-" not in text, f"something key-shaped in the {name}"

    # What the newcomer saw: the machine booting, its journal, and the node online.
    assert "console | " in shown and "Started tailjoin.service" in shown, ctx
    assert re.search(r"tailjoin: Running as tailjoin-demo-vm\S* 100\.", shown), ctx
    assert re.search(rf"node \d+: {HOSTNAME}\s+100\.\S+ .*\bonline\b", shown), ctx
    assert f"the VM booted and joined: {HOSTNAME} is online in headscale" in shown, ctx
    assert summary["joined"] is True and summary["node_online"] is True, summary
