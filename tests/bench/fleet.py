"""Section 5 of the benchmark: a fleet of N tailscaled + tailjoin pairs against one headscale.

One run for one N:

1. A fresh headscale (sqlite, embedded DERP) behind the counting proxy (countproxy.py; headscale's
   server_url is the proxy, so control and DERP traffic both pass it), one reusable pre-auth key
   (as a fleet image would carry), one mode-600 key file per node.
2. Boot: all N tailscaled and N `tailjoin run` are spawned at once (tailjoin before its socket
   exists, as at boot without systemd; it waits for the socket itself). Measured: from the first
   spawn until every tailjoin's status file says `running`.
3. Outage: headscale is stopped (SIGTERM), stays down for `outage` seconds, and is started again
   on the same ports and database. During the outage the proxy refuses every connection; each
   refused connection is one attempt by a node to reach headscale. Reported as attempts per node
   per minute, by request (`/key`, `/ts2021`, `/derp`, other).
4. Recovery: from headscale serving again until headscale lists all N nodes online (their map
   long-polls are back) and every tailjoin reports `running` again.
"""

from __future__ import annotations

import json
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

from common import HERE, BenchError, Node, peers, proc_cost

DERP_OR_CONTROL = ("/key", "/ts2021", "/derp")
TLS = "netcheck HTTPS probe (TLS)"
CATEGORIES = [*DERP_OR_CONTROL, TLS, "other"]


class ProxiedHeadscale(peers.Headscale):
    """headscale whose server_url (what nodes and the DERP map use) is the counting proxy."""

    def __init__(self, workdir: Path, proxy_port: int, **kw):
        self.proxy_port = proxy_port
        super().__init__(workdir, **kw)

    @property
    def public_url(self) -> str:
        return f"http://127.0.0.1:{self.proxy_port}"

    def config_text(self) -> str:
        return super().config_text().replace(f"server_url: {self.url}", f"server_url: {self.public_url}", 1)


def _category(request_line: str) -> str:
    if request_line.startswith("<binary 16030"):
        return TLS  # a TLS ClientHello: netcheck's HTTPS latency probe, used when STUN gets no answer
    parts = request_line.split()
    path = parts[1] if len(parts) > 1 else request_line
    for p in DERP_OR_CONTROL:
        if path.startswith(p):
            return p
    return "other"


def _read_events(path: Path) -> list[tuple[float, str, str]]:
    out = []
    for line in path.read_text(errors="replace").splitlines():
        bits = line.split(" ", 2)
        if len(bits) == 3:
            out.append((float(bits[0]), bits[1], bits[2]))
    return out


