"""Sections 1 and 2 of the benchmark: join latency and recovery, per approach.

One run of one approach: a fresh node (fresh tailscaled, empty state dir, a fresh reusable
pre-auth key in a mode-600 file) boots; the join latency is from tailscaled's socket first
accepting to the first BackendState=Running notify on its IPN bus. Then tailscaled is stopped,
its state wiped, and it is started again; the recovery is from the new socket first accepting to
Running (and, as a second figure, from the stop signal to Running). The approaches are
interleaved: run i runs every approach once, in an order that rotates with i.
"""

from __future__ import annotations

import time
from pathlib import Path

from common import APPROACHES, EARLY, Node, peers

SETTLE = 2.0


def one_run(approach: str, hs: peers.Headscale, user_id: int, work: Path, i: int, recovery: bool) -> dict:
    name = f"{approach}-{i}"
    node = Node(approach, work / name, name, hs.url)
    node.write_key(hs.preauth_key(user_id, reusable=True))
    out: dict = {}
    try:
        t0 = node.boot()
        out["join_s"] = node.running_at() - t0
        if recovery:
            # Let the node settle (netmap, DERP) and every approach see Running (the poller needs
            # one more poll) before pulling the rug.
            time.sleep(SETTLE)
            t_stop, t1 = node.restart_empty()
            t_run = node.running_at()
            out["recovery_s"] = t_run - t1
            out["recovery_from_stop_s"] = t_run - t_stop
    finally:
        node.stop()
    return out


def rotated(items: list[str], i: int) -> list[str]:
    k = i % len(items)
    return items[k:] + items[:k]


def run(hs: peers.Headscale, user_id: int, work: Path, runs: int, approaches: list[str] | None = None,
        recovery: bool = True, log=print) -> dict:
    approaches = approaches or [*APPROACHES, EARLY]
    res: dict = {a: {"join_s": [], "recovery_s": [], "recovery_from_stop_s": []} for a in approaches}
    for i in range(runs):
        for a in rotated(approaches, i):
            # (b′) differs from (b) only before the first accept; its recovery would be (b)'s.
            r = one_run(a, hs, user_id, work, i, recovery and a != EARLY)
            for k, v in r.items():
                res[a][k].append(v)
            extra = (f", recovery {r['recovery_s']:.3f} s ({r['recovery_from_stop_s']:.3f} s from the stop)"
                     if "recovery_s" in r else "")
            log(f"  run {i + 1}/{runs} {a}: join {r['join_s']:.3f} s{extra}")
    return res
