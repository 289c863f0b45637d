"""Section 3 of the benchmark: what an approach costs once the node is Running.

For tailjoin (b), containerboot (e) and the polling baseline (d), `count` nodes each are joined
against one headscale whose policy lets no node see another (so no peer churn wakes anyone),
left to settle, and then measured over one common window of `window` seconds:

- wake-ups: context switches (voluntary + involuntary) summed over every thread in
  /proc/PID/task/*/status, end minus start of the window;
- CPU time: utime + stime (+ those of reaped children) from /proc/PID/stat, end minus start;
- RSS: VmRSS at the end of the window.

The polling script forks `tailscale status`, jq and sleep twice a second, and the children's
switches are not in its own /proc entry. So for (d) a fresh poller (in KEEP_WATCHING mode, the one
that can recover a restarted tailscaled) is started at the beginning of the window on the already
Running node, stopped at its end, and reaped with wait4(), whose rusage covers the script and
every process it forked: ru_nvcsw + ru_nivcsw, ru_utime + ru_stime, and ru_maxrss (the largest
process of the tree, i.e. the tailscale CLI). Its RSS column is the script's own VmRSS.
tailscaled's own figures over the same window are recorded too: a poller makes tailscaled work.
"""

from __future__ import annotations

import os
import signal
import statistics
import threading
import time
from pathlib import Path

from common import BenchError, IsolatedHeadscale, Node, cost_delta, proc_cost

IDLE_APPROACHES = ["tailjoin", "containerboot", "poll"]


def _join_all(nodes: list[Node], log) -> None:
    errors: list[BaseException] = []

    def one(n: Node):
        try:
            n.boot()
            n.running_at(timeout=180)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    # Boot in small batches: 2 cores; the join itself is not what is measured here.
    for k in range(0, len(nodes), 6):
        ths = [threading.Thread(target=one, args=(n,)) for n in nodes[k : k + 6]]
        for t in ths:
            t.start()
        for t in ths:
            t.join()
    if errors:
        raise BenchError(f"{len(errors)} node(s) did not join for the idle measurement: {errors[0]}")
    log(f"  {len(nodes)} nodes Running")


def run(work: Path, count: int, window: float, store_batch: str | None, settle: float = 15.0, log=print) -> dict:
    hs = IsolatedHeadscale(work / "headscale-idle", store_batch_timeout=store_batch).start()
    nodes: list[Node] = []
    try:
        uid = hs.create_user("idle")
        for a in IDLE_APPROACHES:
            for i in range(count):
                n = Node(a, work / f"idle-{a}-{i}", f"idle-{a}-{i}", hs.url, keep_watching=True)
                n.write_key(hs.preauth_key(uid))
                nodes.append(n)
        _join_all(nodes, log)
        # The polling baseline: its join-time instance is replaced by a fresh one for the window.
        for n in nodes:
            if n.approach == "poll":
                n.helper.send_signal(signal.SIGTERM)
                n.helper.wait(timeout=10)
                n.helper = None
        # More than tokio's 10 s keep-alive of idle blocking-pool threads: a thread that ends
        # inside the window would take its context switches out of the sum over live threads.
        visible = len(nodes[0].ts.localapi("GET", "/localapi/v0/status").get("Peer") or {})
        log(f"  settling {settle:.0f} s ({len(hs.nodes())} nodes on headscale; a node sees {visible} peers)")
        time.sleep(settle)

        starts: dict[int, dict] = {}
        ts_starts: dict[int, dict] = {}
        for k, n in enumerate(nodes):
            ts_pid = n.tailscaled_pid()
            if ts_pid is None:
                raise BenchError(f"{n.name}: no tailscaled")
            ts_starts[k] = proc_cost(ts_pid)
            if n.approach == "poll":
                n._start_approach()  # fresh poller, KEEP_WATCHING=1
            else:
                pid = n.agent_pid()
                if pid is None:
                    raise BenchError(f"{n.name}: the {n.approach} process is gone")
                starts[k] = proc_cost(pid)
        t0 = time.monotonic()
        log(f"  measuring {window:.0f} s")
        time.sleep(window)
        elapsed = time.monotonic() - t0
        per: dict[str, dict[str, list]] = {
            a: {k: [] for k in ("ctxsw", "cpu_s", "rss_kib", "rss_anon_kib", "rss_file_kib", "threads",
                                "peak_rss_kib", "ts_ctxsw", "ts_cpu_s", "ts_rss_kib")}
            for a in IDLE_APPROACHES
        }
        for k, n in enumerate(nodes):
            ts_end = proc_cost(n.tailscaled_pid())
            d_ts = cost_delta(ts_starts[k], ts_end)
            if n.approach == "poll":
                p = n.helper
                own = proc_cost(p.pid)
                p.send_signal(signal.SIGTERM)
                _, status, ru = os.wait4(p.pid, 0)
                p.returncode = os.waitstatus_to_exitcode(status)
                d = {"ctxsw": ru.ru_nvcsw + ru.ru_nivcsw, "cpu_s": ru.ru_utime + ru.ru_stime,
                     "rss_kib": own["rss_kib"], "rss_anon_kib": own["rss_anon_kib"],
                     "rss_file_kib": own["rss_file_kib"], "threads": own["threads"], "peak_rss_kib": ru.ru_maxrss}
            else:
                end = proc_cost(n.agent_pid())
                d = cost_delta(starts[k], end)
                d["peak_rss_kib"] = end["rss_kib"]
            for key in ("ctxsw", "cpu_s", "rss_kib", "rss_anon_kib", "rss_file_kib", "threads", "peak_rss_kib"):
                per[n.approach][key].append(d[key])
            per[n.approach]["ts_ctxsw"].append(d_ts["ctxsw"])
            per[n.approach]["ts_cpu_s"].append(d_ts["cpu_s"])
            per[n.approach]["ts_rss_kib"].append(d_ts["rss_kib"])
        for a in IDLE_APPROACHES:
            v = per[a]
            log(f"  {a}: wake-ups median {statistics.median(v['ctxsw'])}, CPU {statistics.median(v['cpu_s']):.3f} s, "
                f"RSS {statistics.median(v['rss_kib']) / 1024:.1f} MiB; tailscaled wake-ups "
                f"{statistics.median(v['ts_ctxsw'])}")
        return {"window_s": elapsed, "count": count, "settle_s": settle, "visible_peers": visible, "per": per}
    finally:
        for n in nodes:
            try:
                n.stop()
            except Exception:  # noqa: BLE001 - best effort
                pass
        hs.stop()
