"""The provisioner issues the boot (`netboot` section), on real headscale and tailscaled: an HTTP
client playing iPXE (or pixiecore) asks for its boot script, downloads the kernel and initrds,
and the real agent joins with the kernel command line the script carries. The one-time token is
bound to the MAC, spent with the key, refused on replay, after expiry, for another MAC and once
revoked, and it stays spent across a restart. Unknown MACs wait on the pending list until
`tailjoin-provisioner approve`."""

from __future__ import annotations

import concurrent.futures
import json
import os
import re
import socket
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

import procs
from agent import Agent, provisioner_bin
from leaks import remember
from peers import free_port
from provisioner import Provisioner, credentials_dir
from test_minting import MINTED

OTHER_MAC = "52:54:00:65:43:21"
UNKNOWN_MAC = "52:54:00:0a:0b:0c"
GENEROUS = {"per_minute": 1000, "burst": 1000, "per_client_per_minute": 1000}


def host_mac() -> str:
    """A MAC this machine's agent reports (it reads /sys/class/net, as on a netbooted machine)."""
    macs = []
    for p in sorted(Path("/sys/class/net").glob("*/address")):
        m = p.read_text().strip().lower()
        if re.fullmatch(r"([0-9a-f]{2}:){5}[0-9a-f]{2}", m) and m != "00:00:00:00:00:00":
            macs.append(m)
    if not macs:
        pytest.fail("this machine has no network interface with a MAC address in /sys/class/net; "
                    "the agent would report none and no token could be bound to it", pytrace=False)
    return macs[0]


@pytest.fixture
def boot_files(tmp_path):
    d = tmp_path / "boot"
    d.mkdir()
    kernel = d / "bzImage"
    kernel.write_bytes(os.urandom(3 * 1024 * 1024 + 17))
    initrds = [d / "initrd-0", d / "initrd-1"]
    initrds[0].write_bytes(os.urandom(70000))
    initrds[1].write_bytes(b"second initrd\n")
    return kernel, initrds


@pytest.fixture
def netboot_provisioner(tmp_path, headscale, boot_files, provisioner_factory):
    """start(name="provisioner", netboot=None, **config overrides) -> a started Provisioner with a
    `netboot` section; every one is stopped at teardown (provisioner_factory)."""

    def start(name: str = "provisioner", netboot: dict | None = None, **overrides) -> Provisioner:
        creds = credentials_dir(tmp_path / f"{name}-creds", headscale_api_key=headscale.api_key())
        kernel, initrds = boot_files
        config = {
            "mint": {"headscale": {"url": headscale.url, "allow_plain_http": True,
                                   "api_key": {"credential": "headscale-api-key"}}},
            "tags": ["tag:netboot"],
            "key_expiry_secs": 120,
            "allow": {"networks": ["127.0.0.0/8"]},
            "rate_limit": GENEROUS,
            **overrides,
        }
        prov = provisioner_factory(tmp_path / name, config, creds, start=False)
        nb_port = free_port()
        prov.config["netboot"] = {
            "listen": f"127.0.0.1:{nb_port}",
            "key_url": prov.url,
            "kernel": str(kernel),
            "initrds": [str(p) for p in initrds],
            "cmdline": "console=ttyS0 quiet",
            **(netboot or {}),
        }
        prov.config_path.write_text(json.dumps(prov.config, indent=1))
        prov.nb_url = f"http://127.0.0.1:{nb_port}"
        return prov.start()

    return start


