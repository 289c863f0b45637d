"""Section 6 of the benchmark: a boot storm. Up to 200 netbooted machines reboot at once after a
power cut and ask one `tailjoin-provisioner` (in front of one headscale) for boot scripts and keys.

One machine = what a diskless netbooted box does, on loopback:

1. "firmware": `GET /v1/boot.ipxe?mac=MAC` from the provisioner's plain-HTTP netboot listener, as
   iPXE would. A refusal is a script that `echo`s the reason, `sleep`s and `chain`s again: the
   firmware thread does the same (it sleeps what the script says). An accepted script's `kernel`
   line carries `tailjoin.key_url=` and a one-time `tailjoin.boot_token=`; its arguments become
   this machine's kernel command line (a file).
2. "kernel booted": a real `tailscaled --tun=userspace-networking` (own socket and state dir) and
   a real `tailjoin run` whose key source is `kernel_cmdline` pointing at that file. tailjoin runs
   in its own mount namespace with a fake /sys/class/net bind-mounted over the real one
   (`eth0/address` = the machine's MAC), so the identity it POSTs to /v1/key names the simulated
   MAC, which the provisioner checks against allow.macs and the token's binding.

The comparison, "pre-made keys", is the same fleet in the same run with one single-use ephemeral
tagged key per machine (what the provisioner would mint), written to a key file before power-on:
no boot script, no provisioner; tailscaled and tailjoin (in the same kind of namespace) start at
power-on.

Counting: headscale's server_url and the provisioner's mint URL are the counting proxy
(countproxy.py), so every mint call (`POST /api/v1/preauthkey`) is a line in its event log; the
provisioner's audit log says which machine (by MAC) got a key or was refused and why.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from common import HERE, ROOT, BenchError, Node, peers, provisioner_bin, tailjoin_bin
from fleet import ProxiedHeadscale, _port_open, _read_events, _stop_all

sys.path.insert(0, str(ROOT / "tests" / "boot"))

MODES = ["provisioner", "premade"]
# Not measured: the provisioner path with boot tokens written to its token file beforehand instead
# of issued by boot scripts (checks the harness against a provisioner without a netboot listener).
PRESHARED = "provisioner-preshared"
TAGS = ["tag:netboot"]
# Projected fleet memory (per-machine RSS measured at the previous N × N) times this must fit in
# MemAvailable before an N is run: room for headscale, the provisioner and the page cache.
MEMORY_HEADROOM = 1.5
# A bound far past any storm seen here; a machine not Running by then is stranded.
BOUND_S = 900.0
# tailjoin.service's restart policy (modules/tailjoin-unit.json), emulated here without systemd:
# Restart=on-failure after RestartSec, but not for these exit codes (config, key rejected, key
# unavailable), and at most StartLimitBurst starts in StartLimitIntervalSec.
UNIT = json.loads((ROOT / "modules" / "tailjoin-unit.json").read_text())
RESTART_SEC = float(UNIT["service"]["RestartSec"].rstrip("s"))
RESTART_PREVENT = {int(x) for x in UNIT["service"]["RestartPreventExitStatus"].split()}
START_LIMIT_BURST = int(UNIT["unit"]["StartLimitBurst"])
START_LIMIT_INTERVAL = float(UNIT["unit"]["StartLimitIntervalSec"])
# netboot.retry_secs: the first delay of a refused machine (doubling, up to 300 s), the default.
RETRY_SECS = 30
# The cmdline the provisioner puts in front of the token (the storm never boots a kernel).
BASE_CMDLINE = "console=ttyS0 quiet"
KERNEL_LINE = re.compile(r"^\s*kernel\s+(\S+)\s*(.*)$", re.M)
SLEEP_LINE = re.compile(r"^\s*sleep\s+(\d+)", re.M)
ECHO_LINE = re.compile(r"^\s*echo\s+(.*)$", re.M)
CHAIN_LINE = re.compile(r"^\s*chain\s+(\S+)", re.M)


def mac_of(i: int) -> str:
    return f"52:54:00:5b:{(i >> 8) & 0xFF:02x}:{i & 0xFF:02x}"


def parse_boot_script(text: str) -> dict:
    """What a machine learns from one boot script: the kernel line's arguments and the tailjoin
    parameters among them, or (a refusal) what it echoes and how long it sleeps before chaining
    again."""
    out: dict = {"args": None, "key_url": None, "token": None, "echo": [], "sleep": None, "chain": None}
    if not text.lstrip().startswith("#!ipxe"):
        out["echo"] = [f"not an iPXE script: {text[:80]!r}"]
        return out
    m = KERNEL_LINE.search(text)
    if m:
        out["args"] = m.group(2).strip()
        for word in out["args"].split():
            k, _, v = word.partition("=")
            if k == "tailjoin.key_url":
                out["key_url"] = v
            elif k == "tailjoin.boot_token":
                out["token"] = v
    out["echo"] = [e.strip() for e in ECHO_LINE.findall(text)]
    s = SLEEP_LINE.search(text)
    if s:
        out["sleep"] = int(s.group(1))
    c = CHAIN_LINE.search(text)
    if c:
        out["chain"] = c.group(1)
    return out


HS_REQUEST = re.compile(r"elapsed=([\d.]+) method=POST path=/api/v1/preauthkey\S* .*?status=(\d+)")


def mint_latency(headscale_log: Path) -> dict:
    """headscale's own timing of each `POST /api/v1/preauthkey` (its request log: elapsed in ms,
    status; 499 = the client, i.e. the provisioner, went away before the answer)."""
    ms, status = [], {}
    try:
        text = headscale_log.read_text(errors="replace")
    except OSError:
        return {}
    for m in HS_REQUEST.finditer(text):
        ms.append(float(m.group(1)))
        status[m.group(2)] = status.get(m.group(2), 0) + 1
    if not ms:
        return {}
    ms.sort()
    return {"mint_ms_median": statistics.median(ms), "mint_ms_max": ms[-1], "mint_status": status}


def parse_audit(path: Path) -> list[dict]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            pass
    return out


def token_refusal(reason: str | None) -> bool:
    """A refusal that spent or rejected the machine's token (not a failed mint, which releases
    the token, nor a rate limit, which is answered before the token is looked at)."""
    r = (reason or "").lower()
    return bool(r) and not r.startswith("mint_failed") and "token" in r


def count_burnt(audit: list[dict], macs_with_token: set[str]) -> tuple[int, list[str]]:
    """Machines that were handed a token, were refused over their token, and never got a key."""
    issued = {m for a in audit if a.get("event") == "issued" for m in a.get("macs") or []}
    refused = {m for a in audit if a.get("event") == "refused" and token_refusal(a.get("reason"))
               for m in a.get("macs") or []}
    burnt = sorted((refused & macs_with_token) - issued)
    return len(burnt), burnt


# --------------------------------------------------------------------------- /proc sampling


def proc_sample(pid: int) -> dict | None:
    """utime+stime (s) from /proc/PID/stat, VmRSS and VmHWM (KiB) from /proc/PID/status."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    f = stat[stat.rindex(")") + 2:].split()
    out = {"cpu_s": (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")}
    for line in status.splitlines():
        k, _, v = line.partition(":")
        if k in ("VmRSS", "VmHWM"):
            out[k] = int(v.split()[0])
    return out


def rss_kib(pid: int | None) -> int:
    if not pid:
        return 0
    s = proc_sample(pid)
    return s.get("VmRSS", 0) if s else 0


def mem_available_kib() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1])
    return 0


