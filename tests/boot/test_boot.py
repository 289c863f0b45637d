"""Boot test: a real Debian bookworm (systemd 252) booted with qemu joins headscale on the host.

headscale listens on 127.0.0.1 only; qemu's user networking maps the guest's 10.0.2.2 to the
host's loopback, so headscale's server_url (and with it the embedded DERP region it hands out)
is http://10.0.2.2:PORT while it listens on 127.0.0.1:PORT.

Inputs (environment):
  TAILJOIN_BIN        the tailjoin binary to put in the image [agent/target/release/tailjoin]
  TAILJOIN_PEERS_BIN  directory with tailscaled, tailscale, headscale (tests/peers/build.sh)
  TAILJOIN_CACHE      cache root [~/.cache/tailjoin]; the image lives under boot/
  TAILJOIN_BOOT_OUT   where each boot's console, results and sections are kept [pytest tmp]
  TAILJOIN_BOOT_SCENARIOS  comma-separated subset of
                      normal,tailscaled-late,headscale-late,encrypted-credential [all]
  TAILJOIN_BOOT_HEADSCALE_DELAY  seconds headscale stays down after tailjoin started [25]

Every measured number is printed (run pytest with -s to see it live) and written to
$TAILJOIN_BOOT_OUT/measurements.json.
"""

from __future__ import annotations

import base64
import json
import mmap
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT / "tests" / "real_peers"))

import run_boot  # noqa: E402

try:
    import peers  # noqa: E402  (tests/real_peers/peers.py: the headscale harness)
except ImportError as e:  # pragma: no cover
    peers = None
    _peers_import_error = e

DOCUMENTED_FIELDS = [
    "TAILJOIN_STATE",
    "TAILJOIN_PREV_STATE",
    "TAILJOIN_BACKEND_STATE",
    "TAILSCALE_IPS",
    "TAILNET",
    "TAILJOIN_DNS_NAME",
    "TAILJOIN_ELAPSED_MS",
    "TAILJOIN_TIME_TO_JOIN_MS",
]
HOSTNAME = "bootvm"
# The first 16 bytes of a credential sealed with the host key only (`--with-key=host`):
# CRED_AES256_GCM_BY_HOST in systemd 252's src/shared/creds-util.h.
CRED_AES256_GCM_BY_HOST = bytes.fromhex("5a1c6a86df9d4096b1d5a65e0862f19a")
MEASUREMENTS: dict = {}


def selected(name: str) -> bool:
    want = os.environ.get("TAILJOIN_BOOT_SCENARIOS", "").strip()
    return not want or name in [w.strip() for w in want.split(",")]


def note(key: str, value) -> None:
    MEASUREMENTS[key] = value
    print(f"\n[boot-test] {key}: {json.dumps(value)}", flush=True)


# --------------------------------------------------------------------------- fixtures


class GuestHeadscale(peers.Headscale if peers else object):  # type: ignore[misc]
    """headscale on 127.0.0.1 that tells clients (and its DERP map) to use 10.0.2.2."""

    GUEST_HOST = "10.0.2.2"

    @property
    def guest_url(self) -> str:
        return f"http://{self.GUEST_HOST}:{self.port}"

    def config_text(self) -> str:
        text = super().config_text()
        # server_url is what clients dial, and the embedded DERP region takes its host name
        # and port from it; derp.server.ipv4 is the address clients use for that host.
        new = re.sub(r"(?m)^server_url: .*$", f"server_url: {self.guest_url}", text)
        new = re.sub(r"(?m)^(\s+ipv4:) 127\.0\.0\.1$", rf"\1 {self.GUEST_HOST}", new)
        if new.count(self.guest_url) != 1 or f"ipv4: {self.GUEST_HOST}" not in new:
            raise RuntimeError("tests/real_peers/peers.py changed its headscale config; update GuestHeadscale")
        return new


@pytest.fixture(scope="session")
def out_root(tmp_path_factory) -> Path:
    value = os.environ.get("TAILJOIN_BOOT_OUT")
    path = Path(value) if value else tmp_path_factory.mktemp("boot")
    path.mkdir(parents=True, exist_ok=True)
    yield path
    (path / "measurements.json").write_text(json.dumps(MEASUREMENTS, indent=1) + "\n")
    print(f"\n[boot-test] measurements: {json.dumps(MEASUREMENTS, indent=1)}\n[boot-test] evidence in {path}")