def _status(n: Node) -> dict:
    try:
        return json.loads((n.tailjoin_state / "status.json").read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def _states(nodes: list[Node]) -> list[str | None]:
    return [_status(n).get("state") for n in nodes]


def _stop_all(nodes: list[Node]):
    procs = [p for n in nodes for p in (n.helper, n.ts._p.proc) if p is not None and p.poll() is None]
    for p in procs:
        try:
            p.send_signal(signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 20
    for p in procs:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=10)
    for n in nodes:
        n.ts.stop()  # bookkeeping of the harness (already exited)


def one_run(work: Path, n_nodes: int, outage: float, log=print) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    proxy_port = peers.free_port()
    events = work / "proxy-events.log"
    proxy_log = open(work / "proxy.log", "ab")
    hs = ProxiedHeadscale(work / "headscale", proxy_port)
    proxy = subprocess.Popen([sys.executable, str(HERE / "countproxy.py"), str(proxy_port), str(hs.port), str(events)],
                             stdout=proxy_log, stderr=subprocess.STDOUT, start_new_session=True)
    nodes: list[Node] = []
    try:
        hs.start()
        peers._wait(lambda: _port_open(proxy_port), 10, 0.05, "the counting proxy")
        uid = hs.create_user("fleet")
        key = hs.preauth_key(uid, reusable=True)
        for i in range(n_nodes):
            n = Node("tailjoin", work / f"n{i}", f"fleet-{i}", hs.public_url)
            n.write_key(key)
            nodes.append(n)

        # -- boot
        t0 = time.monotonic()
        for n in nodes:
            n.spawn_tailscaled()
            n.helper = n._popen(n.tailjoin_argv())
        first_running: dict[int, float] = {}
        deadline = t0 + 300
        while len(first_running) < n_nodes:
            now = time.monotonic()
            for k, st in enumerate(_states(nodes)):
                if st == "running" and k not in first_running:
                    first_running[k] = now - t0
            if now > deadline:
                raise BenchError(f"fleet of {n_nodes}: only {len(first_running)} Running after 300 s")
            for n in nodes:
                if n.helper.poll() is not None:
                    raise BenchError(f"{n.name}: tailjoin exited with {n.helper.returncode}")
            time.sleep(0.05)
        boot_all = max(first_running.values())
        log(f"  N={n_nodes}: all Running after {boot_all:.2f} s (median node {statistics.median(first_running.values()):.2f} s)")
        time.sleep(3)  # the map sessions and DERP connections settle

        # -- outage
        t_stop = time.monotonic()
        hs.stop()
        t_down = time.monotonic()
        time.sleep(outage)
        states_during = _states(nodes)
        t_restart = time.monotonic()
        hs.start()
        t_up = time.monotonic()

        # -- recovery
        all_online = all_running = None
        deadline = t_up + 300
        while all_online is None or all_running is None:
            now = time.monotonic()
            if all_running is None and all(s == "running" for s in _states(nodes)):
                all_running = now - t_up
            if all_online is None:
                online = sum(1 for x in hs.nodes() if x.get("online"))
                if online >= n_nodes:
                    all_online = time.monotonic() - t_up
            if now > deadline:
                raise BenchError(f"fleet of {n_nodes}: not recovered 300 s after headscale restarted")
            time.sleep(0.25)
        recovered = max(all_online, all_running)
        log(f"  N={n_nodes}: headscale down {t_restart - t_stop:.1f} s; all recovered {recovered:.2f} s after it "
            f"served again (all online on headscale {all_online:.2f} s, all tailjoin running {all_running:.2f} s)")

        # -- count the attempts during the outage
        ev = _read_events(events)
        window = [e for e in ev if t_down <= e[0] < t_restart and e[1] == "refused"]
        minutes = (t_restart - t_down) / 60
        by_cat = {c: 0 for c in CATEGORIES}
        for _, _, line in window:
            by_cat[_category(line)] += 1
        rate = len(window) / n_nodes / minutes
        log(f"  N={n_nodes}: {len(window)} attempts during the outage = {rate:.2f} per node per minute {by_cat}")
        joins = [_status(n).get("joins", 0) for n in nodes]
        proxy_cpu = proc_cost(proxy.pid)["cpu_s"]
        return {
            "n": n_nodes,
            "max_joins": max(joins),
            "proxy_cpu_s": proxy_cpu,
            "boot_all_s": boot_all,
            "boot_node_median_s": statistics.median(first_running.values()),
            "down_s": t_restart - t_stop,
            "stop_s": t_down - t_stop,
            "recovered_s": recovered,
            "all_online_s": all_online,
            "all_running_s": all_running,
            "outage_attempts": len(window),
            "outage_minutes": minutes,
            "per_node_per_min": rate,
            "by_request": by_cat,
            "degraded_during_outage": sum(1 for s in states_during if s == "degraded"),
        }
    finally:
        _stop_all(nodes)
        hs.stop()
        proxy.terminate()
        try:
            proxy.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proxy.kill()
        proxy_log.close()


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def run(work: Path, sizes: list[int], runs: int, outage: float, log=print) -> dict:
    res: dict = {str(n): [] for n in sizes}
    for i in range(runs):
        k = i % len(sizes)
        for n in sizes[k:] + sizes[:k]:
            log(f" fleet run {i + 1}/{runs}, N={n}")
            res[str(n)].append(one_run(work / f"fleet-{n}-{i}", n, outage, log))
    return res
