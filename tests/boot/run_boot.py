#!/usr/bin/env python3
"""Boot the boot-test image with qemu and collect what the guest reports.

The guest (tests/boot/guest/image) writes its evidence to its second serial port; the first
serial port is the console. The disk is used with -snapshot, so one image serves any number
of boots and every boot starts from the same state. The auth key reaches the guest as a
systemd system credential through SMBIOS type 11 (or fw_cfg) read from a 0600 file, so it is
neither in the image nor on qemu's command line. With an image built with
`build-image.sh --encrypted-credential`, the credential is the key encrypted for that image's
host secret (`systemd-creds encrypt --with-key=host`, see encrypt-credential.sh) instead.
With no key at all (the netboot flow, scenario `provisioned`), no credential is passed; the
kernel command line then carries `tailjoin.key_url=` and a one-time `tailjoin.boot_token=`
(`extra_append`), and the NIC gets a fixed MAC (`mac`) the provisioner allows. Further system
credentials (e.g. a push reporter's URL, which carries a token) travel the same way, each in its
own 0600 file and its own `-smbios type=11,path=` (or `-fw_cfg`) option (`extra_credentials`).

    run_boot.py --image DIR --key-file FILE [--scenario normal] [--encrypt] [--out DIR]

Environment: TAILJOIN_BOOT_ACCEL=kvm|tcg forces the accelerator (default: KVM only when the
CPU shows vmx/svm and /dev/kvm opens, else TCG); TAILJOIN_BOOT_CRED=smbios|fw_cfg.
"""

from __future__ import annotations

import argparse
import base64
import gzip
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

HERE = Path(__file__).resolve().parent
CREDENTIAL = "tailscale-auth-key"


class BootError(RuntimeError):
    """The guest did not report; the message carries the console tail."""


def ensure_qemu() -> str:
    exe = shutil.which("qemu-system-x86_64")
    if exe:
        return exe
    r = subprocess.run(
        ["bash", "-c", f". {HERE}/deps.sh && tj_boot_need qemu-system-x86_64:qemu-system-x86"],
        capture_output=True, text=True,
    )
    exe = shutil.which("qemu-system-x86_64")
    if not exe:
        raise BootError(
            "qemu-system-x86_64 is not installed and could not be installed "
            f"(apt-get install qemu-system-x86): {r.stderr.strip()}"
        )
    return exe


def pick_accel() -> tuple[str, str]:
    """(accel, reason). KVM only where it really works: nested KVM hangs on these machines
    and /dev/kvm there is a PVM device the Debian kernel crawls under."""
    forced = os.environ.get("TAILJOIN_BOOT_ACCEL", "").strip()
    if forced:
        return forced, "TAILJOIN_BOOT_ACCEL"
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        flags = ""
    if not re.search(r"^flags\s*:.*\b(vmx|svm)\b", flags, re.M):
        return "tcg", "the CPU shows no vmx/svm (no usable hardware virtualisation)"
    try:
        fd = os.open("/dev/kvm", os.O_RDWR)
        os.close(fd)
    except OSError as e:
        return "tcg", f"/dev/kvm is not usable: {e}"
    return "kvm", "vmx/svm and /dev/kvm"


@dataclass
class BootResult:
    run_dir: Path
    accel: str
    seconds: float = 0.0
    hello_at: float | None = None
    done_at: float | None = None
    sections: dict[str, str] = field(default_factory=dict)
    checks: dict[str, str] = field(default_factory=dict)
    host: dict = field(default_factory=dict)
    markers: dict = field(default_factory=dict)

    @property
    def console(self) -> str:
        return read_text(self.run_dir / "console.log")

    def show(self, name: str = "show") -> dict[str, str]:
        return key_values(self.sections.get(name, ""))

    def journal(self) -> list[dict]:
        entries = []
        for line in self.sections.get("journal-tailjoin", "").splitlines():
            line = line.strip()
            if line:
                entries.append(json.loads(line))
        return entries


def key_values(text: str) -> dict[str, str]:
    """A section of KEY=VALUE lines (`systemctl show`, the collector's checks) as a dict."""
    out = {}
    for line in text.splitlines():
        k, _, v = line.partition("=")
        out[k] = v
    return out


def read_text(path: Path) -> str:
    try:
        return path.read_bytes().decode(errors="replace").replace("\r", "")
    except OSError:
        return ""


