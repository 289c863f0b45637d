"""A diskless qemu machine that boots from the network, the way a home-lab NUC does.

The machine has no disk at all. Its virtio NIC boots with Debian's iPXE ROM (`ipxe-qemu`,
`-boot n`); qemu's user-network DHCP hands iPXE a bootfile URL on the host's loopback (seen
from the guest as 10.0.2.2), where `tailjoin-provisioner` answers with the boot script. SeaBIOS
mirrors the firmware's text console (iPXE's `echo` lines included) onto the first serial port
(`etc/sercon-port`), so what the machine says before Linux starts lands in console.log too.
The guest's collector (guest/image/usr/local/lib/tailjoin-test/collect) writes its evidence to
the second serial port; a reboot keeps appending to the same files, so each boot's evidence
starts with its own TJ-HELLO line.

`reset()` is a power cycle through qemu's monitor (`system_reset`): RAM is gone, the NIC and
its MAC stay, the firmware runs again and asks the provisioner for a new boot script.
"""

from __future__ import annotations

import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import run_boot

# SeaBIOS reads etc/sercon-port as a little-endian integer: the first serial port's I/O base.
SERCON_PORT = (0x3F8).to_bytes(2, "little")


@dataclass
class Boot:
    """One boot's evidence from the results port."""

    sections: dict[str, str]
    hello: bool
    done: bool
    hello_line: str = ""
    checks: dict[str, str] = field(default_factory=dict)

    def show(self, name: str = "show") -> dict[str, str]:
        return run_boot.key_values(self.sections.get(name, ""))


def split_boots(text: str) -> list[Boot]:
    """The results port's text, cut into boots at each TJ-HELLO line."""
    boots: list[Boot] = []
    chunk: list[str] = []
    for line in text.replace("\r", "").splitlines():
        if line.startswith("TJ-HELLO") and chunk:
            boots.append(_boot(chunk))
            chunk = []
        chunk.append(line)
    if chunk and any(line.startswith("TJ-HELLO") for line in chunk):
        boots.append(_boot(chunk))
    return boots


def _boot(lines: list[str]) -> Boot:
    sections, hello, done = run_boot.parse_serial("\n".join(lines))
    checks = dict(
        line.split("=", 1) for line in sections.get("checks", "").splitlines() if "=" in line
    )
    return Boot(sections, hello, done, next((x for x in lines if x.startswith("TJ-HELLO")), ""), checks)


# The option ROM qemu loads for virtio-net-pci: Debian's ipxe-qemu build of iPXE.
IPXE_ROM = Path("/usr/lib/ipxe/qemu/efi-virtio.rom")


def ensure_ipxe_rom() -> None:
    if IPXE_ROM.exists():
        return
    r = subprocess.run(
        ["bash", "-c", "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ipxe-qemu"],
        capture_output=True, text=True,
    )
    if not IPXE_ROM.exists():
        raise run_boot.BootError(
            f"{IPXE_ROM} (Debian's iPXE ROM for qemu's virtio NIC) is missing and ipxe-qemu could not be "
            f"installed (apt-get install ipxe-qemu): {r.stderr.strip()[-1000:]}"
        )


