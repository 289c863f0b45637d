"""tests/demo.sh --vm: a real machine boots and joins, not only processes on loopback.

The demo's headscale runs on the host's loopback; the boot test's Debian 12 image (systemd 252,
tests/boot/build-image.sh, the tailjoin unit rendered from modules/tailjoin-unit.json) boots under
qemu and reaches it as http://10.0.2.2:PORT through qemu's user network. The single-use key goes
into a 0600 file, and qemu hands that file to the guest as the system credential
`tailscale-auth-key` via fw_cfg (`-fw_cfg name=opt/io.systemd.credentials/tailscale-auth-key,file=…`):
qemu's command line carries the file's path, never the key. In the guest, systemd imports it into
the system credential store and `LoadCredential=tailscale-auth-key` gives it to tailjoin, as the
NixOS module's `authKey.credential.source = null` does (and `nix run .#vm` for the generic OS).

The console scrolls by while the machine boots; then the guest's own view (tailjoin's journal,
`systemctl show tailjoin`, `tailjoin status --json`) and headscale's node list, taken while the
machine is still up. Every wait is for an event with a generous bound, never a fixed delay.

Needs root (build-image.sh: debootstrap on the first run, minutes; later runs reuse the cached
base and build the image in seconds). Environment: TAILJOIN_BIN, TAILJOIN_PEERS_BIN (set by
tests/demo.sh); TAILJOIN_DEMO_OUT keeps the evidence (console, the guest's sections, headscale's
node list, summary.json) in that directory instead of a temporary one that is removed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import run_boot  # noqa: E402
from guest_headscale import GuestHeadscale  # noqa: E402

HOSTNAME = "tailjoin-demo-vm"
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
# How long the guest may take to boot and join (TCG on a loaded 2-core host boots in 30-90 s),
# and how long it stays up after reporting so that headscale can be asked about it.
WAIT_S, HOLD_S, TIMEOUT_S = 300, 180, 900


def say(text: str) -> None:
    print(f"\n\033[1m==> {text}\033[0m" if sys.stdout.isatty() else f"\n==> {text}", flush=True)


def clean(line: str) -> str:
    return line if sys.stdout.isatty() else ANSI.sub("", line)


class ConsoleTail(threading.Thread):
    """Prints the guest's console (qemu writes it to a file) as it grows."""

    def __init__(self, path: Path):
        super().__init__(daemon=True)
        self.path = path
        self.done = threading.Event()

    def run(self) -> None:
        pos, partial = 0, ""
        while True:
            finished = self.done.is_set()
            try:
                with open(self.path, "rb") as f:
                    f.seek(pos)
                    chunk = f.read()
            except FileNotFoundError:
                chunk = b""
            pos += len(chunk)
            text = partial + chunk.decode(errors="replace").replace("\r", "")
            *lines, partial = text.split("\n")
            for line in lines:
                if line.strip():
                    print("    console | " + clean(line), flush=True)
            if finished:
                return
            self.done.wait(0.5)


