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
                      normal,tailscaled-late,headscale-late,encrypted-credential,provisioned [all]
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
import secrets
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT / "tests" / "real_peers"))

import run_boot  # noqa: E402
from hook_receiver import HookReceiver  # noqa: E402

try:
    import peers  # noqa: E402  (tests/real_peers/peers.py: the headscale harness)
    from guest_headscale import GuestHeadscale  # noqa: E402  (test_netboot imports it from here too)
except ImportError as e:  # pragma: no cover
    peers = None
    GuestHeadscale = None
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


def build_image(headscale, peers_bin, out_root, *flags: str, label: str = "image",
                auth_key: dict | None = None, config_name: str = "tailjoin-config.json",
                health: dict | None = None, extra: dict | None = None) -> Path:
    if os.geteuid() != 0:
        pytest.fail("the boot test builds a root file system with debootstrap and needs root", pytrace=False)
    try:
        run_boot.ensure_qemu()
    except run_boot.BootError as e:
        pytest.fail(str(e), pytrace=False)
    config = out_root / config_name
    settings = {
        "login_server": headscale.guest_url,
        "auth_key": auth_key or {"credential": run_boot.CREDENTIAL},
        "hostname": HOSTNAME,
        # Short enough that, with headscale down at boot, the agent reports a join timeout
        # before headscale appears; far above a normal join (~2-3 s under TCG).
        "join_timeout_secs": 15,
    }
    if health is not None:
        settings["health"] = health
    settings.update(extra or {})
    config.write_text(json.dumps(settings) + "\n")
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


@pytest.fixture(scope="session")
def provisioner_tls(out_root) -> dict[str, Path]:
    """A throwaway CA and the provisioner's certificate, valid for the guest's view of the host."""
    return make_ca_and_server_cert(out_root / "provisioner-tls", ["IP:10.0.2.2", "IP:127.0.0.1"])


@pytest.fixture(scope="session")
def provisioned_image(headscale, peers_bin, out_root, provisioner_tls) -> Path:
    """The netboot image: no credential, the kernel_cmdline key source with the provisioner's CA
    (public) at /etc/tailjoin/prov-ca.pem, ProcSubset=all."""
    return build_image(headscale, peers_bin, out_root, "--provisioner-ca", str(provisioner_tls["ca"]),
                       label="provisioned_image", config_name="tailjoin-config-provisioned.json",
                       auth_key={"kernel_cmdline": {"ca_file": PROV_CA_IN_GUEST}})


# The webhook push reporter (scenario tailscaled-late): its URL is a secret (the path carries a
# token), so it reaches the guest like the key, as the system credential WEBHOOK_CREDENTIAL.
WEBHOOK_CREDENTIAL = "tailjoin-webhook-url"
# The guest's kernel host name in that scenario (systemd.hostname= on the kernel command line),
# unlike the configured tailnet host name, which is what a report would carry if /proc/sys
# were hidden (ProcSubset=pid).
WEBHOOK_GUEST_HOSTNAME = "bootvm-hook"
REPORT_SCHEMA = ROOT / "docs" / "schema" / "report-v1.json"


@pytest.fixture(scope="session")
def webhook_image(headscale, peers_bin, out_root) -> Path:
    """The plain-credential image plus the webhook reporter: a config whose health.webhook.url
    is the credential WEBHOOK_CREDENTIAL (plain http allowed: the receiver is on the host's
    loopback; no heartbeats), and a unit with a second LoadCredential= and ProcSubset=all."""
    return build_image(headscale, peers_bin, out_root, "--push-credential", WEBHOOK_CREDENTIAL,
                       label="webhook_image", config_name="tailjoin-config-webhook.json",
                       health={"allow_plain_http": True, "heartbeat_secs": 0,
                               "webhook": {"url": {"credential": WEBHOOK_CREDENTIAL}}})


# --------------------------------------------------------------------------- provisioner

PROV_CA_IN_GUEST = "/etc/tailjoin/prov-ca.pem"
# The guest NIC's MAC, set on qemu's -device (qemu's default would be 52:54:00:12:34:56): the
# provisioner allows only this one, so the address the agent reads from /sys/class/net counts.
GUEST_MAC = "52:54:00:7a:10:01"


