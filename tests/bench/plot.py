"""Draws the benchmark's plots from docs/bench/results.json (matplotlib, no display needed).

    python3 tests/bench/plot.py docs/bench/results.json docs/bench

- join_latency.png: join latency and recovery per approach (every run as a dot, the median as a bar)
- fleet.png: fleet boot (until all Running) and recovery after a headscale outage vs N
  (median with min–max whiskers)
- storm.png: boot storm, time until all N are Running vs N, with the provisioner and with pre-made
  keys, headscale up and down for a while in the middle; and the median join
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ORDER = ["bare-up", "tailjoin", "tailjoin-early", "classic", "poll", "containerboot"]
SHORT = {
    "bare-up": "(a) bare up",
    "tailjoin": "(b) tailjoin",
    "tailjoin-early": "(b′) tailjoin\nstarted early",
    "classic": "(c) sleep 2 +\nCLI + jq",
    "poll": "(d) poll\nevery 0.5 s",
    "containerboot": "(e) container-\nboot",
}


def plot_join(res: dict, out: Path):
    per = res["join"]["per"]
    names = [a for a in ORDER if a in per]
    fig, ax = plt.subplots(figsize=(9, 4.5))
    width = 0.38
    for k, (key, label, color) in enumerate(
        [("join_s", "join (socket accepting → Running)", "#4878cf"),
         ("recovery_s", "recovery (restarted with empty state)", "#d65f5f")]
    ):
        for i, a in enumerate(names):
            v = per[a].get(key) or []
            if not v:
                continue
            x = i + (k - 0.5) * width
            ax.bar(x, statistics.median(v), width * 0.9, color=color, alpha=0.55,
                   label=label if i == 0 or (key == "recovery_s" and a == "tailjoin") else None)
            ax.scatter([x] * len(v), v, s=9, color=color, zorder=3)
    handles, labels = ax.get_legend_handles_labels()
    seen = {}
    for h, lbl in zip(handles, labels, strict=True):
        seen.setdefault(lbl, h)
    ax.legend(seen.values(), seen.keys(), loc="upper left", fontsize=8)
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels([SHORT[a] for a in names], fontsize=8)
    ax.set_ylabel("seconds (bar: median; dots: runs)")
    ax.set_title(f"Join latency and recovery, {res['join']['runs']} interleaved runs per approach")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "join_latency.png", dpi=110)
    plt.close(fig)


def plot_fleet(res: dict, out: Path):
    per = res["fleet"]["per"]
    ns = sorted(int(n) for n in per if per[n])
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4.2), gridspec_kw={"width_ratios": [3, 2]})
    for key, label, color in [
        ("boot_all_s", "boot: until all N are Running", "#4878cf"),
        ("recovered_s", f"after a {res['fleet']['outage_s']:.0f} s headscale outage:\nuntil all N are back", "#d65f5f"),
    ]:
        med = [statistics.median(r[key] for r in per[str(n)]) for n in ns]
        lo = [m - min(r[key] for r in per[str(n)]) for m, n in zip(med, ns, strict=True)]
        hi = [max(r[key] for r in per[str(n)]) - m for m, n in zip(med, ns, strict=True)]
        ax.errorbar(ns, med, yerr=[lo, hi], marker="o", capsize=4, color=color, label=label)
    ax.set_xlabel("N (tailscaled + tailjoin pairs, one headscale)")
    ax.set_ylabel("seconds (median, min–max)")
    ax.set_xticks(ns)
    ax.set_ylim(0, ax.get_ylim()[1] * 1.4)  # room for the legend
    runs = res["fleet"]["runs"]
    ax.set_title(f"Fleet boot and recovery, {runs} run{'s' if runs != 1 else ''} per N", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")

    cats = [("/key", "control: /key"), ("/ts2021", "control: /ts2021"), ("/derp", "DERP: /derp"),
            ("netcheck HTTPS probe (TLS)", "netcheck HTTPS probe"), ("other", "other")]
    colors = ["#6acc65", "#4878cf", "#d65f5f", "#b47cc7", "#c4ad66"]
    bottom = [0.0] * len(ns)
    for (cat, label), color in zip(cats, colors, strict=True):
        vals = [statistics.median(r["by_request"].get(cat, 0) / r["n"] / r["outage_minutes"] for r in per[str(n)])
                for n in ns]
        if not any(vals):
            continue
        ax2.bar([str(n) for n in ns], vals, bottom=bottom, color=color, label=label)
        bottom = [b + v for b, v in zip(bottom, vals, strict=True)]
    ax2.set_xlabel("N")
    ax2.set_ylabel("attempts per node per minute (median)")
    ax2.set_title("Attempts to reach headscale while it is down", fontsize=10)
    ax2.set_ylim(0, max(bottom + [1.0]) * 1.45)
    ax2.legend(fontsize=8, loc="upper left", ncol=2)
    ax2.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "fleet.png", dpi=110)
    plt.close(fig)


def plot_storm(res: dict, out: Path):
    per = res["storm"]["per"]
    ns = sorted(int(n) for n in per if per[n])
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4.6))
    outage = next((r["outage_s"] for rs in per.values() for r in rs if r.get("outage_s")), None)
    series = [("provisioner", False, "provisioner (boot script + token + minted key)", "#4878cf", "-"),
              ("premade", False, "pre-made key per machine", "#6acc65", "-"),
              ("provisioner", True, f"provisioner, headscale down {outage or 0:.0f} s", "#4878cf", "--"),
              ("premade", True, f"pre-made, headscale down {outage or 0:.0f} s", "#6acc65", "--")]
    for axis, key in ((ax, "all_running_s"), (ax2, "median_join_s")):
        marks = []  # (n, stranded, color, offset) where some machines never got Running
        for k, (mode, down, label, color, style) in enumerate(series):
            xs, ys = [], []
            for n in ns:
                r = next((r for r in per[str(n)] if r["mode"] == mode and bool(r.get("outage_s")) == down), None)
                if r is None:
                    continue
                if r.get(key) is not None and not (key == "all_running_s" and r.get("stranded")):
                    xs.append(n)
                    ys.append(r[key])
                if r.get("stranded"):
                    marks.append((n, r["stranded"], color, k))
            axis.plot(xs, ys, marker="o", linestyle=style, color=color, label=label)
        axis.set_xlabel("N (machines powered on at once)")
        axis.set_xticks(ns)
        axis.grid(alpha=0.3)
        top = axis.get_ylim()[1] * 1.6
        axis.set_ylim(0, top)
        for n, k_str, color, k in marks:
            y = top * (0.93 - 0.07 * k)
            axis.scatter([n], [y], marker="x", color=color, s=40, zorder=4)
            axis.annotate(f"{k_str} stranded", (n, y), textcoords="offset points", xytext=(5, -3), fontsize=7,
                          color=color)
    ax.set_ylabel("seconds from power-on")
    ax.set_title("Boot storm: until all N are Running\n(x: not all got there; machines stranded)", fontsize=10)
    ax2.set_title("Boot storm: median join of the machines that got Running\n(x: machines stranded)", fontsize=10)
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=8)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.savefig(out / "storm.png", dpi=110)
    plt.close(fig)


def main() -> int:
    res = json.loads(Path(sys.argv[1]).read_text())
    out = Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    if "join" in res:
        plot_join(res, out)
    if "fleet" in res:
        plot_fleet(res, out)
    if "storm" in res:
        plot_storm(res, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
