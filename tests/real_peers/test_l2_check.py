"""netboot.l2_check on a LAN this test builds from network namespaces: a Linux bridge in the
host namespace (the provisioner's side, 10.231.7.1) and two machines, each in a namespace of its
own behind a veth pair with a MAC of its own. The provisioner (real, minting from real headscale)
reads the kernel's neighbour table: a request that names MAC A but comes from the network card
B is refused and audited, the machine whose card is A is served. Nothing routes out: the
namespaces have no other link and the bridge's /24 exists only here; all of it is removed at
teardown."""

from __future__ import annotations

import json
import os
import re
import shutil
import ssl
import subprocess
import urllib.error
import urllib.request

import pytest

import procs
from peers import free_port
from provisioner import Provisioner, credentials_dir

NET = "10.231.7"
MACHINES = {"m1": ("52:54:00:aa:07:02", f"{NET}.2"), "m2": ("52:54:00:aa:07:03", f"{NET}.3")}


def sh(*argv: str) -> None:
    r = subprocess.run(list(argv), capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {r.stderr.strip()}")


@pytest.fixture
def lan():
    if os.geteuid() != 0 or shutil.which("ip") is None or shutil.which("curl") is None:
        pytest.fail("the L2 check test builds network namespaces: it needs root, iproute2 and curl",
                    pytrace=False)
    sfx = f"{os.getpid() % 10000:04d}"
    bridge = f"tjl2br{sfx}"
    namespaces = {name: f"tjl2-{name}-{sfx}" for name in MACHINES}
    try:
        sh("ip", "link", "add", bridge, "type", "bridge")
        sh("ip", "addr", "add", f"{NET}.1/24", "dev", bridge)
        sh("ip", "link", "set", bridge, "up")
        for i, (name, (mac, addr)) in enumerate(MACHINES.items()):
            ns, veth = namespaces[name], f"tjl2v{i}{sfx}"
            sh("ip", "netns", "add", ns)
            sh("ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
            sh("ip", "link", "set", veth, "master", bridge, "up")
            sh("ip", "-n", ns, "link", "set", "eth0", "address", mac)
            sh("ip", "-n", ns, "addr", "add", f"{addr}/24", "dev", "eth0")
            sh("ip", "-n", ns, "link", "set", "eth0", "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        yield namespaces
    finally:
        for i, name in enumerate(MACHINES):
            subprocess.run(["ip", "link", "del", f"tjl2v{i}{sfx}"], capture_output=True, timeout=60)
            subprocess.run(["ip", "netns", "del", namespaces[name]], capture_output=True, timeout=60)
        subprocess.run(["ip", "link", "del", bridge], capture_output=True, timeout=60)


class LanProvisioner(Provisioner):
    """The provisioner listening on the bridge's address (its certificate names localhost, so the
    host's own health check skips the name and keeps the chain)."""

    def request(self, method, path="/v1/key", body=None, token=None):
        ctx = ssl.create_default_context(cafile=str(self.ca))
        ctx.check_hostname = False
        req = urllib.request.Request(f"https://{NET}.1:{self.port}{path}", method=method)
        try:
            with urllib.request.urlopen(req, context=ctx, timeout=30) as r:
                return r.status, {}, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, {}, e.read().decode()


@pytest.fixture
def provisioner(tmp_path, headscale, lan):
    kernel = tmp_path / "bzImage"
    kernel.write_bytes(os.urandom(4096))
    initrd = tmp_path / "initrd"
    initrd.write_bytes(b"initrd\n")
    creds = credentials_dir(tmp_path / "creds", headscale_api_key=headscale.api_key())
    port, nb_port = free_port(), free_port()
    prov = LanProvisioner(tmp_path / "prov", {
        "listen": f"{NET}.1:{port}",
        "mint": {"headscale": {"url": headscale.url, "allow_plain_http": True,
                               "api_key": {"credential": "headscale-api-key"}}},
        "tags": ["tag:netboot"],
        "key_expiry_secs": 120,
        "allow": {"networks": [f"{NET}.0/24"], "macs": [mac for mac, _ in MACHINES.values()]},
        "rate_limit": {"per_minute": 1000, "burst": 1000, "per_client_per_minute": 1000},
    }, creds)
    prov.port = port
    prov.config["listen"] = f"{NET}.1:{port}"
    prov.config["netboot"] = {
        "listen": f"{NET}.1:{nb_port}", "key_url": f"https://localhost:{port}/v1/key",
        "kernel": str(kernel), "initrds": [str(initrd)], "require_approval": False, "l2_check": True,
    }
    prov.config_path.write_text(json.dumps(prov.config, indent=1))
    prov.nb_port = nb_port
    try:
        yield prov.start()
    finally:
        procs.stop(prov.proc)


def from_machine(ns: str, *curl_args: str) -> tuple[int, str]:
    """curl run inside a machine's namespace: (HTTP status, body)."""
    r = subprocess.run(["ip", "netns", "exec", ns, "curl", "-sS", "--max-time", "30", "-o", "-",
                        "-w", "\n%{http_code}", *curl_args], capture_output=True, text=True, timeout=90)
    assert r.returncode == 0, r.stderr
    body, _, status = r.stdout.rpartition("\n")
    return int(status), body


def boot_script(prov, ns: str, mac: str) -> str:
    status, body = from_machine(ns, f"http://{NET}.1:{prov.nb_port}/v1/boot.ipxe?mac={mac}")
    assert status == 200 and body.startswith("#!ipxe"), (status, body)
    return body


def ask_key(prov, ns: str, token: str, mac: str) -> tuple[int, str]:
    return from_machine(
        ns, "--cacert", str(prov.ca), "--resolve", f"localhost:{prov.port}:{NET}.1",
        "-H", f"Authorization: Bearer {token}", "-H", "Content-Type: application/json",
        "--data", json.dumps({"hostname": "l2", "mac_addresses": [mac]}),
        f"https://localhost:{prov.port}/v1/key")


def token_of(script: str) -> str:
    m = re.search(r"tailjoin\.boot_token=([0-9a-f]+)", script)
    assert m, script
    return m.group(1)


def test_a_request_naming_another_machines_mac_is_refused_and_the_machine_itself_is_served(
        lan, provisioner, headscale):
    mac_a, _ = MACHINES["m1"]
    mac_b, _ = MACHINES["m2"]
    # m2 (card B) asks for A's boot: refused on its console, no token issued.
    refused = boot_script(provisioner, lan["m2"], mac_a)
    assert "boot_token" not in refused and f"came from the network card {mac_b}" in refused, refused

    # m1 (card A) is served, and its key request with its token gets a key.
    script = boot_script(provisioner, lan["m1"], mac_a)
    status, body = ask_key(provisioner, lan["m1"], token_of(script), mac_a)
    assert status == 200 and json.loads(body)["key"], (status, body)

    # A's next boot script, stolen by m2: its key request claims A but comes from card B.
    stolen = token_of(boot_script(provisioner, lan["m1"], mac_a))
    keys_before = len(headscale.preauth_keys())
    status, body = ask_key(provisioner, lan["m2"], stolen, mac_a)
    assert status == 403 and f"came from the network card {mac_b}" in body, (status, body)
    assert len(headscale.preauth_keys()) == keys_before, "a refused request mints nothing"
    # The token was not spent by the refusal: the machine it was issued to still gets its key.
    status, body = ask_key(provisioner, lan["m1"], stolen, mac_a)
    assert status == 200, (status, body)

    reasons = [l.get("reason") for l in provisioner.audit if l["event"] in ("refused", "boot_refused")]
    assert reasons.count("l2_mac_mismatch") == 2, provisioner.audit