def parse_serial(text: str) -> tuple[dict[str, str], bool, bool]:
    """(sections, hello seen, done seen) from the guest's result port."""
    sections: dict[str, str] = {}
    cur: str | None = None
    buf: list[str] = []
    hello = done = False
    for line in text.replace("\r", "").splitlines():
        if line.startswith("TJ-HELLO"):
            hello = True
        elif line.startswith("TJ-BEGIN "):
            cur, buf = line.split(" ", 1)[1].strip(), []
        elif line.startswith("TJ-END ") and cur is not None:
            try:
                sections[cur] = gzip.decompress(base64.b64decode("".join(buf))).decode(errors="replace")
            except Exception as e:  # noqa: BLE001 - report, do not crash the run
                sections[cur] = f"<undecodable section: {e}>"
            cur = None
        elif line.startswith("TJ-DONE"):
            done = True
        elif cur is not None:
            buf.append(line.strip())
    return sections, hello, done


def encrypt_credential(image: Path, plaintext: str, name: str = CREDENTIAL) -> str:
    """`systemd-creds encrypt --with-key=host --name=NAME` of `plaintext` for `image` (built with
    --encrypted-credential), by the guest's own systemd-creds; returns the base64 text with its
    line breaks removed (systemd decodes it ignoring whitespace). The plaintext goes on stdin."""
    r = subprocess.run(
        [str(HERE / "encrypt-credential.sh"), str(image), name],
        input=plaintext, capture_output=True, text=True,
    )
    if r.returncode != 0 or not r.stdout.strip():
        raise BootError(f"encrypt-credential.sh failed ({r.returncode}): {r.stderr.strip()}")
    return "".join(r.stdout.split())