def build_image(work: Path, hs: GuestHeadscale) -> Path:
    config = work / "tailjoin-config.json"
    config.write_text(json.dumps({
        "login_server": hs.guest_url,
        "auth_key": {"credential": run_boot.CREDENTIAL},
        "hostname": HOSTNAME,
    }, indent=1) + "\n")
    print("    the guest's /etc/tailjoin/config.json (no key in it: the key arrives at boot):")
    for line in config.read_text().splitlines():
        print("    | " + line)
    proc = subprocess.Popen([str(HERE / "build-image.sh"), "--config", str(config)],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out_lines: list[str] = []

    def drain_stdout():
        out_lines.extend(proc.stdout)

    t = threading.Thread(target=drain_stdout, daemon=True)
    t.start()
    for line in proc.stderr:
        print("    " + line.rstrip(), flush=True)
    rc = proc.wait()
    t.join()
    if rc != 0 or not out_lines:
        raise RuntimeError(f"tests/boot/build-image.sh failed ({rc}); see its messages above")
    image = Path(out_lines[-1].strip())
    manifest = json.loads((image / "manifest.json").read_text())
    print(f"    image {image}: {manifest['systemd']}, kernel {manifest['kernel']}")
    return image


def show_guest(res: run_boot.BootResult) -> dict:
    """Prints what the guest reported; returns the facts the summary needs."""
    say("in the guest: journalctl -u tailjoin (from the machine's own journal, shipped over its second serial port)")
    running = None
    for e in res.journal():
        t = int(e.get("__MONOTONIC_TIMESTAMP", "0")) / 1e6
        print(f"    [{t:8.3f}] {e.get('SYSLOG_IDENTIFIER', '?')}: {e.get('MESSAGE', '')}")
        if e.get("TAILJOIN_STATE") == "running" and running is None:
            running = e
    show = res.show()
    say("in the guest: systemctl show tailjoin")
    for k in ("ActiveState", "SubState", "StatusText", "NRestarts"):
        print(f"    {k}={show.get(k, '')}")
    say("in the guest: tailjoin status --json (its agent part)")
    raw = res.sections.get("status-json", "")
    try:
        agent = json.loads(raw).get("agent") or {}
    except json.JSONDecodeError:
        agent = {}
    for line in (json.dumps(agent, indent=2) if agent else raw.strip()).splitlines():
        print("    | " + line)
    return {
        "active_state": show.get("ActiveState"),
        "status_text": show.get("StatusText"),
        "agent_state": agent.get("state"),
        "key_source": agent.get("key_source"),
        "running_entry_uptime_s": round(int(running["__MONOTONIC_TIMESTAMP"]) / 1e6, 1) if running else None,
        "system_credential": res.checks.get("system_credential"),
    }


def main() -> int:
    if os.geteuid() != 0:
        print("tests/demo.sh --vm: building the Debian image needs root (debootstrap, chroot); "
              "run: sudo tests/demo.sh --vm", file=sys.stderr)
        return 2
    keep = os.environ.get("TAILJOIN_DEMO_OUT", "").strip()
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix="demo-vm-", dir=keep))
    else:
        work = Path(tempfile.mkdtemp(prefix="tailjoin-demo-vm-"))
    hs = GuestHeadscale(work / "headscale")
    summary: dict = {"hostname": HOSTNAME, "work": str(work)}
    try:
        say(f"starting headscale on {hs.url} (loopback only); the VM reaches it as http://10.0.2.2:{hs.port}")
        hs.start()
        user = hs.create_user("demo")
        key = hs.preauth_key(user)
        print("    created a single-use pre-auth key (never printed)")

        say("building the VM's disk: Debian 12 + tailscaled + tailjoin (the first run debootstraps: minutes)")
        image = build_image(work, hs)

        run_dir = work / "boot"
        accel, why = run_boot.pick_accel()
        say(f"booting it with qemu ({accel}: {why}); the key goes in as a systemd credential over fw_cfg")
        print(f"    -fw_cfg name=opt/io.systemd.credentials/{run_boot.CREDENTIAL},file={run_dir}/credential")
        print("    (a mode-600 file, removed when qemu stops: qemu's argv names the file, never the key)")
        run_dir.mkdir(parents=True)
        tail = ConsoleTail(run_dir / "console.log")
        tail.start()

        def while_up(res: run_boot.BootResult) -> None:
            # The guest has reported and is still up: ask headscale (the control server's view),
            # waiting for the node to be online, within a generous bound.
            try:
                node = hs.wait_node_online(HOSTNAME, timeout=120)
                res.host["online"] = bool(node.get("online"))
            except Exception as e:  # noqa: BLE001 - reported below with the node list
                res.host["online"] = False
                res.host["online_error"] = str(e)
            res.host["nodes"] = hs.nodes()

        t0 = time.monotonic()
        try:
            res = run_boot.boot(image, run_dir, key, scenario="normal", wait=WAIT_S, hold=HOLD_S,
                                timeout=TIMEOUT_S, on_done=while_up, cred_method="fw_cfg")
        finally:
            tail.done.set()
            tail.join(timeout=10)
        summary["boot_seconds"] = round(time.monotonic() - t0, 1)
        summary["guest_reported_at_s"] = res.done_at
        summary["accel"] = res.accel
        summary.update(show_guest(res))

        say("headscale nodes list (the control server's view, while the VM was up)")
        nodes = res.host.get("nodes", [])
        (work / "headscale-nodes.json").write_text(json.dumps(nodes, indent=1) + "\n")
        for n in nodes:
            state = "online" if n.get("online") else "offline"
            print(f"    node {n['id']}: {n.get('given_name') or n['name']}  {' '.join(n['ip_addresses'])}  "
                  f"{state}  user {n['user']['name']}")
        node = next((n for n in nodes if HOSTNAME in (n.get("name"), n.get("given_name"))), None)
        summary["node_online"] = bool(node and node.get("online"))
        summary["node_ips"] = node.get("ip_addresses") if node else []
        if res.host.get("online_error"):
            print(f"    {res.host['online_error']}")

        ok = summary["node_online"] and summary["active_state"] == "active" and summary["agent_state"] == "running"
        summary["joined"] = ok
        if ok:
            say(f"the VM booted and joined: {HOSTNAME} is online in headscale as "
                f"{' '.join(summary['node_ips'])}; tailjoin in the guest is running "
                f"(Running at {summary['running_entry_uptime_s']} s of guest uptime; "
                f"{summary['boot_seconds']} s in all, {res.accel.split()[0]})")
            return 0
        print(f"\ndemo --vm failed: the VM did not join (node online: {summary['node_online']}, "
              f"tailjoin {summary['active_state']}/{summary['agent_state']}); console and sections in {run_dir}",
              file=sys.stderr)
        return 1
    except Exception as e:  # noqa: BLE001 - the demo explains any failure and exits non-zero
        print(f"\ndemo --vm failed: {e}", file=sys.stderr)
        summary["error"] = str(e)
        return 1
    finally:
        hs.stop()
        (work / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
        if keep:
            print(f"\n    evidence kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