def make_ca_and_server_cert(d: Path, san: list[str]) -> dict[str, Path]:
    """A throwaway CA (openssl CLI) and a server certificate for the subjectAltName entries
    `san` (e.g. ["IP:10.0.2.2"]). Returns the paths ca (public), cert, key."""
    d.mkdir(parents=True, exist_ok=True)

    def openssl(*args: str):
        r = subprocess.run(["openssl", *args], cwd=d, capture_output=True, text=True)
        if r.returncode != 0:
            pytest.fail(f"openssl {' '.join(args)} failed: {r.stderr}", pytrace=False)

    p256 = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    openssl("req", "-x509", *p256, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
            "-subj", "/CN=tailjoin boot test throwaway CA")
    openssl("req", "-new", *p256, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=provisioner")
    (d / "server.ext").write_text(
        f"subjectAltName={','.join(san)}\nbasicConstraints=CA:FALSE\n"
        "keyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", "server.pem", "-days", "2", "-extfile", "server.ext")
    (d / "ca.key").unlink()  # nothing else is ever signed with it
    return {"ca": d / "ca.pem", "cert": d / "server.pem", "key": d / "server.key"}


def owner_only(path: Path, text: str) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return path


class HostProvisioner:
    """`tailjoin-provisioner` (the TAILJOIN_PROVISIONER_BIN binary) on 127.0.0.1:PORT, which the guest reaches
    as 10.0.2.2:PORT; its secrets (TLS key, headscale API key, boot tokens) in a 0700 directory
    handed over as $CREDENTIALS_DIRECTORY, as systemd's LoadCredential= would."""

    def __init__(self, workdir: Path, tls: dict[str, Path], headscale, macs: list[str], tokens: dict[str, str]):
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.ca = tls["ca"]
        self.creds = workdir / "creds"
        self.creds.mkdir(mode=0o700, exist_ok=True)
        owner_only(self.creds / "tls-key", tls["key"].read_text())
        owner_only(self.creds / "headscale-api-key", headscale.api_key() + "\n")
        owner_only(self.creds / "boot-tokens", "# one-time boot tokens\n"
                   + "".join(f"{t} {label}\n" for label, t in tokens.items()))
        self.port = peers.free_port()
        self.state_dir = workdir / "state"
        self.config = {
            "listen": f"127.0.0.1:{self.port}",
            "tls": {"cert_file": str(tls["cert"]), "key": {"credential": "tls-key"}},
            "mint": {"headscale": {"url": headscale.url, "allow_plain_http": True,
                                   "api_key": {"credential": "headscale-api-key"}}},
            "tags": ["tag:netboot"],
            "key_expiry_secs": 300,
            "allow": {"macs": macs, "boot_tokens": {"credential": "boot-tokens"}},
            "state_dir": str(self.state_dir),
            "log_level": "debug",
        }
        self.config_path = workdir / "provisioner.json"
        self.config_path.write_text(json.dumps(self.config, indent=1) + "\n")
        self.log_path = workdir / "provisioner.log"
        self.proc: subprocess.Popen | None = None

    def guest_url(self) -> str:
        return f"https://{GuestHeadscale.GUEST_HOST}:{self.port}/v1/key"

    def start(self, timeout: float = 15.0) -> "HostProvisioner":
        # Every config field is also a TAILJOIN_* variable: none of the test's may leak in.
        env = {k: v for k, v in os.environ.items() if not k.startswith("TAILJOIN_")}
        env["CREDENTIALS_DIRECTORY"] = str(self.creds)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [os.environ["TAILJOIN_PROVISIONER_BIN"], f"--config={self.config_path}"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"tailjoin-provisioner exited with {self.proc.returncode}:\n{self.log()[-3000:]}",
                            pytrace=False)
            try:
                if self.request("GET", "/healthz")[0] == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.1)
        pytest.fail(f"tailjoin-provisioner did not answer /healthz in {timeout}s:\n{self.log()[-3000:]}",
                    pytrace=False)

    def request(self, method: str, path: str, body: dict | None = None, token: str | None = None) -> tuple[int, str]:
        ctx = ssl.create_default_context(cafile=str(self.ca))
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"https://127.0.0.1:{self.port}{path}", data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(req, context=ctx, timeout=30) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def audit(self) -> list[dict]:
        p = self.state_dir / "audit.jsonl"
        return [json.loads(line) for line in p.read_text().splitlines()] if p.exists() else []

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