class NetbootVM:
    def __init__(self, run_dir: Path, mac: str, bootfile_url: str, memory: int = 1536, smp: int = 2,
                 tpm_socket: Path | None = None):
        self.run_dir = Path(run_dir)
        # A TPM 2.0 (TIS interface) backed by an swtpm listening on this control socket
        # (`swtpm socket --tpm2 --ctrl type=unixio,path=SOCK`); qemu sends it the init itself,
        # also at each system_reset, so the swtpm outlives power cycles. None: no TPM.
        self.tpm_socket = Path(tpm_socket) if tpm_socket else None
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.mac = mac
        self.bootfile_url = bootfile_url
        self.memory = memory
        self.smp = smp
        self.console_path = self.run_dir / "console.log"
        self.results_path = self.run_dir / "results.log"
        self.monitor_path = self.run_dir / "monitor.sock"
        self.proc: subprocess.Popen | None = None
        self.started_at = 0.0
        self.accel = ""
        # Host times (monotonic, seconds since start()) of power-ons and of lines first seen.
        self.power_ons: list[float] = []
        self.seen: dict[str, float] = {}

    def start(self) -> "NetbootVM":
        qemu = run_boot.ensure_qemu()
        ensure_ipxe_rom()
        accel, why = run_boot.pick_accel()
        self.accel = f"{accel} ({why})"
        for p in (self.console_path, self.results_path, self.monitor_path):
            p.unlink(missing_ok=True)
        sercon = self.run_dir / "sercon-port.bin"
        sercon.write_bytes(SERCON_PORT)
        argv = [
            qemu, "-accel", accel, "-m", str(self.memory), "-smp", str(self.smp),
            "-display", "none", "-nodefaults", "-no-user-config",
            # No -drive at all: the network is the only way to boot.
            "-boot", "n",
            "-netdev", f"user,id=n0,net=10.0.2.0/24,host=10.0.2.2,bootfile={self.bootfile_url}",
            "-device", f"virtio-net-pci,netdev=n0,mac={self.mac}",
            "-fw_cfg", f"name=etc/sercon-port,file={sercon}",
            "-serial", f"file:{self.console_path}", "-serial", f"file:{self.results_path}",
            "-device", "virtio-rng-pci",
            "-monitor", f"unix:{self.monitor_path},server=on,wait=off",
        ]
        if self.tpm_socket:
            argv += ["-chardev", f"socket,id=chrtpm,path={self.tpm_socket}",
                     "-tpmdev", "emulator,id=tpm0,chardev=chrtpm", "-device", "tpm-tis,tpmdev=tpm0"]
        (self.run_dir / "qemu.argv").write_text(" ".join(argv) + "\n")
        self.started_at = time.monotonic()
        self.power_ons = [0.0]
        with open(self.run_dir / "qemu.log", "wb") as qlog:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=qlog, stderr=subprocess.STDOUT)
        return self

    def now(self) -> float:
        return time.monotonic() - self.started_at

    def console(self) -> str:
        return run_boot.read_text(self.console_path)

    def results(self) -> str:
        return run_boot.read_text(self.results_path)

    def boots(self) -> list[Boot]:
        return split_boots(self.results())

    def reset(self) -> None:
        """Power cycle: qemu's `system_reset` on the monitor socket."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(10)
            s.connect(str(self.monitor_path))
            s.recv(4096)  # the monitor's banner
            s.sendall(b"system_reset\n")
            time.sleep(0.2)
        self.power_ons.append(self.now())

    def wait_for(self, what: str, predicate: Callable[[], object], timeout: float):
        """Polls `predicate` until it returns something true; fails with the console's tail when
        qemu exits or `timeout` seconds pass."""
        deadline = time.monotonic() + timeout
        while True:
            got = predicate()
            if got:
                return got
            if self.proc is not None and self.proc.poll() is not None:
                raise run_boot.BootError(
                    f"qemu exited with {self.proc.returncode} at {self.now():.0f}s while waiting for {what} "
                    f"(accel {self.accel}); qemu: {run_boot.read_text(self.run_dir / 'qemu.log')[-2000:]}\n"
                    f"console tail ({self.console_path}):\n{run_boot.tail(self.console())}"
                )
            if time.monotonic() > deadline:
                raise run_boot.BootError(
                    f"no {what} within {timeout:.0f}s (accel {self.accel}); console tail "
                    f"({self.console_path}):\n{run_boot.tail(self.console())}"
                )
            time.sleep(0.5)

    def wait_for_boot_done(self, n: int, timeout: float) -> Boot:
        """Waits until the n-th boot (1-based) has reported TJ-DONE; records when it was seen."""
        def done():
            boots = self.boots()
            return boots[n - 1] if len(boots) >= n and boots[n - 1].done else None
        b = self.wait_for(f"report of boot {n}", done, timeout)
        self.seen.setdefault(f"boot{n}-done", round(self.now(), 1))
        for name, text in b.sections.items():
            (self.run_dir / f"boot{n}-section-{name}.txt").write_text(text)
        return b

    def wait_for_console(self, needle: str, timeout: float, after: int = 0) -> str:
        """Waits for `needle` on the console past character `after`; returns the line."""
        def found():
            text = self.console()[after:]
            for line in text.splitlines():
                if needle in line:
                    return line.strip()
            return None
        line = self.wait_for(f"console line with {needle!r}", found, timeout)
        self.seen.setdefault(needle, round(self.now(), 1))
        return line

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.monitor_path.unlink(missing_ok=True)