@pytest.fixture(scope="session")
def peers_bin() -> Path:
    if peers is None:
        pytest.fail(f"cannot import tests/real_peers/peers.py: {_peers_import_error}", pytrace=False)
    try:
        return peers.peers_bin()
    except peers.PeersBinMissing as e:
        pytest.fail(str(e), pytrace=False)


@pytest.fixture(scope="session")
def headscale(peers_bin, out_root):
    hs = GuestHeadscale(out_root / "headscale", bin_dir=peers_bin)
    hs.start()
    hs.user_id = hs.create_user("boot")
    try:
        yield hs
    finally:
        hs.stop()


def build_image(headscale, peers_bin, out_root, *flags: str, label: str = "image") -> Path:
    if os.geteuid() != 0:
        pytest.fail("the boot test builds a root file system with debootstrap and needs root", pytrace=False)
    try:
        run_boot.ensure_qemu()
    except run_boot.BootError as e:
        pytest.fail(str(e), pytrace=False)
    config = out_root / "tailjoin-config.json"
    config.write_text(json.dumps({
        "login_server": headscale.guest_url,
        "auth_key": {"credential": run_boot.CREDENTIAL},
        "hostname": HOSTNAME,
        # Short enough that, with headscale down at boot, the agent reports a join timeout
        # before headscale appears; far above a normal join (~2-3 s under TCG).
        "join_timeout_secs": 15,
    }) + "\n")
    env = dict(os.environ, TAILJOIN_PEERS_BIN=str(peers_bin))
    t0 = time.monotonic()
    r = subprocess.run(
        [str(HERE / "build-image.sh"), "--config", str(config), *flags],
        env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
    )
    if r.returncode != 0:
        pytest.fail(f"build-image.sh {' '.join(flags)} failed ({r.returncode}):\n{r.stderr[-4000:]}", pytrace=False)
    path = Path(r.stdout.strip().splitlines()[-1])
    manifest = json.loads((path / "manifest.json").read_text())
    note(f"{label}_build_seconds_this_run", round(time.monotonic() - t0, 1))
    note(label, {k: manifest[k] for k in (
        "systemd", "kernel", "debootstrap_seconds", "base_seconds", "rootfs_mb", "disk_bytes",
        "disk_used_bytes", "image_seconds")})
    return path


@pytest.fixture(scope="session")
def image(headscale, peers_bin, out_root) -> Path:
    """The image every scenario but encrypted-credential boots: LoadCredential=tailscale-auth-key."""
    return build_image(headscale, peers_bin, out_root)


@pytest.fixture(scope="session")
def encrypted_image(headscale, peers_bin, out_root) -> Path:
    """Same inputs, but LoadCredentialEncrypted=tailscale-auth-key and a host credential secret."""
    return build_image(headscale, peers_bin, out_root, "--encrypted-credential", label="encrypted_image")


# --------------------------------------------------------------------------- checks


def running_entry(journal: list[dict]) -> dict | None:
    return next((e for e in journal if e.get("TAILJOIN_STATE") == "running"), None)