# --------------------------------------------------------------------------- checks


def running_entry(journal: list[dict]) -> dict | None:
    return next((e for e in journal if e.get("TAILJOIN_STATE") == "running"), None)


def assert_joined(res: run_boot.BootResult, headscale, key: str, scenario: str, via_credential: bool = True) -> dict:
    """The assertions every scenario shares; returns the Running journal entry. With
    `via_credential` False (scenario provisioned) the guest never had the key as a credential:
    the in-guest search by its value is replaced by the scenario's own search by its form, and
    `key` is the value the host learnt from headscale afterwards."""
    ctx = f"(scenario {scenario}; evidence in {res.run_dir})"
    show = res.show()
    checks = res.checks
    journal = res.journal()

    if via_credential:
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
    argv = res.sections.get("argv", "")
    assert "/usr/local/bin/tailjoin run" in argv and "tailscaled" in argv, f"argv list incomplete {ctx}"
    if via_credential:
        assert checks.get("control_key_found_in_credential") == "1", f"the in-guest key search is broken {ctx}: {checks}"
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


def boot_and_check_online(image: Path, headscale, out_root: Path, scenario: str, key: str | None,
                          after_done=None, **kw) -> run_boot.BootResult:
    """Boots; once the guest reported, asks headscale for the node (while the guest is still
    up), then runs `after_done(res)` if given, still before qemu is stopped."""
    def on_done(res: run_boot.BootResult):
        look_up_node(res)
        if after_done:
            after_done(res)

    def look_up_node(res: run_boot.BootResult):
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
    assert_tailnet_users_waited_for_tailjoin(res)


def assert_tailnet_users_waited_for_tailjoin(res: run_boot.BootResult):
    """The two documented ways a service waits for the tailnet, in a real systemd: ordering
    after tailjoin.service, or after tailscale's own tailscale-online.target (from the pinned
    tailscale's source, as a package installs it), which tailjoin's unit is ordered before.
    Each user must start only once tailjoin is READY, and find the node Running."""
    users = res.show("tailnet-users")
    assert users.get("tailscale-online.target.fragment") == "/etc/systemd/system/tailscale-online.target", users
    assert users.get("tailjoin.before", "").split().count("tailscale-online.target") == 1, users
    ready_us = int(users.get("tailjoin.active_enter_us") or 0)
    assert ready_us > 0, users
    target_us = int(users.get("tailscale-online.target.active_enter_us") or 0)
    assert users.get("tailscale-online.target.active_state") == "active", users
    assert target_us >= ready_us, f"tailscale-online.target reached before tailjoin was READY: {users}"
    for name in ("online-user", "after-tailjoin"):
        assert f"{name}.missing" not in users, f"{name} never ran: {users}"
        assert users.get(f"{name}.tailjoin_active_state") == "active", users
        assert users.get(f"{name}.backend_state") == "Running", users
        assert users.get(f"{name}.tailscale_ips", "").startswith("100."), users
        started_us = float(users[f"{name}.uptime"]) * 1e6
        assert started_us >= ready_us, f"{name} started before tailjoin was READY: {users}"


