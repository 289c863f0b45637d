"""The benchmark: join latency, recovery, idle cost, size and a fleet, on loopback with real
headscale and real userspace-networking tailscaled. Run it through tests/bench/run.sh, which
installs what it needs and builds the binaries; this script expects:

    TAILJOIN_BIN                 the tailjoin binary
    TAILJOIN_PEERS_BIN           tests/peers/build.sh's directory (tailscaled, tailscale, headscale)
    TAILJOIN_CONTAINERBOOT_BIN   tests/bench/build-containerboot.sh's directory

    python3 tests/bench/bench.py [--runs N] [--quick] [--sections join,idle,size,fleet,storm,netboot] [--out FILE]

storm and netboot are not in the default set (they take long, netboot needs root and qemu):
select them with --sections.

Raw numbers go to docs/bench/results.json (next to the plots), the table to docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import common  # noqa: E402
import fleet  # noqa: E402
import idle  # noqa: E402
import join_latency  # noqa: E402
import report  # noqa: E402
import size  # noqa: E402
import storm  # noqa: E402

SECTIONS = ["join", "idle", "size", "fleet", "storm", "netboot"]
DEFAULT_SECTIONS = ["join", "idle", "size", "fleet"]
# The storm measures what the provisioner itself costs, so its rate limit must not bind: every
# simulated machine reaches it from 127.0.0.1 (the per-client limit, default 6 a minute, would
# count the whole fleet as one client), and the global default (60 a minute, burst 10) would meter
# out 200 boot tokens over minutes. --storm-rate-limit '{}' measures with the defaults.
STORM_RATE_LIMIT = {"per_minute": 12_000, "burst": 400, "per_client_per_minute": 100_000}


def log(msg: str):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=10,
                    help="runs per approach for join latency and recovery, idle nodes per approach, "
                         "fleet runs per N (default 10)")
    ap.add_argument("--quick", action="store_true",
                    help="a smoke run in a few minutes: 2 runs, 2 idle nodes over 15 s, one fleet of 10 with "
                         "a 10 s outage; writes to a temporary directory unless --out is given")
    ap.add_argument("--sections", default=",".join(DEFAULT_SECTIONS),
                    help=f"comma-separated subset of {','.join(SECTIONS)} (default {','.join(DEFAULT_SECTIONS)}); "
                         "the others keep their last results")
    ap.add_argument("--fleet-sizes", default="10,25,50")
    ap.add_argument("--fleet-runs", type=int, help="fleet runs per N (default: --runs)")
    ap.add_argument("--idle-nodes", type=int, help="nodes per approach in the idle window (default: --runs)")
    ap.add_argument("--idle-window", type=float, default=60.0)
    ap.add_argument("--outage", type=float, default=30.0, help="seconds headscale stays down in the fleet test")
    ap.add_argument("--storm-sizes", default="25,50,100,200",
                    help="machines per storm, smallest first; stops before an N that would not fit in memory")
    ap.add_argument("--storm-outage", type=float, default=30.0, help="seconds headscale stays down in the storm")
    ap.add_argument("--storm-rate-limit", type=json.loads, default=STORM_RATE_LIMIT,
                    help="the provisioner's rate_limit in the storm, as JSON (default: %(default)s)")
    ap.add_argument("--storm-key", default="storm",
                    help="where the storm's results go in results.json: storm (the table), or storm_default_limit "
                         "(a second table, for a storm with the provisioner's default rate limit)")
    ap.add_argument("--netboot-runs", type=int, default=3, help="qemu boots per variant in the netboot section")
    ap.add_argument("--headscale-default-tuning", action="store_true",
                    help="join, recovery and idle against headscale's default 500 ms NodeStore batching "
                         "instead of 10 ms (joins then take 4.4 or 4.9 s at random)")
    ap.add_argument("--render-only", action="store_true",
                    help="measure nothing: rewrite the Markdown and the plots from the last results.json")
    ap.add_argument("--out", type=Path, help="the Markdown file (default docs/BENCHMARKS.md)")
    a = ap.parse_args()

    sections = [s for s in a.sections.split(",") if s]
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        ap.error(f"unknown section(s) {', '.join(sorted(unknown))}")
    if a.quick:
        runs, idle_nodes, idle_window, fleet_sizes, fleet_runs, outage = 2, 2, 15.0, [10], 1, 10.0
        storm_sizes, storm_outage, netboot_runs = [5], 10.0, 1
        out = a.out or Path(tempfile.gettempdir()) / "tailjoin-bench-quick" / "BENCHMARKS.md"
    else:
        runs = a.runs
        idle_nodes = a.idle_nodes or a.runs
        idle_window = a.idle_window
        fleet_sizes = [int(x) for x in a.fleet_sizes.split(",") if x]
        fleet_runs = a.fleet_runs or a.runs
        outage = a.outage
        storm_sizes = [int(x) for x in a.storm_sizes.split(",") if x]
        storm_outage = a.storm_outage
        netboot_runs = a.netboot_runs
        out = a.out or common.ROOT / "docs" / "BENCHMARKS.md"
    plots = out.parent / "bench"
    plots.mkdir(parents=True, exist_ok=True)
    results_path = plots / "results.json"
    results: dict = {}
    if results_path.exists():
        try:
            results = json.loads(results_path.read_text())
        except json.JSONDecodeError:
            results = {}
    if a.render_only:
        if "meta" not in results:
            ap.error(f"--render-only: no results in {results_path}")
        return write_outputs(results, results_path, plots, out)
    command = os.environ.get("TAILJOIN_BENCH_COMMAND") or "python3 tests/bench/bench.py " + " ".join(sys.argv[1:])
    results["meta"] = report.environment(command, a.quick)

    store_batch = None if a.headscale_default_tuning else common.STORE_BATCH_TIMEOUT
    existed = common.default_socket_dir_exists()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="tailjoin-bench-") as tmp:
        work = Path(tmp)
        try:
            stamp = {"date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"), "command": command}
            if "join" in sections:
                log(f"1+2. join latency and recovery: {runs} runs per approach, interleaved")
                hs = common.IsolatedHeadscale(work / "headscale-join", store_batch_timeout=store_batch).start()
                try:
                    uid = hs.create_user("bench")
                    results["join"] = {**stamp, "runs": runs, "store_batch_timeout": store_batch or "500ms (default)",
                                       "per": join_latency.run(hs, uid, work / "join", runs, log=log)}
                finally:
                    hs.stop()
            if "idle" in sections:
                log(f"3. idle cost: {idle_nodes} nodes per approach, one {idle_window:.0f} s window")
                results["idle"] = {**stamp, **idle.run(work / "idle", idle_nodes, idle_window, store_batch, log=log)}
            if "size" in sections:
                log("4. size")
                results["size"] = {**stamp, **size.measure()}
            if "fleet" in sections:
                log(f"5. fleet: N in {fleet_sizes}, {fleet_runs} runs each, headscale down for {outage:.0f} s")
                results["fleet"] = {**stamp, "runs": fleet_runs, "outage_s": outage,
                                    "per": fleet.run(work / "fleet", fleet_sizes, fleet_runs, outage, log=log)}
            if "storm" in sections:
                log(f"6. storm: N in {storm_sizes}, provisioner vs pre-made keys"
                    + (f", then headscale down for {storm_outage:.0f} s" if storm_outage else ""))

                def save_storm(partial: dict):
                    results[a.storm_key] = {**stamp, "rate_limit": a.storm_rate_limit, **partial}
                    results_path.write_text(json.dumps(results, indent=1) + "\n")

                save_storm(storm.run(work / "storm", storm_sizes, storm_outage, a.storm_rate_limit, log=log,
                                     save=save_storm))
                results_path.write_text(json.dumps(results, indent=1) + "\n")  # kept if a later section fails
            if "netboot" in sections:
                import netboot_bench
                log(f"7. netboot: {netboot_runs} qemu boots per variant, alternated")
                results["netboot"] = {**stamp, **netboot_bench.run(work / "netboot", netboot_runs, log=log)}
        finally:
            common.cleanup_default_socket_link(work, existed)
    results["meta"]["elapsed_s"] = time.monotonic() - started
    results_path.write_text(json.dumps(results, indent=1) + "\n")
    return write_outputs(results, results_path, plots, out)


def write_outputs(results: dict, results_path: Path, plots: Path, out: Path) -> int:
    plot_python = os.environ.get("TAILJOIN_BENCH_PLOT_PYTHON") or sys.executable
    r = subprocess.run([plot_python, str(HERE / "plot.py"), str(results_path), str(plots)])
    if r.returncode != 0:
        log("plotting failed (see above); the table is written without fresh plots")
    out.write_text(report.render(results, plots_rel=os.path.relpath(plots, out.parent)))
    log(f"wrote {out}, {results_path} and the plots in {plots}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