def assert_joined(res: run_boot.BootResult, headscale, key: str, scenario: str) -> dict:
    """The assertions every scenario shares; returns the Running journal entry."""
    ctx = f"(scenario {scenario}; evidence in {res.run_dir})"
    show = res.show()
    checks = res.checks
    journal = res.journal()

    # The key reached the guest as a system credential and tailjoin got it via LoadCredential.
    assert checks.get("system_credential") == "present", f"no system credential in the guest {ctx}: {checks}"
    assert checks.get("tailjoin_credentials_dir", "").startswith("/run/credentials/tailjoin.service"), checks

    # READY=1: a Type=notify unit is active only after it; and with a 100.64.x address.
    assert show.get("ActiveState") == "active", (
        f"tailjoin is {show.get('ActiveState')}/{show.get('SubState')} {ctx}: {show}\n"
        + res.sections.get("journal-text", "")[-3000:])
    status = json.loads(res.sections["status-json"])
    text = json.dumps(status)
    assert re.search(r"\b100\.(6[4-9]|[7-9]\d|1[01]\d|12[0-7])\.\d+\.\d+\b", text), f"no 100.64/10 address in status {ctx}: {text}"

    # StatusText carries the one-line summary.
    st = show.get("StatusText", "")
    assert st and "\n" not in st, f"StatusText is empty {ctx}: {show}"
    assert re.search(r"100\.\d+\.\d+\.\d+", st), f"StatusText lacks the address {ctx}: {st!r}"

    # The journal carries the documented fields on the Running entry.
    entry = running_entry(journal)
    assert entry, f"no journal entry with TAILJOIN_STATE=running {ctx}; states: " + str(
        [e.get("TAILJOIN_STATE") for e in journal])
    missing = [f for f in DOCUMENTED_FIELDS if f not in entry]
    assert not missing, f"the Running entry lacks {missing} {ctx}: {entry}"
    assert entry["TAILSCALE_IPS"].startswith("100."), entry
    assert any("TAILJOIN_STATE" in e and "TAILJOIN_ELAPSED_MS" in e for e in journal)

    # The key appears in no journal entry, no argv, nowhere it should not (checked in the
    # guest with the real value) and not in what came out over the serial ports either.
    assert checks.get("control_key_found_in_credential") == "1", f"the in-guest key search is broken {ctx}: {checks}"
    argv = res.sections.get("argv", "")
    assert "/usr/local/bin/tailjoin run" in argv and "tailscaled" in argv, f"argv list incomplete {ctx}"
    assert checks.get("journal_entries_with_key") == "0", f"key in the journal {ctx}: {checks}"
    assert checks.get("processes_with_key_in_argv") == "0", f"key on a process argv {ctx}: {checks}"
    assert checks.get("files_with_key_outside_credentials") == "0", f"key in a file {ctx}: {checks}"
    for name, body in res.sections.items():
        assert key not in body, f"the key leaked into section {name} {ctx}"
    assert key not in res.console, f"the key leaked onto the console {ctx}"
    assert key not in (res.run_dir / "qemu.argv").read_text()

    # tailscaled's home DERP is headscale's embedded region, reached at 10.0.2.2 over HTTP.
    ts = json.loads(res.sections.get("tailscale-status") or "{}")
    assert (ts.get("Self") or {}).get("Relay") == "headscale", f"home DERP is not headscale's {ctx}: {ts.get('Self')}"

    # The security score is printed.
    sec = res.sections.get("security", "")
    m = re.search(r"Overall exposure level for tailjoin\.service:\s*([\d.]+)\s*(\S+)", sec)
    assert m, f"no systemd-analyze security score {ctx}:\n{sec[-2000:]}"
    note(f"{scenario}.security_exposure", f"{m.group(1)} {m.group(2)}")

    # headscale on the host lists the node online (checked while the guest was still up).
    assert res.host.get("online"), f"headscale does not list the node online {ctx}: {res.host}"
    return entry


def measure(res: run_boot.BootResult, entry: dict, scenario: str) -> None:
    show = res.show()
    running_us = int(entry["__MONOTONIC_TIMESTAMP"])
    note(f"{scenario}.boot_to_running_seconds", round(running_us / 1e6, 2))
    note(f"{scenario}.time_to_join_ms", int(entry["TAILJOIN_TIME_TO_JOIN_MS"]))
    ready = int(show.get("ActiveEnterTimestampMonotonic") or 0)
    if ready:
        note(f"{scenario}.boot_to_ready_seconds", round(ready / 1e6, 2))
    note(f"{scenario}.status_text", show.get("StatusText"))
    note(f"{scenario}.qemu_seconds_to_report", res.done_at)
    note(f"{scenario}.accel", res.accel)
    first = res.sections.get("analyze", "").splitlines()[:1]
    if first:
        note(f"{scenario}.systemd_analyze", first[0])
    note(f"{scenario}.states", [e.get("TAILJOIN_STATE") for e in res.journal() if e.get("TAILJOIN_STATE")])


def boot_and_check_online(image: Path, headscale, out_root: Path, scenario: str, key: str, **kw) -> run_boot.BootResult:
    def on_done(res: run_boot.BootResult):
        status = json.loads(res.sections.get("status-json") or "{}")
        ips = set(re.findall(r"100\.\d+\.\d+\.\d+", json.dumps(status)))
        deadline = time.monotonic() + 30
        while True:
            nodes = headscale.nodes()
            mine = [n for n in nodes if ips & set(n.get("ip_addresses") or [])]
            if mine and mine[0].get("online"):
                res.host = {"online": True, "node": mine[0]}
                return
            if time.monotonic() > deadline:
                res.host = {"online": False, "guest_ips": sorted(ips), "nodes": nodes}
                return
            time.sleep(0.5)

    try:
        return run_boot.boot(
            image, out_root / scenario, key, scenario=scenario, on_done=on_done, **kw
        )
    except run_boot.BootError as e:
        pytest.fail(str(e), pytrace=False)