@pytest.mark.skipif(not selected("tailscaled-late"), reason="not in TAILJOIN_BOOT_SCENARIOS")
def test_tailscaled_failed_at_boot_then_started(webhook_image, headscale, out_root):
    """tailscaled's first start fails on purpose; a unit starts it once tailjoin has reported
    the failed unit (start-tailscaled-late, bounded by 300 s), so a slow boot cannot start it
    before tailjoin looked. tailjoin waits for it and joins. The image has the webhook reporter on (webhook_image): a receiver on the
    host's loopback gets the reports, waiting-for-tailscaled before running."""
    key = headscale.preauth_key(headscale.user_id)
    with HookReceiver() as hook:
        url = hook.url_for(GuestHeadscale.GUEST_HOST)

        def wait_for_running_report(res: run_boot.BootResult):
            # Reports are pushed beside the agent's work, so the Running one may still be on
            # its way when the guest reports; the guest is up until this returns.
            t0 = time.monotonic()
            hook.wait_for(lambda rs: any(report_state(r) == "running" for r in rs), 30)
            res.host["waited_for_running_report_seconds"] = round(time.monotonic() - t0, 1)

        res = boot_and_check_online(webhook_image, headscale, out_root, "tailscaled-late", key,
                                    after_done=wait_for_running_report,
                                    extra_credentials={WEBHOOK_CREDENTIAL: url},
                                    extra_append=f"systemd.hostname={WEBHOOK_GUEST_HOSTNAME}")
    requests = hook.requests()
    bodies = assert_webhook_reports(res, hook, requests, "tailscaled-late", before_running="waiting-for-tailscaled")
    # The webhook was told why, as the journal was (below): tailscaled's unit had failed.
    assert any(b["state"] == "waiting-for-tailscaled" and (b["error"] or {}).get("kind") == "unit-failed"
               for b in bodies), [(b["state"], b["error"]) for b in bodies]
    ts = res.show("show-tailscaled")
    journal_text = res.sections.get("journal-text", "")
    assert "failing tailscaled's first start on purpose" in journal_text, "the scenario did not happen"
    # tailscaled was started again only after tailjoin had reported its failed unit.
    assert "tailjoin reported the failed tailscaled.service" in journal_text, (
        "the late start did not see tailjoin's unit-failed report (the scenario did not happen as designed)")
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


def report_state(r) -> str | None:
    try:
        return r.json.get("state")
    except (ValueError, AttributeError):
        return None