# --------------------------------------------------------------------------- the provisioner


class StormProvisioner:
    """`tailjoin-provisioner` with a netboot section: HTTPS /v1/key (throwaway CA), plain-HTTP boot
    scripts; mints through the counting proxy; its secrets in a 0700 credentials directory."""

    def __init__(self, workdir: Path, tls: dict, api_url: str, api_key: str, macs: list[str],
                 rate_limit: dict | None, preshared: dict[str, str] | None = None):
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.creds = workdir / "creds"
        self.creds.mkdir(mode=0o700, exist_ok=True)
        _owner_only(self.creds / "tls-key", tls["key"].read_text())
        _owner_only(self.creds / "headscale-api-key", api_key + "\n")
        self.port = peers.free_port()
        self.plain_port = peers.free_port()
        self.state_dir = workdir / "state"
        # A dummy kernel and initrd: the storm fetches boot scripts, not files.
        (workdir / "vmlinuz").write_bytes(b"\0" * 4096)
        (workdir / "initrd.img").write_bytes(b"\0" * 4096)
        self.config = {
            "listen": f"127.0.0.1:{self.port}",
            "tls": {"cert_file": str(tls["cert"]), "key": {"credential": "tls-key"}},
            "mint": {"headscale": {"url": api_url, "allow_plain_http": True,
                                   "api_key": {"credential": "headscale-api-key"}}},
            "tags": TAGS,
            "key_expiry_secs": 600,
            "allow": {"macs": macs},
            "state_dir": str(self.state_dir),
            "log_level": "info",
            "netboot": {
                "listen": f"127.0.0.1:{self.plain_port}",
                "key_url": f"https://127.0.0.1:{self.port}/v1/key",
                "kernel": str(workdir / "vmlinuz"),
                "initrds": [str(workdir / "initrd.img")],
                "cmdline": BASE_CMDLINE,
                "token_ttl_secs": 600,
                "require_approval": True,
                "one_boot_per_mac": True,
                "retry_secs": RETRY_SECS,
            },
        }
        if rate_limit:
            self.config["rate_limit"] = rate_limit
        if preshared is not None:
            del self.config["netboot"]
            _owner_only(self.creds / "boot-tokens", "".join(f"{t} {mac}\n" for mac, t in preshared.items()))
            self.config["allow"]["boot_tokens"] = {"credential": "boot-tokens"}
        self.config_path = workdir / "provisioner.json"
        self.config_path.write_text(json.dumps(self.config, indent=1) + "\n")
        self.log_path = workdir / "provisioner.log"
        self.proc: subprocess.Popen | None = None

    @property
    def boot_url(self) -> str:
        return f"http://127.0.0.1:{self.plain_port}/v1/boot.ipxe"

    def start(self, timeout: float = 20.0) -> "StormProvisioner":
        env = {k: v for k, v in os.environ.items() if not k.startswith("TAILJOIN_")}
        env["CREDENTIALS_DIRECTORY"] = str(self.creds)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([provisioner_bin(), f"--config={self.config_path}"],
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                                         start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(f"tailjoin-provisioner exited with {self.proc.returncode}: {self.log()[-2000:]}")
            if _port_open(self.port) and ("netboot" not in self.config or _port_open(self.plain_port)):
                return self
            time.sleep(0.1)
        raise BenchError(f"tailjoin-provisioner did not listen on {self.port}/{self.plain_port} in {timeout}s")

    def audit(self) -> list[dict]:
        return parse_audit(self.state_dir / "audit.jsonl")

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


def _owner_only(path: Path, text: str):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def make_tls(d: Path) -> dict:
    import test_boot  # tests/boot: the boot test's throwaway CA (openssl CLI)
    return test_boot.make_ca_and_server_cert(d, ["IP:127.0.0.1"])


# --------------------------------------------------------------------------- one machine


class Machine:
    def __init__(self, i: int, work: Path, login_server: str, ca: Path | None):
        self.i = i
        self.mac = mac_of(i)
        self.node = Node("tailjoin", work / f"m{i}", f"storm-{i}", login_server)
        self.dir = self.node.work
        self.sysnet = self.dir / "sys-class-net"
        (self.sysnet / "eth0").mkdir(parents=True, exist_ok=True)
        (self.sysnet / "eth0" / "address").write_text(self.mac + "\n")
        (self.sysnet / "lo").mkdir(exist_ok=True)
        (self.sysnet / "lo" / "address").write_text("00:00:00:00:00:00\n")
        self.cmdline = self.dir / "cmdline"
        self.ca = ca
        self.scripts = 0          # boot scripts fetched
        self.refusals: list[str] = []
        self.token_at: float | None = None
        self.spawned_at: float | None = None
        self.error: str | None = None
        self.argv: list[str] = []
        self.starts: list[float] = []
        self.restart_at: float | None = None
        self.final = False  # tailjoin ended and systemd would not start it again
        self.exit_codes: list[int] = []

    def tailjoin_argv(self, premade: bool) -> list[str]:
        n = self.node
        if premade:
            key = [f"--auth-key-file={n.key_file}"]
        else:
            cfg = self.dir / "tailjoin.json"
            cfg.write_text(json.dumps({"auth_key": {"kernel_cmdline": {"path": str(self.cmdline),
                                                                       "ca_file": str(self.ca)}}}) + "\n")
            key = [f"--config={cfg}"]
        inner = [tailjoin_bin(), "run", f"--socket={n.socket}", f"--login-server={n.login_server}",
                 f"--hostname={n.name}", f"--state-dir={n.tailjoin_state}", "--log-level=info", *key]
        # Its own mount namespace, where /sys/class/net is this machine's (one NIC, its MAC).
        return ["unshare", "--mount", "--propagation", "private", "sh", "-c",
                'mount --bind "$0" /sys/class/net && exec "$@"', str(self.sysnet), *inner]

    def power_on(self, premade: bool, t0: float):
        self.node.spawn_tailscaled()
        self.argv = self.tailjoin_argv(premade)
        self.node.helper = self.node._popen(self.argv)
        self.starts.append(time.monotonic())
        self.spawned_at = time.monotonic() - t0

    def supervise(self, now: float):
        """systemd's part: restart an exited tailjoin as tailjoin.service's policy says."""
        h = self.node.helper
        if h is None or self.final or self.spawned_at is None:
            return
        if self.restart_at is None and h.poll() is not None:
            self.exit_codes.append(h.returncode)
            recent = [s for s in self.starts if now - s < START_LIMIT_INTERVAL]
            if h.returncode == 0 or h.returncode in RESTART_PREVENT or len(recent) >= START_LIMIT_BURST:
                self.final = True
            else:
                self.restart_at = now + RESTART_SEC
        elif self.restart_at is not None and now >= self.restart_at:
            self.node.helper = self.node._popen(self.argv)
            self.starts.append(now)
            self.restart_at = None

    def firmware(self, boot_url: str, t0: float, stop: threading.Event):
        """iPXE's part: fetch the boot script for this MAC until one carries a token; a refusal
        is followed as iPXE would: sleep as it says, then chain to the URL it names (which
        carries the attempt count, so the provisioner's backoff grows)."""
        url = f"{boot_url}?mac={self.mac}"
        while not stop.is_set():
            try:
                with urllib.request.urlopen(url, timeout=30) as r:
                    text = r.read(65536).decode(errors="replace")
            except (urllib.error.URLError, OSError) as e:
                self.refusals.append(f"fetch failed: {e}")
                stop.wait(1.0)
                continue
            self.scripts += 1
            s = parse_boot_script(text)
            if s["token"] and s["key_url"]:
                self.token_at = time.monotonic() - t0
                self.cmdline.write_text(s["args"] + "\n")
                try:
                    self.power_on(False, t0)
                except OSError as e:
                    self.error = f"cannot start: {e}"
                return
            self.refusals.append(" / ".join(s["echo"]) or text[:120])
            if s["chain"]:
                url = s["chain"].replace("${net0/mac}", self.mac)
            stop.wait(max(1, s["sleep"] or 5))

    def gave_up(self) -> bool:
        return self.error is not None or self.final

    def status(self) -> dict:
        try:
            return json.loads((self.node.tailjoin_state / "status.json").read_text())
        except (OSError, json.JSONDecodeError):
            return {}

    def state(self) -> str | None:
        return self.status().get("state")

    def summary(self) -> str:
        return str(self.status().get("summary", ""))[:200]


# --------------------------------------------------------------------------- one run


def one_run(work: Path, n: int, mode: str, outage: float | None, rate_limit: dict | None, log=print) -> dict:
    premade = mode == "premade"
    preshared = {mac_of(i): os.urandom(24).hex() for i in range(n)} if mode == PRESHARED else None
    work.mkdir(parents=True, exist_ok=True)
    proxy_port = peers.free_port()
    events = work / "proxy-events.log"
    proxy_log = open(work / "proxy.log", "ab")
    hs = ProxiedHeadscale(work / "headscale", proxy_port)
    proxy = subprocess.Popen([sys.executable, str(HERE / "countproxy.py"), str(proxy_port), str(hs.port), str(events)],
                             stdout=proxy_log, stderr=subprocess.STDOUT, start_new_session=True)
    machines: list[Machine] = []
    prov: StormProvisioner | None = None
    stop = threading.Event()
    threads: list[threading.Thread] = []
    outage_th: threading.Thread | None = None
    try:
        hs.start()
        peers._wait(lambda: _port_open(proxy_port), 10, 0.05, "the counting proxy")
        uid = hs.create_user("storm")
        ca = None
        if not premade:
            tls = make_tls(work / "tls")
            ca = tls["ca"]
            prov = StormProvisioner(work / "provisioner", tls, hs.public_url, hs.api_key(),
                                    [mac_of(i) for i in range(n)], rate_limit, preshared).start()
        for i in range(n):
            m = Machine(i, work, hs.public_url, ca)
            if premade:
                m.node.write_key(hs.preauth_key(uid, ephemeral=True, expiration="1h", tags=TAGS))
            machines.append(m)
        ev_start = len(_read_events(events)) if events.exists() else 0

        # -- power-on: every machine at once
        t0 = time.monotonic()
        for m in machines:
            if premade:
                m.power_on(True, t0)
            elif preshared is not None:
                m.cmdline.write_text(f"{BASE_CMDLINE} tailjoin.key_url=https://127.0.0.1:{prov.port}/v1/key "
                                     f"tailjoin.boot_token={preshared[m.mac]}\n")
                m.token_at = 0.0
                m.power_on(False, t0)
            else:
                th = threading.Thread(target=m.firmware, args=(prov.boot_url, t0, stop), daemon=True)
                th.start()
                threads.append(th)

        first_running: dict[int, float] = {}
        samples: list[dict] = []
        outage_at = outage_back = None
        asked = 0
        deadline = t0 + BOUND_S
        poll = 0.1 if n <= 50 else 0.25
        last_sample = 0.0
        while time.monotonic() < deadline:
            now = time.monotonic()
            for m in machines:
                m.supervise(now)
                if m.i not in first_running and m.spawned_at is not None and m.state() == "running":
                    first_running[m.i] = now - t0
            if prov is not None and now - last_sample >= 0.5:
                s = prov.proc and proc_sample(prov.proc.pid)
                if s:
                    samples.append({"t": now - t0, **s})
                last_sample = now
            if outage is not None and outage_at is None:
                if premade:
                    asked = sum(1 for _, k, line in _read_events(events)[ev_start:]
                                if k == "ok" and "/ts2021" in line)
                else:
                    # key requests decided (issued or refused), not boot scripts (boot_issued, …)
                    asked = len({mm for a in prov.audit() if a.get("event") in ("issued", "refused")
                                 for mm in a.get("macs") or []})
                if asked >= n / 2:
                    outage_at = now - t0

                    def do_outage():
                        nonlocal outage_back
                        hs.stop()
                        time.sleep(outage)
                        hs.start()
                        outage_back = time.monotonic() - t0

                    outage_th = threading.Thread(target=do_outage, daemon=True)
                    outage_th.start()
                    log(f"   headscale stopped for {outage:.0f} s at {outage_at:.1f} s ({asked} of {n} had asked)")
            # A machine whose tailjoin gave up (state failed, or exited) will not come back.
            ended = sum(1 for m in machines if m.i not in first_running and m.gave_up())
            done = len(first_running) + ended == n and (outage is None or outage_back is not None)
            if done:
                break
            time.sleep(poll)
        if outage_th is not None:
            outage_th.join(timeout=outage + 60)
        t_end = time.monotonic() - t0
        stop.set()

        # -- per-machine memory (tailscaled + tailjoin), before anything is stopped
        mem = [rss_kib(m.node.ts.pid) + rss_kib(m.node.helper.pid if m.node.helper else None) for m in machines
               if m.spawned_at is not None]
        ev = _read_events(events)[ev_start:]
        mint_calls = [e for e in ev if "/api/v1/preauthkey" in e[2] and e[2].startswith("POST")]
        audit = prov.audit() if prov else []
        with_token = {m.mac for m in machines if m.token_at is not None}
        burnt, burnt_macs = count_burnt(audit, with_token)
        issued = [a for a in audit if a.get("event") == "issued"]
        stranded = [m for m in machines if m.i not in first_running]
        joins = sorted(first_running.values())
        res = {
            "n": n, "mode": mode, "outage_s": outage,
            "all_running_s": max(joins) if len(joins) == n else None,
            "median_join_s": statistics.median(joins) if joins else None,
            "p90_join_s": joins[int(0.9 * (len(joins) - 1))] if joins else None,
            "running": len(joins), "stranded": len(stranded),
            "stranded_detail": [{"mac": m.mac, "state": m.state(), "summary": m.summary(), "scripts": m.scripts,
                                 "exit_codes": m.exit_codes, "refusals": m.refusals[-3:], "error": m.error} for m in stranded[:10]],
            "elapsed_s": t_end,
            "outage_at_s": outage_at, "outage_back_s": outage_back, "asked_at_outage": asked if outage else None,
            "machine_rss_kib_median": statistics.median(mem) if mem else None,
            "machine_rss_kib_sum": sum(mem),
            "tailjoin_restarts": sum(len(m.starts) - 1 for m in machines if m.starts),
        }
        if not premade:
            scripts = sum(m.scripts for m in machines)
            issued_macs = {mm for a in issued for mm in a.get("macs") or []}
            last = samples[-1] if samples else {}
            res.update({
                "boot_scripts": scripts, "refused_scripts": max(0, scripts - len(with_token)),
                "tokens_issued": len(with_token), "keys_issued": len(issued),
                "token_median_s": statistics.median([m.token_at for m in machines if m.token_at is not None])
                if with_token else None,
                "mint_calls": len(mint_calls), "mint_calls_refused": sum(1 for e in mint_calls if e[1] == "refused"),
                "mint_calls_per_machine": len(mint_calls) / n,
                "key_refusals": {r: sum(1 for a in audit if a.get("event") == "refused" and
                                        (a.get("reason") or "").split(":")[0] == r)
                                 for r in sorted({(a.get("reason") or "").split(":")[0] for a in audit
                                                  if a.get("event") == "refused"})},
                "tokens_burnt_without_key": burnt, "burnt_macs": burnt_macs[:10],
                # a key was handed out for the machine's token, yet the machine never got Running
                "keyed_but_stranded": sum(1 for m in stranded if m.mac in issued_macs),
                **mint_latency(hs.log_path),
                "prov_cpu_s": last.get("cpu_s"),
                "prov_rss_max_kib": max((s.get("VmRSS", 0) for s in samples), default=None),
                "prov_hwm_kib": last.get("VmHWM"),
                "prov_samples": [[round(s["t"], 1), round(s["cpu_s"], 2), s.get("VmRSS")] for s in samples[::4]],
            })
        log(f"   N={n} {mode}{' + outage' if outage else ''}: {len(joins)}/{n} Running, all after "
            f"{res['all_running_s'] if res['all_running_s'] is None else round(res['all_running_s'], 1)} s, "
            f"median join {res['median_join_s'] and round(res['median_join_s'], 2)} s"
            + ("" if premade else f", {res['mint_calls']} mint calls, {res['keys_issued']} keys, burnt {burnt}, "
               f"provisioner CPU {res['prov_cpu_s']} s, RSS max {res['prov_rss_max_kib']} KiB"))
        return res
    finally:
        stop.set()
        for th in threads:
            th.join(timeout=35)
        _stop_all([m.node for m in machines if m.spawned_at is not None])
        if prov is not None:
            prov.stop()
        hs.stop()
        proxy.terminate()
        try:
            proxy.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proxy.kill()
        proxy_log.close()
        # the per-machine trees are large at N=200; keep the logs of the provisioner and proxy
        for m in machines:
            shutil.rmtree(m.dir / "state", ignore_errors=True)


def run(work: Path, sizes: list[int], outage: float, rate_limit: dict | None, log=print, save=None) -> dict:
    """Every N, smallest first: provisioner and pre-made alternated (order rotating with N), then
    the same two with a headscale outage. Stops before an N whose projected memory (per-machine
    RSS measured so far × N × MEMORY_HEADROOM) would not fit in what is available."""
    per: dict = {}
    stopped = None
    per_machine_kib = None
    for k, n in enumerate(sorted(sizes)):
        if per_machine_kib:
            need = per_machine_kib * n * MEMORY_HEADROOM
            avail = mem_available_kib()
            if need > avail:
                stopped = (f"N={n} not run: {n} machines × {per_machine_kib / 1024:.0f} MiB (tailscaled + tailjoin, "
                           f"measured) × {MEMORY_HEADROOM} headroom = {need / 1024 / 1024:.1f} GiB > {avail / 1024 / 1024:.1f} GiB "
                           "available")
                log("  " + stopped)
                break
        rows = []
        order = MODES if k % 2 == 0 else MODES[::-1]
        for out in ((None, outage) if outage else (None,)):
            for mode in order:
                log(f" storm N={n}, {mode}{f', headscale down {outage:.0f} s' if out else ''}")
                rows.append(one_run(work / f"storm-{n}-{mode}-{'outage' if out else 'plain'}", n, mode, out,
                                    rate_limit, log))
        per[str(n)] = rows
        meas = [r["machine_rss_kib_median"] for r in rows if r.get("machine_rss_kib_median")]
        if meas:
            per_machine_kib = max(meas)
        if save is not None:  # what is measured so far survives an interrupted run
            save(_summary(per, stopped or f"interrupted after N={n}", per_machine_kib))
    return _summary(per, stopped, per_machine_kib)


def _summary(per: dict, stopped: str | None, per_machine_kib: float | None) -> dict:
    return {"per": per, "stopped": stopped,
            "per_machine_rss_mib": per_machine_kib / 1024 if per_machine_kib else None,
            "mem_total_gib": _mem_total_gib()}


def _mem_total_gib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) / 1024 / 1024
    return 0.0
