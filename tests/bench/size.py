"""Section 4 of the benchmark: what each approach puts on the machine besides tailscaled.

Sizes are of the files themselves (after `strip` on a copy, where a binary is not stripped yet),
and of every shared library `ldd` lists for them, counted once per approach. The Debian
packages the scripts need are reported with dpkg's Installed-Size as well.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from common import BASELINES, containerboot_bin, peers, provisioner_bin, tailjoin_bin


def _which(name: str) -> str:
    p = shutil.which(name)
    if not p:
        raise RuntimeError(f"{name} is not installed")
    return os.path.realpath(p)


def stripped_size(path: str) -> tuple[int, int]:
    """(size as found, size after `strip` on a copy)."""
    size = os.path.getsize(path)
    with tempfile.TemporaryDirectory() as d:
        copy = Path(d) / "bin"
        shutil.copy2(path, copy)
        r = subprocess.run(["strip", str(copy)], capture_output=True)
        return size, (copy.stat().st_size if r.returncode == 0 else size)


def shared_libs(path: str) -> dict[str, int]:
    """name -> size of every library ldd resolves for path (empty for static binaries)."""
    r = subprocess.run(["ldd", path], capture_output=True, text=True)
    libs: dict[str, int] = {}
    for line in r.stdout.splitlines():
        line = line.strip()
        target = None
        if "=>" in line:
            target = line.split("=>", 1)[1].split("(")[0].strip()
        elif line.startswith("/"):
            target = line.split("(")[0].strip()
        if target and os.path.exists(target):
            real = os.path.realpath(target)
            libs[os.path.basename(target)] = os.path.getsize(real)
    return libs


def dpkg_installed_kib(packages: list[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for p in packages:
        r = subprocess.run(["dpkg-query", "-W", "-f", "${Installed-Size}", p], capture_output=True, text=True)
        if r.returncode == 0 and r.stdout.strip().isdigit():
            out[p] = int(r.stdout.strip())
    return out


def measure() -> dict:
    pb = peers.peers_bin()
    cli = str(pb / "tailscale")
    cli_size, cli_stripped = stripped_size(cli)

    tj = tailjoin_bin()
    tj_size, tj_stripped = stripped_size(tj)
    tj_libs = shared_libs(tj)
    prov = provisioner_bin()
    prov_size, prov_stripped = stripped_size(prov)

    cb = containerboot_bin()
    cb_size, cb_stripped = stripped_size(cb)

    script_bins = {name: _which(name) for name in ("bash", "jq", "sleep")}
    script_bin_sizes = {name: os.path.getsize(p) for name, p in script_bins.items()}
    script_libs: dict[str, int] = {}
    for p in script_bins.values():
        script_libs.update(shared_libs(p))
    scripts = {s.name: s.stat().st_size for s in sorted(BASELINES.glob("*.sh"))}
    packages = dpkg_installed_kib(["bash", "jq", "libjq1", "libonig5", "coreutils"])

    return {
        "tailjoin": {"path": tj, "size": tj_size, "stripped": tj_stripped, "libs": tj_libs},
        "provisioner": {"path": prov, "size": prov_size, "stripped": prov_stripped, "libs": shared_libs(prov)},
        "containerboot": {"size": cb_size, "stripped": cb_stripped, "libs": shared_libs(cb)},
        "tailscale_cli": {"size": cli_size, "stripped": cli_stripped},
        "script": {"bins": script_bin_sizes, "libs": script_libs, "scripts": scripts, "packages_kib": packages},
    }