def assert_webhook_reports(res: run_boot.BootResult, hook: HookReceiver, requests: list, scenario: str,
                           before_running: str | None = None) -> list[dict]:
    """The webhook reporter under the real unit: the URL came as a second system credential and
    the unit loaded it next to the key, with ProcSubset=all; every request the receiver got is a
    POST to the secret path with a body valid against docs/schema/report-v1.json; a Running
    report names this boot of this machine (boot id, machine id, kernel host name, shipped by
    the guest) and the node's addresses in headscale; `before_running` was reported before it;
    and the URL's token is nowhere in the guest (journal, argv, environment, files) nor in
    anything that came out of it. Returns the report bodies in arrival order."""
    try:
        import jsonschema
    except ImportError:
        pytest.fail("python3 jsonschema is missing (apt-get install python3-jsonschema)", pytrace=False)

    ctx = f"(scenario {scenario}; evidence in {res.run_dir})"
    checks = res.checks
    # The unit and the credential, as the guest saw them.
    assert checks.get("webhook_system_credential") == "present", f"webhook credential not imported {ctx}: {checks}"
    assert checks.get("webhook_service_credential") == "same", f"webhook credential not loaded {ctx}: {checks}"
    assert checks.get("unit_file_load_credentials", "").split() == [run_boot.CREDENTIAL, WEBHOOK_CREDENTIAL], checks
    # PID 1's LoadCredential property (busctl: a(ss) COUNT "ID" "PATH" ...), in hash order.
    cred = res.show("unit-credential")
    m = re.fullmatch(r'a\(ss\) (\d+)((?: "[^"]*")*)', cred.get("LoadCredential", ""))
    assert m, cred
    strings = re.findall(r'"([^"]*)"', m.group(2))
    pairs = sorted(zip(strings[::2], strings[1::2]))
    assert int(m.group(1)) == 2 and pairs == sorted([(run_boot.CREDENTIAL, run_boot.CREDENTIAL),
                                                     (WEBHOOK_CREDENTIAL, WEBHOOK_CREDENTIAL)]), cred
    assert checks.get("proc_subset") == "all", f"ProcSubset {ctx}: {checks}"
    assert checks.get("unit_file_proc_subset", "").split() == ["pid", "all"], checks
    assert checks.get("guest_hostname") == WEBHOOK_GUEST_HOSTNAME, f"systemd.hostname= not applied {ctx}: {checks}"

    # The token: in the guest only in the credentials (positive control), nowhere else.
    assert checks.get("webhook_token_length") == str(len(hook.token)), checks
    assert checks.get("control_webhook_token_in_credential") == "1", f"the in-guest token search is broken {ctx}: {checks}"
    for k in ("journal_entries_with_webhook_token", "processes_with_webhook_token_in_argv",
              "processes_with_webhook_token_in_environ", "files_with_webhook_token_outside_credentials"):
        assert checks.get(k) == "0", f"{k} {ctx}: {checks}"
    for name, body in res.sections.items():
        assert hook.token not in body, f"the webhook token leaked into section {name} {ctx}"
    assert hook.token not in res.console, f"the webhook token leaked onto the console {ctx}"
    assert hook.token not in (res.run_dir / "qemu.argv").read_text()
    assert not (res.run_dir / f"credential-{WEBHOOK_CREDENTIAL}").exists(), "the URL's 0600 file outlived the boot"

    # What the receiver got: only report POSTs to the secret path, each a valid report.
    stray = [(r.method, r.path) for r in requests if r.method != "POST" or r.path != hook.path]
    assert not stray, f"requests outside the webhook path {ctx}: {len(stray)}"
    reports = [r for r in requests if r.method == "POST" and r.path == hook.path]
    (res.run_dir / "webhook-reports.jsonl").write_text("".join(r.body.decode(errors="replace") + "\n" for r in reports))
    assert reports, f"the webhook received nothing {ctx}; journal:\n" + res.sections.get("journal-text", "")[-3000:]
    schema = json.loads(REPORT_SCHEMA.read_text())
    validator = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())
    bodies = []
    for r in reports:
        assert r.headers.get("content-type", "").startswith("application/json"), r.headers
        assert r.headers.get("user-agent", "").startswith("tailjoin/"), r.headers
        assert hook.token not in r.body.decode(errors="replace"), f"the token is in a report body {ctx}"
        body = r.json
        errors = sorted(validator.iter_errors(body), key=str)
        assert not errors, f"report {r.index} does not validate against {REPORT_SCHEMA.name} {ctx}: " \
            + "; ".join(f"{'/'.join(map(str, e.path))}: {e.message}" for e in errors[:5])
        bodies.append(body)
    states = [b["state"] for b in bodies]
    note(f"{scenario}.webhook_states", states)
    assert all(b["event"] == "transition" for b in bodies), f"heartbeats with heartbeat_secs 0 {ctx}: {states}"
    assert bodies[0]["state"] == "starting" and bodies[0]["previous_state"] is None, f"first report {ctx}: {bodies[0]}"

    # This boot of this machine; every report says so.
    ident = {"boot_id": checks.get("guest_boot_id"), "machine_id": checks.get("guest_machine_id"),
             "hostname": checks.get("guest_hostname")}
    assert ident["boot_id"] and re.fullmatch(r"[0-9a-f]{32}", ident["machine_id"] or ""), f"guest identity {ctx}: {checks}"
    for b in bodies:
        assert {k: b[k] for k in ident} == ident, f"report identity != the guest's {ctx}: {b} vs {ident}"

    # A Running report with the node's addresses as headscale lists them.
    running = [i for i, b in enumerate(bodies) if b["state"] == "running"]
    assert running, f"no running report {ctx}: {states}"
    first_running = bodies[running[0]]
    node = res.host.get("node") or {}
    assert sorted(first_running["tailscale_ips"]) == sorted(node.get("ip_addresses") or []), \
        f"report addresses != headscale's {ctx}: {first_running['tailscale_ips']} vs {node.get('ip_addresses')}"
    assert first_running["backend_state"] == "Running" and first_running["error"] is None, first_running
    assert first_running["joins"] >= 1 and isinstance(first_running["time_to_join_ms"], int), first_running
    ts_self = (json.loads(res.sections.get("tailscale-status") or "{}").get("Self") or {})
    # tailscaled's MagicDNS name, without the trailing dot (the schema says so).
    assert ts_self.get("DNSName") and first_running["dns_name"] == ts_self["DNSName"].rstrip("."), \
        (first_running["dns_name"], ts_self.get("DNSName"))
    if before_running:
        assert before_running in states[:running[0]], \
            f"no {before_running} report before the running one {ctx}: {states}"

    # The agent said it reports, and had nothing to complain about.
    messages = [e.get("MESSAGE", "") for e in res.journal()]
    assert "webhook reporter on" in messages, f"no 'webhook reporter on' in tailjoin's journal {ctx}"
    for bad in ("webhook reporter disabled", "not delivered", "webhook report failed"):
        assert not any(bad in m for m in messages), f"journal: {[m for m in messages if bad in m]} {ctx}"
    arrival = [[b["state"], round(r.arrived - reports[0].arrived, 1)] for b, r in zip(bodies, reports)]
    note(f"{scenario}.webhook", {
        "reports": len(bodies), "states_and_seconds_after_first": arrival,
        "waited_for_running_report_seconds": res.host.get("waited_for_running_report_seconds"),
        "running": {k: first_running[k] for k in ("hostname", "boot_id", "tailscale_ips", "time_to_join_ms", "summary")},
    })
    return bodies


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
    # The key was submitted once: a join timeout during the outage waits for tailscaled's own
    # pending login instead of submitting the single-use key again (it would be "already used").
    submitted = [e for e in journal if "submitted the key to tailscaled" in (e.get("MESSAGE") or "")]
    assert len(submitted) == 1, [(e.get("TAILJOIN_STATE"), e.get("MESSAGE")) for e in journal]


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


