"""Join latency, measured on real peers: from tailscaled's socket accepting to BackendState
Running, for (a) a bare `tailscale up --auth-key file:…` fired the instant the socket accepts
(the physical limit) and (b) tailjoin started at the same instant. The approaches are
interleaved run by run against one headscale; each run gets a fresh tailscaled and a fresh key.

    python3 tests/bench/join_latency.py [--runs N] [--out docs/BENCHMARKS.md]

Writes a Markdown table (median, min, max, ratio to (a)) with the machine, versions and date.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT / "tests" / "real_peers"))

import peers  # noqa: E402
from agent import Agent  # noqa: E402


def wait_socket(ts: peers.Tailscaled, timeout: float = 30.0) -> float:
    """Returns the monotonic time at which the LocalAPI first answered."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            ts.localapi("GET", "/localapi/v0/status?peers=false", timeout=1)
            return time.monotonic()
        except OSError:
            time.sleep(0.002)
    raise RuntimeError("tailscaled's socket never accepted")


def wait_running(ts: peers.Tailscaled, t0: float, timeout: float = 60.0) -> float:
    deadline = t0 + timeout
    while time.monotonic() < deadline:
        st = ts.localapi("GET", "/localapi/v0/status?peers=false", timeout=2)
        if st.get("BackendState") == "Running":
            return time.monotonic() - t0
        time.sleep(0.01)
    raise RuntimeError("not Running within the timeout")


def one_run(approach: str, hs: peers.Headscale, work: Path, i: int) -> float:
    name = f"{approach}-{i}"
    ts = peers.Tailscaled(work / name, name)
    key = hs.preauth_key(hs.user_id)
    key_file = ts.write_key_file(key)
    # Spawn without the harness's own readiness wait, so t0 is the first accept.
    ts._p.spawn(
        [ts.exe, "--tun=userspace-networking", f"--statedir={ts.statedir}", f"--socket={ts.socket}",
         "--port=0", "--no-logs-no-support"],
        env=ts.env, cwd=ts.workdir,
    )
    ts.statedir.mkdir(parents=True, exist_ok=True)
    helper = None
    try:
        t0 = wait_socket(ts)
        if approach == "bare-up":
            helper = subprocess.Popen(
                [ts.cli_exe, f"--socket={ts.socket}", "up", f"--login-server={hs.url}",
                 f"--auth-key=file:{key_file}", f"--hostname={name}"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
        else:
            helper = Agent(work / f"agent-{name}", ts, hs.url, key_file=key_file, log_level="info").start()
        return wait_running(ts, t0)
    finally:
        if isinstance(helper, Agent):
            helper.stop()
        elif helper is not None:
            helper.wait(timeout=30)
        ts.stop()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "BENCHMARKS.md")
    a = ap.parse_args()
    approaches = ["bare-up", "tailjoin"]
    results: dict[str, list[float]] = {k: [] for k in approaches}
    with tempfile.TemporaryDirectory(prefix="tailjoin-bench-") as tmp:
        work = Path(tmp)
        hs = peers.Headscale(work / "headscale").start()
        hs.user_id = hs.create_user("bench")
        try:
            for i in range(a.runs):
                order = approaches if i % 2 == 0 else list(reversed(approaches))
                for approach in order:
                    secs = one_run(approach, hs, work, i)
                    results[approach].append(secs)
                    print(f"run {i + 1}/{a.runs} {approach}: {secs:.3f} s", flush=True)
        finally:
            hs.stop()

    base = statistics.median(results["bare-up"])
    versions = (ROOT / "tests" / "peers" / "versions.env").read_text()
    pinned = ", ".join(line for line in versions.splitlines() if line and not line.startswith("#"))
    agent_version = subprocess.run([os.environ["TAILJOIN_BIN"], "--version"], capture_output=True, text=True).stdout.strip()
    lines = [
        "# Benchmarks",
        "",
        f"Produced by `tests/bench/run.sh` on {datetime.date.today().isoformat()}: "
        f"{platform.machine()}, {os.cpu_count()} cores, Linux {platform.release()}; {pinned}; {agent_version}.",
        "Real headscale (sqlite, embedded DERP) and userspace-networking tailscaled on loopback.",
        "",
        "## Join latency (tailscaled's socket accepting → BackendState Running)",
        "",
        f"{a.runs} runs each, interleaved; a fresh tailscaled and a fresh single-use key per run.",
        "",
        "| approach | median s | min s | max s | ratio to (a) |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    labels = {"bare-up": "(a) bare `tailscale up --auth-key file:…` at the first accept", "tailjoin": "(b) tailjoin"}
    for k in approaches:
        v = results[k]
        lines.append(
            f"| {labels[k]} | {statistics.median(v):.3f} | {min(v):.3f} | {max(v):.3f} | "
            f"{statistics.median(v) / base:.3f} |"
        )
    lines.append("")
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