# --------------------------------------------------------------------------- scenarios


@pytest.mark.skipif(not selected("normal"), reason="not in TAILJOIN_BOOT_SCENARIOS")
def test_normal_boot(image, headscale, out_root):
    key = headscale.preauth_key(headscale.user_id)
    res = boot_and_check_online(image, headscale, out_root, "normal", key)
    entry = assert_joined(res, headscale, key, "normal")
    measure(res, entry, "normal")
    assert res.show().get("NRestarts") == "0", res.show()
    cred = res.show("unit-credential")
    assert cred.get("LoadCredential") == 'a(ss) 1 "tailscale-auth-key" "tailscale-auth-key"', cred
    assert cred.get("LoadCredentialEncrypted") == "a(ss) 0", cred


@pytest.mark.skipif(not selected("tailscaled-late"), reason="not in TAILJOIN_BOOT_SCENARIOS")
def test_tailscaled_failed_at_boot_then_started(image, headscale, out_root):
    """tailscaled's first start fails on purpose; a unit starts it 10 s later. tailjoin waits
    for it and joins."""
    key = headscale.preauth_key(headscale.user_id)
    res = boot_and_check_online(image, headscale, out_root, "tailscaled-late", key)
    ts = res.show("show-tailscaled")
    journal_text = res.sections.get("journal-text", "")
    assert "failing tailscaled's first start on purpose" in journal_text, "the scenario did not happen"
    entry = assert_joined(res, headscale, key, "tailscaled-late")
    measure(res, entry, "tailscaled-late")
    tailscaled_up_us = int(ts.get("ActiveEnterTimestampMonotonic") or 0)
    assert tailscaled_up_us and int(entry["__MONOTONIC_TIMESTAMP"]) > tailscaled_up_us
    states = [e.get("TAILJOIN_STATE") for e in res.journal() if e.get("TAILJOIN_STATE")]
    assert "waiting-for-tailscaled" in states, f"tailjoin never said it waits for tailscaled: {states}"
    # It followed the unit over D-Bus (systemd's signals), saw the failure and said so ...
    messages = [e.get("MESSAGE", "") for e in res.journal()]
    assert "waiting for tailscaled.service: it is failed" in messages, messages
    failed = [e for e in res.journal() if e.get("TAILJOIN_ERROR_KIND") == "unit-failed"]
    assert failed, "the failed tailscaled was not reported with TAILJOIN_ERROR_KIND=unit-failed"
    # ... instead of probing the socket while tailscaled was down.
    assert not any("socket" in m and "is not there" in m for m in messages), messages
    note("tailscaled-late.tailjoin_restarts", res.show().get("NRestarts"))


@pytest.mark.skipif(not selected("headscale-late"), reason="not in TAILJOIN_BOOT_SCENARIOS")
def test_headscale_unreachable_at_boot(image, headscale, out_root):
    """headscale is down while the guest boots and comes up HEADSCALE_DELAY s after tailjoin
    started in the guest (timed from the guest's own marker, so a slow or loaded host cannot
    shrink the outage); tailjoin reports the problem, then joins."""
    delay = float(os.environ.get("TAILJOIN_BOOT_HEADSCALE_DELAY", "25"))
    key = headscale.preauth_key(headscale.user_id)
    headscale.stop()
    started = {}

    def start_headscale():
        started["at"] = time.monotonic()
        headscale.start()

    try:
        res = boot_and_check_online(image, headscale, out_root, "headscale-late", key,
                                    events=[("TJ-TAILJOIN-STARTED", delay, start_headscale)])
    finally:
        if not headscale.running:
            headscale.start()
    note("headscale-late.headscale_down_after_tailjoin_start_seconds", delay)
    assert started, f"the guest reported before headscale was started (markers {res.markers})"
    entry = assert_joined(res, headscale, key, "headscale-late")
    measure(res, entry, "headscale-late")
    journal = res.journal()
    before = [e for e in journal if int(e["__MONOTONIC_TIMESTAMP"]) < int(entry["__MONOTONIC_TIMESTAMP"])]
    reported = [e for e in before if e.get("TAILJOIN_ERROR_KIND")]
    assert reported, "tailjoin did not report the unreachable control server before it joined: " + str(
        [(e.get("TAILJOIN_STATE"), e.get("MESSAGE")) for e in journal])
    note("headscale-late.reports_before_join",
         [(e.get("TAILJOIN_STATE"), e.get("TAILJOIN_ERROR_KIND"), e.get("MESSAGE")) for e in reported][:5])