def nb_get(prov, path: str, headers: dict | None = None, method: str = "GET") -> tuple[int, dict, bytes]:
    req = urllib.request.Request(prov.nb_url + path, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()


def sleep_secs(script: str) -> int:
    """The delay a refusal script's `sleep` line asks for."""
    found = [int(l.split()[1]) for l in script.splitlines() if l.startswith("sleep ")]
    assert len(found) == 1, script
    return found[0]


def ipxe(prov, mac: str | None = None, attempt: int | None = None) -> str:
    q = "" if mac is None else f"?mac={mac}" + ("" if attempt is None else f"&attempt={attempt}")
    status, headers, body = nb_get(prov, "/v1/boot.ipxe" + q)
    assert status == 200 and headers["cache-control"] == "no-store", (status, headers, body)
    text = body.decode()
    assert text.startswith("#!ipxe\n"), text
    return text


def parse_boot_script(text: str) -> dict:
    """What iPXE would do with the script: the kernel URL and command line, the initrd URLs."""
    kernel = [l for l in text.splitlines() if l.startswith("kernel ")]
    assert len(kernel) == 1, text
    words = kernel[0].split()
    assert words[-2:] == ["||", "goto"] or words[-3:-1] == ["||", "goto"], words
    words = words[1:words.index("||")]
    initrds = [l.split()[1] for l in text.splitlines() if l.startswith("initrd ")]
    cmdline = " ".join(words[1:])
    token = re.search(r"tailjoin\.boot_token=([0-9a-f]+)", cmdline)
    assert token, cmdline
    remember(token.group(1))
    return {"kernel": words[0], "cmdline": cmdline, "initrds": initrds, "token": token.group(1)}


def issue(prov, mac: str) -> dict:
    script = ipxe(prov, mac)
    assert "\nboot || goto failed\n" in script, script
    return parse_boot_script(script)


def cli(prov, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TAILJOIN_")}
    return subprocess.run([provisioner_bin(), f"--config={prov.config_path}", *args],
                          capture_output=True, text=True, timeout=30, env=env)


def pending_macs(prov) -> list[str]:
    r = cli(prov, "pending", "--json")
    assert r.returncode == 0, r.stderr
    return [p["mac"] for p in json.loads(r.stdout)["pending"]]


def post_key(prov, token: str, macs: list[str], refusal: str | None = None) -> tuple[int, str]:
    """POST /v1/key; with `refusal`, asserts the answer's Tailjoin-Refusal header names it (the
    refusal's kind, machine-readably, beside the message)."""
    status, headers, body = prov.request("POST", body={"hostname": "replayer", "machine_id": "0" * 32,
                                                       "mac_addresses": macs}, token=token)
    if status == 200:
        MINTED.append(json.loads(body)["key"])
        assert "tailjoin-refusal" not in headers, headers
    if refusal is not None:
        assert headers.get("tailjoin-refusal") == refusal, (status, headers, body)
    return status, body


def agent_with_cmdline(agent_factory, tmp_path, ts, headscale, prov, cmdline: str) -> Agent:
    """The real agent reading its key URL and token from a kernel command line file."""
    path = tmp_path / f"cmdline-{ts.name}"
    path.write_text(f"BOOT_IMAGE=/v1/files/kernel {cmdline}\n")
    cfg = tmp_path / f"config-{ts.name}.json"
    cfg.write_text(json.dumps({
        "auth_key": {"kernel_cmdline": {"path": str(path), "ca_file": str(prov.ca)}},
        "retry": {"initial_delay_ms": 100, "max_delay_ms": 500, "max_attempts": 3},
    }))
    return agent_factory(tmp_path / f"agent-{ts.name}", ts, headscale.url, args=[f"--config={cfg}"])


def test_ipxe_boot_enrolment_files_and_the_real_agent_joining_once(
        headscale, tailscaled_factory, agent_factory, netboot_provisioner, boot_files, tmp_path):
    mac = host_mac()
    kernel, initrds = boot_files
    prov = netboot_provisioner()
    # First stage: no MAC yet, chain to the per-MAC URL (built from the Host header).
    first = ipxe(prov)
    assert first == f"#!ipxe\nchain {prov.nb_url}/v1/boot.ipxe?mac=${{net0/mac}}\n", first

    # An unknown MAC: the console says why and how to fix it, then sleeps and chains again.
    refusal = ipxe(prov, mac)
    lines = refusal.splitlines()
    assert lines[1].startswith("echo tailjoin: ") and mac in lines[1], refusal
    assert f"tailjoin-provisioner approve {mac}" in lines[1]
    # retry_secs 30, doubling per attempt, each spread over 75-125 % (jitter).
    assert 22 <= sleep_secs(refusal) <= 38, refusal
    assert lines[-1] == f"chain {prov.nb_url}/v1/boot.ipxe?mac={mac}&attempt=1"
    retry = ipxe(prov, mac, attempt=1)
    assert 45 <= sleep_secs(retry) <= 75 and retry.endswith("&attempt=2\n"), retry
    spread = {sleep_secs(ipxe(prov, mac)) for _ in range(12)}
    assert len(spread) > 1, f"12 refusals all said sleep {spread}: no jitter"
    for text in (refusal, retry):
        assert "boot_token" not in text and "kernel " not in text
    assert pending_macs(prov) == [mac]
    pend = [l for l in prov.audit if l["event"] == "pending"]
    assert len(pend) == 1 and pend[0]["macs"] == [mac] and pend[0]["client"] == "127.0.0.1", prov.audit
    assert headscale.preauth_keys() == [], "nothing is minted for a refused boot"

    # The admin approves it once; from then on it boots unattended.
    r = cli(prov, "approve", mac.upper())
    assert r.returncode == 0 and "approved" in r.stdout, (r.stdout, r.stderr)
    r = cli(prov, "approve", "52:54:00:zz:00:01")
    assert r.returncode == 2 and "not a MAC address" in r.stderr
    boot = issue(prov, mac)
    assert pending_macs(prov) == []
    assert boot["kernel"] == f"{prov.nb_url}/v1/files/kernel"
    assert boot["initrds"] == [f"{prov.nb_url}/v1/files/initrd/0", f"{prov.nb_url}/v1/files/initrd/1"]
    assert boot["cmdline"].startswith(f"console=ttyS0 quiet tailjoin.key_url={prov.url} tailjoin.boot_token=")
    assert len(boot["token"]) == 64

    # The files, whole and in ranges, as iPXE (or a resuming client) fetches them.
    status, h, body = nb_get(prov, "/v1/files/kernel")
    assert status == 200 and body == kernel.read_bytes() and h["accept-ranges"] == "bytes"
    assert int(h["content-length"]) == kernel.stat().st_size
    status, h, body = nb_get(prov, "/v1/files/kernel", method="HEAD")
    assert status == 200 and body == b"" and int(h["content-length"]) == kernel.stat().st_size
    size = kernel.stat().st_size
    for rng, (a, b) in [("bytes=5-14", (5, 14)), ("bytes=-7", (size - 7, size - 1)),
                        (f"bytes={size - 3}-", (size - 3, size - 1))]:
        status, h, body = nb_get(prov, "/v1/files/kernel", {"Range": rng})
        assert status == 206 and body == kernel.read_bytes()[a:b + 1], rng
        assert h["content-range"] == f"bytes {a}-{b}/{size}"
    status, h, _ = nb_get(prov, "/v1/files/kernel", {"Range": f"bytes={size}-"})
    assert status == 416 and h["content-range"] == f"bytes */{size}"
    for i, p in enumerate(initrds):
        status, _, body = nb_get(prov, f"/v1/files/initrd/{i}")
        assert status == 200 and body == p.read_bytes()
    for bad in ("/v1/files/initrd/2", "/v1/files/initrd/../kernel", "/v1/files/..%2f..%2fetc%2fpasswd"):
        assert nb_get(prov, bad)[0] == 404, bad

    # The real agent boots with that command line and joins.
    ts = tailscaled_factory("nbnode")
    a = agent_with_cmdline(agent_factory, tmp_path, ts, headscale, prov, boot["cmdline"])
    a.wait_state("running", timeout=60)
    node = headscale.wait_node_online("nbnode")
    assert node.get("tags") == ["tag:netboot"], node
    keys = headscale.preauth_keys()
    MINTED.extend(k["key"] for k in keys)
    assert len(keys) == 1 and keys[0]["used"] is True
    issued = [l for l in prov.audit if l["event"] == "issued"]
    assert len(issued) == 1 and mac in issued[0]["macs"], prov.audit
    assert issued[0]["boot_token"].startswith(f"netboot token for {mac}")
    assert "netboot_token" in issued[0]["matched"]

    # The same token again (seen on the wire): refused, nothing minted.
    status, body = post_key(prov, boot["token"], [mac], refusal="boot_token_used")
    assert status == 403 and "used already" in body, body
    assert len(headscale.preauth_keys()) == 1

    # A fresh token presented with another MAC: refused, and not spent by the attempt.
    second = issue(prov, mac)
    status, body = post_key(prov, second["token"], [OTHER_MAC], refusal="boot_token_other_mac")
    assert status == 403 and "bound to a MAC" in body, body
    assert len(headscale.preauth_keys()) == 1
    # A token issued before the restart below, not spent yet.
    third = issue(prov, mac)
    status, body = post_key(prov, second["token"], [mac], refusal="boot_token_revoked")
    assert status == 403 and "revoked" in body, "one boot per MAC: the newer token replaced it"
    reasons = [l["reason"] for l in prov.audit if l["event"] == "refused"]
    assert reasons == ["boot_token_used", "boot_token_other_mac", "boot_token_revoked"], reasons
    for l in prov.audit:
        assert boot["token"] not in json.dumps(l) and third["token"] not in json.dumps(l)
    prov.stop()

    # A restart keeps the spent token spent and the issued one valid; only hashes are on disk.
    store = (prov.state_dir / "netboot-tokens.json").read_text()
    assert boot["token"] not in store and third["token"] not in store
    prov.start()
    status, body = post_key(prov, boot["token"], [mac], refusal="boot_token_used")
    assert status == 403 and "used already" in body
    status, body = post_key(prov, third["token"], [mac])
    assert status == 200, body
    assert len(headscale.preauth_keys()) == 2
    status, body = post_key(prov, third["token"], [mac])
    assert status == 403 and "used already" in body
    for secret in (boot["token"], third["token"]):
        assert secret not in prov.log()


def test_pixiecore_api_expiry_revocation_and_refusals(headscale, netboot_provisioner):
    mac = host_mac()
    prov = netboot_provisioner(
        allow={"networks": ["127.0.0.0/8"], "macs": [mac]},
        netboot={"token_ttl_secs": 30, "retry_secs": 5},
    )
    # pixiecore's API: 200 with kernel, initrd list and cmdline for a known MAC.
    status, h, body = nb_get(prov, f"/v1/boot/{mac}")
    assert status == 200 and h["content-type"] == "application/json", body
    doc = json.loads(body)
    assert doc["kernel"] == "/v1/files/kernel"
    assert doc["initrd"] == ["/v1/files/initrd/0", "/v1/files/initrd/1"]
    m = re.fullmatch(rf"console=ttyS0 quiet tailjoin\.key_url={re.escape(prov.url)} "
                     r"tailjoin\.boot_token=([0-9a-f]{64})", doc["cmdline"])
    assert m, doc["cmdline"]
    remember(m.group(1))
    expiring = m.group(1)
    issued_at = time.monotonic()
    # Any answer but 200 makes pixiecore ignore the machine: an unknown MAC gets 403 and waits.
    status, _, body = nb_get(prov, f"/v1/boot/{UNKNOWN_MAC}")
    assert status == 403 and b"tailjoin-provisioner approve" in body and b"boot_token" not in body
    assert pending_macs(prov) == [UNKNOWN_MAC]
    assert nb_get(prov, "/v1/boot/not-a-mac")[0] == 403

    # Approval, then revocation: an unspent token of a revoked MAC stops working.
    assert cli(prov, "approve", UNKNOWN_MAC).returncode == 0
    status, _, body = nb_get(prov, f"/v1/boot/{UNKNOWN_MAC}")
    assert status == 200
    revoked = json.loads(body)["cmdline"].rsplit("tailjoin.boot_token=", 1)[1]
    remember(revoked)
    r = cli(prov, "revoke", UNKNOWN_MAC)
    assert r.returncode == 0 and "revoked" in r.stdout, r.stdout
    status, body = post_key(prov, revoked, [UNKNOWN_MAC], refusal="boot_token_revoked")
    assert status == 403 and "revoked" in body, body
    assert ipxe(prov, UNKNOWN_MAC).count("tailjoin-provisioner approve") == 1

    # The token expires unspent after token_ttl_secs (30 s), and is then refused.
    deadline = issued_at + 31
    while time.monotonic() < deadline:
        time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
    status, body = post_key(prov, expiring, [mac], refusal="boot_token_expired")
    assert status == 403 and "expired" in body, body
    assert headscale.preauth_keys() == [], "no refusal mints a key"
    kinds = [l.get("reason") for l in prov.audit if l["event"] == "refused"]
    assert kinds == ["boot_token_revoked", "boot_token_expired"], prov.audit


def test_network_and_rate_limit_refusals_are_explained_on_the_console(headscale, netboot_provisioner):
    mac = host_mac()
    outside = netboot_provisioner(name="outside", allow={"networks": ["10.99.0.0/16"], "macs": [mac]})
    text = ipxe(outside, mac)
    assert "none of the provisioner's allow.networks" in text and mac in text, text
    assert 22 <= sleep_secs(text) <= 38 and "boot_token" not in text, text
    assert nb_get(outside, f"/v1/boot/{mac}")[0] == 403
    assert nb_get(outside, "/healthz")[:1] == (200,)
    assert nb_get(outside, f"/v1/boot.ipxe?mac={mac}", method="HEAD")[0] == 405, "a HEAD issues nothing"
    assert nb_get(outside, "/v1/key", method="POST")[0] == 405, "keys are only on the HTTPS listener"
    outside.stop()
    limited = netboot_provisioner(name="limited", allow={"networks": ["127.0.0.0/8"], "macs": [mac]},
                                  rate_limit={"per_minute": 60, "burst": 2, "per_client_per_minute": 2})
    texts = [ipxe(limited, mac) for _ in range(3)]
    assert all("boot || goto failed" in t for t in texts[:2])
    assert "too many boot requests" in texts[2] and "boot_token" not in texts[2], texts[2]
    assert nb_get(limited, f"/v1/boot/{mac}")[0] == 429
    assert "rate_limited" in limited.log()
    assert not [l for l in limited.audit if l.get("reason") == "rate_limited"], \
        "a flood of refusals goes to the log, not to the fsync'd audit log"
    assert len([l for l in limited.audit if l["event"] == "boot_issued"]) == 2
    # The files are not rate limited (a boot fetches several, maybe in ranges).
    assert nb_get(limited, "/v1/files/initrd/1")[0] == 200
    assert headscale.preauth_keys() == []


def test_netboot_config_errors_name_the_field(tmp_path, boot_files):
    kernel, initrds = boot_files
    base = {
        "listen": "127.0.0.1:1", "allow_plain_http": True,
        "mint": {"headscale": {"url": "http://127.0.0.1:2", "allow_plain_http": True,
                               "api_key": {"credential": "headscale-api-key"}}},
        "tags": ["tag:netboot"], "allow": {"networks": ["127.0.0.0/8"]},
        "state_dir": str(tmp_path / "state"),
        "netboot": {"listen": "127.0.0.1:3", "key_url": "https://127.0.0.1:1/v1/key",
                    "kernel": str(kernel), "initrds": [str(p) for p in initrds]},
    }
    cases = [
        ({"cmdline": "quiet tailjoin.boot_token=abc"}, "netboot.cmdline"),
        ({"token_ttl_secs": 5}, "netboot.token_ttl_secs"),
        ({"initrds": []}, "netboot.initrds"),
        ({"color": "blue"}, "unknown field"),
        ({"kernel": "bzImage"}, "netboot.kernel"),
    ]
    path = tmp_path / "p.json"
    path.write_text(json.dumps(base))
    ok = subprocess.run([provisioner_bin(), f"--config={path}", "--check"], capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0 and "netboot: boot scripts on http://127.0.0.1:3" in ok.stdout, ok.stderr
    for change, want in cases:
        doc = json.loads(json.dumps(base))
        doc["netboot"].update(change)
        path.write_text(json.dumps(doc))
        r = subprocess.run([provisioner_bin(), f"--config={path}", "--check"],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 2 and want in r.stderr, (change, r.stderr)
    doc = json.loads(json.dumps(base))
    doc["netboot"]["require_approval"] = False
    doc["allow"] = {"boot_tokens": {"credential": "boot-tokens"}}
    path.write_text(json.dumps(doc))
    r = subprocess.run([provisioner_bin(), f"--config={path}", "--check"], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 2 and "netboot.require_approval" in r.stderr, r.stderr


class SlowProxy:
    """A TCP proxy to headscale's API that holds every answer back for `delay` seconds: minting
    takes that long, as under a boot storm. close() shuts every connection and joins its threads."""

    def __init__(self, upstream_port: int, delay: float):
        self.delay = delay
        self.upstream = upstream_port
        self.srv = socket.socket()
        self.srv.bind(("127.0.0.1", 0))
        self.srv.listen(16)
        self.srv.settimeout(0.2)
        self.port = self.srv.getsockname()[1]
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._socks: list[socket.socket] = []
        self._pumps: list[threading.Thread] = []
        self._acceptor = threading.Thread(target=self._accept, daemon=True)
        self._acceptor.start()

    def _accept(self):
        while not self._stop.is_set():
            try:
                c, _ = self.srv.accept()
            except OSError:
                continue
            try:
                u = socket.create_connection(("127.0.0.1", self.upstream), timeout=10)
                u.settimeout(None)
            except OSError:
                c.close()
                continue
            with self._lock:
                self._socks += [c, u]
                for args in ((c, u, 0.0), (u, c, self.delay)):
                    t = threading.Thread(target=self._pump, args=args, daemon=True)
                    self._pumps.append(t)
                    t.start()

    def _pump(self, a: socket.socket, b: socket.socket, delay: float):
        try:
            if not (delay and self._stop.wait(delay)):
                while data := a.recv(65536):
                    b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self):
        self._stop.set()
        self._acceptor.join(timeout=10)
        self.srv.close()
        with self._lock:
            socks, pumps = list(self._socks), list(self._pumps)
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
        for t in pumps:
            t.join(timeout=10)

    stop = close


@pytest.fixture
def slow_proxy(headscale):
    """make(delay) -> a started SlowProxy to headscale's port; all are closed at teardown."""
    made: list[SlowProxy] = []

    def make(delay: float) -> SlowProxy:
        made.append(SlowProxy(headscale.port, delay))
        return made[-1]

    yield make
    procs.stop_all(made)


def slow_mint(proxy: SlowProxy) -> dict:
    return {"headscale": {"url": f"http://127.0.0.1:{proxy.port}", "allow_plain_http": True,
                          "api_key": {"credential": "headscale-api-key"}}}


def test_a_key_request_abandoned_mid_mint_frees_its_token(headscale, netboot_provisioner, slow_proxy):
    """A machine whose key request times out while the provisioner is still minting (a boot
    storm) must be able to ask again with the same token and get a key: the abandoned request
    gives its token back instead of holding it "in use" or spending it on a key nobody got."""
    proxy = slow_proxy(delay=4.0)
    prov = netboot_provisioner(netboot={"require_approval": False}, mint=slow_mint(proxy))
    mac = host_mac()
    token = issue(prov, mac)["token"]
    # The first request gives up after 1 s, mid-mint, as a timed-out agent does.
    body = json.dumps({"hostname": "storm", "mac_addresses": [mac]}).encode()
    port = int(prov.url.split(":")[2].split("/")[0])
    ctx = ssl.create_default_context(cafile=str(prov.ca))
    with socket.create_connection(("127.0.0.1", port)) as raw, ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
        s.sendall(b"POST /v1/key HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                  + f"Authorization: Bearer {token}\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
        time.sleep(1.0)
    # Asked again (with backoff, as the agent does), the same token gets a key.
    deadline = time.monotonic() + 60
    seen = []
    while time.monotonic() < deadline:
        status, text = post_key(prov, token, [mac])
        seen.append(status)
        if status == 200:
            break
        assert status == 409, (status, text, seen)
        time.sleep(1)
    assert seen[-1] == 200, f"the abandoned request burnt the token: {seen}\n{prov.log()[-3000:]}"


def test_mints_are_admitted_a_few_at_a_time_and_a_full_queue_is_answered_503(
        headscale, netboot_provisioner, slow_proxy):
    """Mint admission control (found by the boot-storm benchmark, docs/BENCHMARKS.md §6): at most
    rate_limit.concurrent_mints mint calls are in flight; other key requests wait their turn, and
    one that waits longer than rate_limit.mint_queue_secs gets 503 with Retry-After, mints
    nothing, and keeps its boot token for the retry."""
    proxy = slow_proxy(delay=1.5)
    prov = netboot_provisioner(netboot={"require_approval": False}, mint=slow_mint(proxy),
                               rate_limit={**GENEROUS, "concurrent_mints": 1, "mint_queue_secs": 60})
    macs = [f"52:54:00:ad:00:{i:02x}" for i in range(4)]
    tokens = {mac: issue(prov, mac)["token"] for mac in macs}
    before = len(headscale.preauth_keys())
    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(len(macs)) as pool:
        results = list(pool.map(lambda m: post_key(prov, tokens[m], [m]), macs))
    elapsed = time.monotonic() - started
    assert [s for s, _ in results] == [200] * 4, results
    # One at a time: four mints held back 1.5 s each cannot finish in under 6 s (in parallel
    # they take about 1.5 s); a slower machine only makes this larger.
    assert elapsed >= 4 * 1.5, f"mints overlapped: all four keys in {elapsed:.1f}s"
    assert len(headscale.preauth_keys()) - before == 4
    assert "for a turn to mint" in prov.log(), prov.log()[-2000:]
    prov.stop()
    proxy.close()

    proxy = slow_proxy(delay=4.0)
    prov = netboot_provisioner(name="queue", netboot={"require_approval": False}, mint=slow_mint(proxy),
                               rate_limit={**GENEROUS, "concurrent_mints": 1, "mint_queue_secs": 1})
    macs = [f"52:54:00:ad:01:{i:02x}" for i in range(3)]
    tokens = {mac: issue(prov, mac)["token"] for mac in macs}
    before = len(headscale.preauth_keys())

    def ask(mac):
        status, headers, body = prov.request(
            "POST", body={"hostname": "queued", "mac_addresses": [mac]}, token=tokens[mac])
        if status == 200:
            MINTED.append(json.loads(body)["key"])
        return mac, status, headers, body

    with concurrent.futures.ThreadPoolExecutor(len(macs)) as pool:
        results = list(pool.map(ask, macs))
    statuses = sorted(s for _, s, _, _ in results)
    assert statuses == [200, 503, 503], results
    for mac, status, headers, body in results:
        if status == 503:
            assert int(headers["retry-after"]) >= 1, headers
            assert "busy" in body, body
    assert len(headscale.preauth_keys()) - before == 1, "a request turned away minted a key"
    assert "mint queue full" in prov.log()
    # Turned away, a machine keeps its boot token: asked again, it gets its key.
    for mac, status, _, _ in results:
        if status == 503:
            assert post_key(prov, tokens[mac], [mac])[0] == 200