def boot(
    image: Path,
    run_dir: Path,
    key: str | None,
    scenario: str = "normal",
    wait: int = 180,
    hold: int = 60,
    timeout: float = 420.0,
    memory: int = 1024,
    smp: int = 2,
    events: list[tuple[str | None, float, Callable[[], None]]] | None = None,
    on_done: Callable[[BootResult], None] | None = None,
    credential: str | None = None,
    extra_append: str = "",
    mac: str | None = None,
    extra_credentials: dict[str, str] | None = None,
    cred_method: str | None = None,
) -> BootResult:
    """Boot once. `credential` is the system credential's value (default: `key` itself; the
    ciphertext from encrypt_credential() for an --encrypted-credential image). `events` are
    (marker, seconds, fn): fn runs `seconds` after the guest wrote a line starting with
    `marker` on the results port (None: after qemu started), e.g.
    ("TJ-TAILJOIN-STARTED", 25, start_headscale);
    `key` None with no `credential`: no credential at all. `extra_append` goes on the kernel
    command line, `mac` onto the virtio NIC (default: qemu's own); `extra_credentials` maps
    further system credential names to their values (files `credential-NAME`, removed after the
    boot like the key's); `cred_method` "smbios" or "fw_cfg" (default: $TAILJOIN_BOOT_CRED, else
    smbios);
    `on_done(result)` runs once the guest has reported and is still up (for host-side checks
    such as headscale listing the node online); then qemu is stopped."""
    image = Path(image)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    qemu = ensure_qemu()
    accel, why = pick_accel()
    console, results = run_dir / "console.log", run_dir / "results.log"
    for p in (console, results):
        p.unlink(missing_ok=True)

    # The key goes into a 0600 file that qemu reads; never onto argv.
    method = cred_method or os.environ.get("TAILJOIN_BOOT_CRED", "smbios")
    cred = run_dir / "credential"
    cred.unlink(missing_ok=True)
    value = key if credential is None else credential
    if value is not None:
        fd = os.open(cred, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(f"io.systemd.credential:{CREDENTIAL}={value}" if method == "smbios" else value)
    if value is None:
        cred_args = []
    elif method == "smbios":
        cred_args = ["-smbios", f"type=11,path={cred}"]
    elif method == "fw_cfg":
        cred_args = ["-fw_cfg", f"name=opt/io.systemd.credentials/{CREDENTIAL},file={cred}"]
    else:
        raise BootError(f"TAILJOIN_BOOT_CRED={method}: use smbios or fw_cfg")
    # qemu collects the strings of every `-smbios type=11` option into the OEM strings table;
    # systemd imports each `io.systemd.credential:` string as its own system credential.
    extra_files = []
    for name, text in (extra_credentials or {}).items():
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name) or name == CREDENTIAL:
            raise BootError(f"not a credential name (or the key's): {name!r}")
        path = run_dir / f"credential-{name}"
        path.unlink(missing_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(f"io.systemd.credential:{name}={text}" if method == "smbios" else text)
        extra_files.append(path)
        if method == "smbios":
            cred_args += ["-smbios", f"type=11,path={path}"]
        else:
            cred_args += ["-fw_cfg", f"name=opt/io.systemd.credentials/{name},file={path}"]

    append = (
        "root=/dev/vda rw console=ttyS0 panic=-1 quiet systemd.show_status=1 "
        f"tailjoin_test.scenario={scenario} tailjoin_test.wait={wait} tailjoin_test.hold={hold}"
    )
    if extra_append:
        append += " " + extra_append
    nic = "virtio-net-pci,netdev=n0" + (f",mac={mac}" if mac else "")
    argv = [
        qemu, "-accel", accel, "-m", str(memory), "-smp", str(smp),
        "-display", "none", "-no-reboot", "-nodefaults", "-no-user-config",
        "-kernel", str(image / "vmlinuz"), "-initrd", str(image / "initrd.img"), "-append", append,
        "-drive", f"file={image / 'disk.img'},format=raw,if=virtio,snapshot=on",
        "-netdev", "user,id=n0,net=10.0.2.0/24,host=10.0.2.2", "-device", nic,
        "-serial", f"file:{console}", "-serial", f"file:{results}",
        "-device", "virtio-rng-pci",
        *cred_args,
    ]
    (run_dir / "qemu.argv").write_text(" ".join(argv) + "\n")
    res = BootResult(run_dir=run_dir, accel=f"{accel} ({why})")
    pending = list(events or [])
    seen: dict[str | None, float] = {None: 0.0}
    t0 = time.monotonic()
    with open(run_dir / "qemu.log", "wb") as qlog:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=qlog, stderr=subprocess.STDOUT)
    try:
        while True:
            now = time.monotonic() - t0
            text = read_text(results)
            for marker, _, _ in pending:
                if marker not in seen and any(line.startswith(marker) for line in text.splitlines()):
                    seen[marker] = now
                    res.markers[marker] = round(now, 1)
            for ev in list(pending):
                marker, delay, fn = ev
                if marker in seen and now >= seen[marker] + delay:
                    pending.remove(ev)
                    fn()
            sections, hello, done = parse_serial(text)
            if hello and res.hello_at is None:
                res.hello_at = round(now, 1)
            if done:
                res.done_at = round(now, 1)
                res.sections = sections
                res.checks = dict(
                    line.split("=", 1) for line in sections.get("checks", "").splitlines() if "=" in line
                )
                if on_done:
                    on_done(res)
                break
            if proc.poll() is not None:
                raise BootError(
                    f"qemu exited with {proc.returncode} after {now:.0f}s before the guest reported "
                    f"(accel {res.accel}); qemu: {read_text(run_dir / 'qemu.log')[-2000:]}\n"
                    f"console tail ({console}):\n{tail(read_text(console))}"
                )
            if now > timeout:
                raise BootError(
                    f"the guest did not report within {timeout:.0f}s (accel {res.accel}); "
                    f"partial sections {sorted(sections)}; console tail ({console}):\n{tail(read_text(console))}"
                )
            time.sleep(0.5)
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        res.seconds = round(time.monotonic() - t0, 1)
        cred.unlink(missing_ok=True)
        for path in extra_files:
            path.unlink(missing_ok=True)
        for name, text in res.sections.items():
            (run_dir / f"section-{name}.txt").write_text(text)
    return res


def tail(text: str, n: int = 60) -> str:
    return "\n".join(text.splitlines()[-n:])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--image", type=Path, required=True, help="directory printed by build-image.sh")
    ap.add_argument("--key-file", type=Path, required=True, help="file holding the auth key")
    ap.add_argument("--scenario", default="normal")
    ap.add_argument("--encrypt", action="store_true",
                    help="pass the key encrypted for the image's host secret (image built with "
                         "--encrypted-credential; use with --scenario encrypted-credential)")
    ap.add_argument("--out", type=Path, default=Path("boot-run"))
    ap.add_argument("--wait", type=int, default=180)
    ap.add_argument("--hold", type=int, default=5)
    ap.add_argument("--timeout", type=float, default=420)
    a = ap.parse_args(argv)
    key = a.key_file.read_text().strip()
    cred = encrypt_credential(a.image, key) if a.encrypt else None
    r = boot(a.image, a.out, key, a.scenario, a.wait, a.hold, a.timeout, credential=cred)
    print(json.dumps({"accel": r.accel, "seconds": r.seconds, "done_at": r.done_at, "checks": r.checks,
                      "show": r.show()}, indent=1))
    print(r.sections.get("security", "").strip().splitlines()[-1:] or "no security section")
    return 0


if __name__ == "__main__":
    sys.exit(main())