def file_contains(path: Path, needle: bytes) -> bool:
    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size == 0:
            return False
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
            return m.find(needle) >= 0


@pytest.mark.skipif(not selected("encrypted-credential"), reason="not in TAILJOIN_BOOT_SCENARIOS")
def test_encrypted_credential(encrypted_image, headscale, out_root):
    """The key reaches the guest only encrypted: `systemd-creds encrypt --with-key=host` against
    the image's host secret (by the guest's own systemd-creds, see encrypt-credential.sh), passed
    as the SMBIOS system credential; systemd 252 decrypts it for the unit's
    `LoadCredentialEncrypted=tailscale-auth-key` (no path: it searches the credstore.encrypted
    directories, then the system credentials). tailjoin reads the plaintext from
    $CREDENTIALS_DIRECTORY as always, and joins."""
    scenario = "encrypted-credential"
    key = headscale.preauth_key(headscale.user_id)
    t0 = time.monotonic()
    try:
        blob = run_boot.encrypt_credential(encrypted_image, key)
    except run_boot.BootError as e:
        pytest.fail(str(e), pytrace=False)
    note(f"{scenario}.encrypt_seconds", round(time.monotonic() - t0, 2))
    raw = base64.b64decode(blob, validate=True)
    note(f"{scenario}.ciphertext_bytes", len(raw))
    assert raw[:16] == CRED_AES256_GCM_BY_HOST, f"not sealed with the host key only: {raw[:16].hex()}"
    assert key not in blob and key.encode() not in raw, "the key is in the ciphertext"

    run_dir = out_root / scenario
    delivered: dict[str, bool] = {}

    def check_delivered():
        # Everything qemu reads, while it runs: the credential file (SMBIOS, or fw_cfg with
        # TAILJOIN_BOOT_CRED=fw_cfg), disk, kernel, initrd.
        cred = run_dir / "credential"
        assert cred.read_text() in (f"io.systemd.credential:{run_boot.CREDENTIAL}={blob}", blob), \
            "the credential file is not the ciphertext"
        for p in (cred, encrypted_image / "disk.img", encrypted_image / "vmlinuz", encrypted_image / "initrd.img"):
            delivered[p.name] = file_contains(p, key.encode())

    res = boot_and_check_online(encrypted_image, headscale, out_root, scenario, key, credential=blob,
                                events=[(None, 0, check_delivered)])
    ctx = f"(scenario {scenario}; evidence in {res.run_dir})"
    assert delivered and not any(delivered.values()), f"the plaintext key is in a file handed to qemu: {delivered}"
    checks = res.checks
    # The unit asked for an encrypted credential, and PID 1 has it that way.
    cred = res.show("unit-credential")
    assert cred.get("unit-file: LoadCredentialEncrypted") == "tailscale-auth-key", f"unit file {ctx}: {cred}"
    assert not any(k.startswith("unit-file: LoadCredential") and k != "unit-file: LoadCredentialEncrypted"
                   for k in cred), f"unit file also has LoadCredential= {ctx}: {cred}"
    assert cred.get("LoadCredentialEncrypted") == 'a(ss) 1 "tailscale-auth-key" "tailscale-auth-key"', cred
    assert cred.get("LoadCredential") == "a(ss) 0", cred
    # The guest received ciphertext only; systemd decrypted it into the unit's credentials.
    assert checks.get("key_source") == "/run/credentials/tailjoin.service/tailscale-auth-key", checks
    assert checks.get("service_credential") == "present", f"systemd did not decrypt the credential {ctx}: {checks}"
    assert checks.get("system_credential_holds_key") == "0", f"the delivered credential holds the key {ctx}: {checks}"
    assert checks.get("system_credential_decrypts_to_key") == "1", f"ciphertext does not decrypt to the unit's key {ctx}: {checks}"
    assert checks.get("decrypts_under_other_name") == "0", f"the ciphertext is not bound to its name {ctx}: {checks}"
    assert checks.get("host_secret") == "400 root 1", f"host secret {ctx}: {checks}"
    # Joined, with the shared checks: key in no journal entry, argv, environment or file, etc.
    entry = assert_joined(res, headscale, key, scenario)
    measure(res, entry, scenario)
    assert res.show().get("NRestarts") == "0", res.show()
    note(f"{scenario}.delivered_files_with_key", delivered)