@pytest.mark.skipif(not selected("provisioned"), reason="not in TAILJOIN_BOOT_SCENARIOS")
def test_provisioned_netboot(provisioned_image, provisioner_tls, headscale, out_root):
    """The netboot flow: the guest gets no key at all. Its kernel command line carries
    tailjoin.key_url=https://10.0.2.2:PORT/v1/key and a one-time tailjoin.boot_token=; tailjoin's
    kernel_cmdline source reads them from /proc/cmdline (ProcSubset=all) and POSTs the machine's
    identity with the token to `tailjoin-provisioner` on the host, which checks the token and the
    MAC the guest reports from /sys/class/net, mints a single-use ephemeral tag:netboot key from
    the same headscale and audits it."""
    scenario = "provisioned"
    label = "bootvm-provisioned"
    token = "fake-boot-token-" + secrets.token_hex(16)
    keys_before = {str(k["id"]) for k in headscale.preauth_keys()}
    prov = HostProvisioner(out_root / scenario / "provisioner", provisioner_tls, headscale,
                           macs=[GUEST_MAC], tokens={label: token})
    prov.start()
    try:
        res = boot_and_check_online(
            provisioned_image, headscale, out_root, scenario, None, mac=GUEST_MAC,
            extra_append=f"tailjoin.key_url={prov.guest_url()} tailjoin.boot_token={token}")
        # The token is spent: the same machine (or anyone) asking again gets 403.
        again = prov.request("POST", "/v1/key", {"hostname": HOSTNAME, "mac_addresses": [GUEST_MAC]}, token=token)
    finally:
        prov.stop()
    ctx = f"(scenario {scenario}; evidence in {res.run_dir}, provisioner log {prov.log_path})"
    checks = res.checks

    # headscale: exactly one new pre-auth key, minted by the provisioner for this boot.
    new_keys = [k for k in headscale.preauth_keys() if str(k["id"]) not in keys_before]
    assert len(new_keys) == 1, f"expected one new pre-auth key {ctx}: {new_keys}"
    minted = new_keys[0]
    # headscale 0.29 keeps only the key's prefix and a bcrypt hash of its secret, and lists
    # "hskey-auth-PREFIX-***". The host searches for "hskey-auth-PREFIX": every copy of the key
    # contains it (the guest searched for any "hskey-" / "tskey-" at all).
    listed = minted["key"]
    assert listed.startswith("hskey-auth-") and listed.endswith("-***"), listed
    key = listed[: -len("-***")]
    assert len(key) > len("hskey-auth-") + 8, listed
    assert minted.get("ephemeral") is True and minted.get("used") is True, minted
    assert not minted.get("reusable", False), minted
    assert minted.get("acl_tags") == ["tag:netboot"], minted

    # The joined node is that key's, and carries the tag the provisioner put on the key (the
    # guest advertises none: headscale refuses pre-auth registrations that request tags).
    entry = assert_joined(res, headscale, key, scenario, via_credential=False)
    measure(res, entry, scenario)
    assert res.show().get("NRestarts") == "0", res.show()
    node = res.host["node"]
    assert node.get("tags") == ["tag:netboot"], f"node tags {ctx}: {node}"
    assert str((node.get("pre_auth_key") or {}).get("id")) == str(minted["id"]), f"node's key {ctx}: {node}"
    note(f"{scenario}.node", {k: node.get(k) for k in ("name", "given_name", "tags", "ip_addresses")})

    # The provisioner's audit: one issued line, for this MAC and this token's label.
    audit = prov.audit()
    issued = [line for line in audit if line["event"] == "issued"]
    assert len(issued) == 1, f"audit {ctx}: {audit}"
    line = issued[0]
    assert GUEST_MAC in line["macs"], f"the guest's MAC is not in the audit line {ctx}: {line}"
    assert line["boot_token"] == label, line
    assert line["matched"] == ["boot_token", "mac"], line
    assert line["key_id"] == str(minted["id"]) and line["ephemeral"] is True and line["tags"] == ["tag:netboot"], line
    assert line["machine_id"] == checks.get("machine_id"), (line, checks.get("machine_id"))
    note(f"{scenario}.audit_issued", {k: line.get(k) for k in ("client", "hostname", "macs", "boot_token", "matched", "key_id")})
    refused = [line for line in audit if line["event"] == "refused"]
    assert [r["reason"] for r in refused] == ["boot_token_used"], f"audit {ctx}: {audit}"
    assert again[0] == 403 and "used already" in again[1], again

    # In the guest: no credential, the unit as the NixOS module makes it for this source, the
    # provisioner's URL and a token on the kernel command line, the NIC's MAC as set.
    assert checks.get("system_credential") == "absent", f"a credential reached the guest {ctx}: {checks}"
    assert checks.get("tailjoin_credentials_dir", "") == "", f"tailjoin has a credentials dir {ctx}: {checks}"
    assert checks.get("unit_file_credential_lines") == "0", checks
    assert checks.get("proc_subset") == "all", f"ProcSubset {ctx}: {checks}"
    assert checks.get("unit_file_proc_subset", "").split() == ["pid", "all"], checks
    assert checks.get("kernel_cmdline_key_url") == prov.guest_url(), checks
    assert GUEST_MAC in checks.get("guest_macs", "").split(), checks
    # The key (searched for by its form: the guest never knows the value) is on no command line,
    # in no journal entry, argv, environment or file.
    assert checks.get("control_key_pattern") == "1", f"the in-guest key search is broken {ctx}: {checks}"
    for k in ("cmdline_with_key", "journal_entries_with_key", "processes_with_key_in_argv",
              "processes_with_key_in_environ", "files_with_key"):
        assert checks.get(k) == "0", f"{k} {ctx}: {checks}"
    # The boot token is on /proc/cmdline and nowhere else tailjoin could have put it.
    assert checks.get("token_length") == str(len(token)), checks
    assert checks.get("control_token_in_proc_cmdline") == "1", f"the in-guest token search is broken {ctx}: {checks}"
    for k in ("tailjoin_journal_entries_with_token", "processes_with_token_in_argv",
              "processes_with_token_in_environ", "files_with_token"):
        assert checks.get(k) == "0", f"{k} {ctx}: {checks}"
    # The journal says where the key came from, by name only.
    messages = " | ".join(e.get("MESSAGE", "") for e in res.journal())
    assert "with the key from kernel command line /proc/cmdline" in messages, \
        f"tailjoin did not name its key source {ctx}: {messages[-2000:]}"
    # Host side: the key and the token are in no log of the provisioner, and the key is not in
    # what qemu was given (the kernel command line carries the token, by design).
    for name, text in (("provisioner log", prov.log()), ("audit", json.dumps(audit))):
        assert key not in text and token not in text, f"secret in the {name} {ctx}"
    assert token in (res.run_dir / "qemu.argv").read_text()
    for p in (provisioned_image / "disk.img", provisioned_image / "vmlinuz", provisioned_image / "initrd.img"):
        assert not file_contains(p, key.encode()), f"the key is in {p}"
    assert not (res.run_dir / "credential").exists()
