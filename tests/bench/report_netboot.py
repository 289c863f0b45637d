"""The storm and netboot sections of docs/BENCHMARKS.md (report.py renders the others)."""

from __future__ import annotations

import json
import re

from report import MIB, _range, med




def _pair(rows: list[dict], outage: bool) -> tuple[dict | None, dict | None]:
    prov = next((r for r in rows if r["mode"] == "provisioner" and bool(r.get("outage_s")) == outage), None)
    pre = next((r for r in rows if r["mode"] == "premade" and bool(r.get("outage_s")) == outage), None)
    return prov, pre


def _opt(v, nd=1, scale=1.0):
    return "—" if v is None else f"{v * scale:.{nd}f}"


def storm(res: dict, plots_rel: str, key: str = "storm") -> list[str]:
    st = res[key]
    per = st["per"]
    rl = st.get("rate_limit") or {}
    if key != "storm":
        return _storm_table(st, [
            "## 6b. Boot storm with the provisioner's default rate limit",
            "",
            f"The same storm, provisioner settings as above but `rate_limit` {json.dumps(rl)}: the global "
            "default (60 a minute, burst 10) applies to boot scripts and key requests; only the per-client "
            "limit is lifted, because every simulated machine comes from 127.0.0.1. Refused machines follow "
            "the refusal script (sleep `retry_secs`, doubling, then chain with the attempt count). Measured "
            f"{st.get('date', '')[:16]}, before the jittered retries and mint admission control of commit "
            "4c8a8bb (the refusal delays then had no jitter), and not re-measured since.",
            "",
        ], plots_rel, plot=False)
    lines = [
        "## 6. Boot storm",
        "",
        "N netbooted machines power on at once (after a power cut) against one `tailjoin-provisioner` in front of "
        "one headscale (defaults, every node sees every other). Each machine is simulated on loopback: its "
        "\"firmware\" fetches `GET /v1/boot.ipxe?mac=MAC` from the provisioner's plain-HTTP netboot listener "
        "(a refusal is followed as iPXE would: sleep what the script says, ask again), takes the `kernel` line's "
        "arguments (`tailjoin.key_url=`, a one-time `tailjoin.boot_token=`) as its kernel command line, then "
        "starts a real `tailscaled` (userspace networking, own socket and state dir) and a real `tailjoin run` "
        "with the `kernel_cmdline` key source. tailjoin runs in its own mount namespace with a fake "
        "`/sys/class/net` (one NIC, the machine's MAC), so the identity it POSTs to `/v1/key` carries the "
        "simulated MAC; all MACs are in `allow.macs`. The kernel and initrd files are not fetched.",
        "",
        "**Pre-made keys** is the same fleet in the same run, side by side: one single-use, ephemeral, tagged "
        "pre-auth key per machine (what the provisioner mints) in a key file, no boot script, no provisioner; "
        "tailscaled and tailjoin start at power-on. **Join** = power-on (all machines at once) → that machine's "
        "tailjoin reports `running`. Mint calls are counted at headscale's API (`POST /api/v1/preauthkey` "
        "through the counting proxy); tokens and refusals come from the provisioner's audit log. A machine is "
        f"stranded when it is not Running within {storm_bound():.0f} s (or its tailjoin gave up before).",
        "",
        f"Provisioner settings: `rate_limit` {json.dumps(rl)}; netboot `retry_secs` {storm_const('RETRY_SECS', 30)} "
        "(the default), `token_ttl_secs` 600, `require_approval` and `one_boot_per_mac` on; keys ephemeral, "
        "tagged, single-use, `key_expiry_secs` 600; the agent's key request times out after 30 s (the "
        "default `timeout_secs`). The rate limit is raised so that it does not bind: every "
        "simulated machine reaches the provisioner from 127.0.0.1, so the per-client limit (default 6 a "
        "minute) would count the whole fleet as one client, and the global default (60 a minute, burst 10) "
        "would meter the boot tokens out at one a second after the first 10 (refused machines retry as the "
        "refusal script says: after `retry_secs`, doubling, each delay spread over 75–125 %). Mint admission "
        "at its defaults: at most 4 mints at once (`rate_limit.concurrent_mints`), the other key requests "
        "queued in order for up to 20 s (`rate_limit.mint_queue_secs`), then 503 with Retry-After.",
        "",
    ]
    return _storm_table(st, lines, plots_rel, plot=True)


def _storm_table(st: dict, lines: list[str], plots_rel: str, plot: bool) -> list[str]:
    per = st["per"]
    lines += [
        "| N | headscale | all Running: provisioner, s | all Running: pre-made, s | median join: provisioner / "
        "pre-made, s | ratio | mint calls per machine | tokens burnt without a key | stranded: provisioner / "
        "pre-made | provisioner CPU, s | provisioner RSS max / HWM, MiB |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    notes = []
    for n in sorted(per, key=int):
        for outage in (False, True):
            prov, pre = _pair(per[n], outage)
            if prov is None or pre is None:
                continue
            ratio = (prov["median_join_s"] / pre["median_join_s"]) if prov["median_join_s"] and pre["median_join_s"] \
                else None
            hs = f"down {prov['outage_s']:.0f} s" if outage else "up"

            def all_run(r):
                return _opt(r["all_running_s"]) if r["all_running_s"] is not None else \
                    f"— ({r['stranded']} stranded)"

            lines.append(
                f"| {n} | {hs} | {all_run(prov)} | {all_run(pre)} | "
                f"{_opt(prov['median_join_s'], 2)} / {_opt(pre['median_join_s'], 2)} | {_opt(ratio, 2)} | "
                f"{prov['mint_calls_per_machine']:.2f} | {prov['tokens_burnt_without_key']} | "
                f"{prov['stranded']} / {pre['stranded']} | {_opt(prov.get('prov_cpu_s'), 2)} | "
                f"{_opt(prov.get('prov_rss_max_kib'), 1, 1 / MIB)} / {_opt(prov.get('prov_hwm_kib'), 1, 1 / MIB)} |")
            for r in (prov, pre):
                if r["stranded"]:
                    kinds = sorted({_why(d) for d in r["stranded_detail"]})
                    notes.append(f"N={n}, {r['mode']}, headscale {hs}: {r['stranded']} stranded; their tailjoin "
                                 f"said (first {min(r['stranded'], len(r['stranded_detail']))}): {'; '.join(kinds)}")
            if outage:
                notes.append(f"N={n}, headscale down: stopped at {_opt(prov.get('outage_at_s'))} s with the "
                             f"provisioner ({prov.get('asked_at_outage')} of {n} had asked for a key), at "
                             f"{_opt(pre.get('outage_at_s'))} s with pre-made keys ({pre.get('asked_at_outage')} of "
                             f"{n} registrations had started); {prov.get('mint_calls', 0)} mint calls "
                             f"({prov.get('mint_calls_refused', 0)} refused at the proxy while headscale was down) "
                             f"for {prov.get('keys_issued', 0)} keys handed out.")
            if prov.get("mint_ms_median") is not None:
                notes.append(f"N={n}, headscale {hs}: headscale answered a mint in {prov['mint_ms_median'] / 1000:.1f} s "
                             f"(median; max {prov['mint_ms_max'] / 1000:.1f} s; its request log, statuses "
                             f"{prov.get('mint_status')}; 499 = the provisioner had dropped the request).")
            orphans = prov.get("mint_calls", 0) - prov.get("mint_calls_refused", 0) - prov.get("keys_issued", 0)
            if orphans > 0:
                notes.append(f"N={n}, headscale {hs}: {prov.get('mint_calls', 0) - prov.get('mint_calls_refused', 0)} "
                             f"mint calls reached headscale for {prov.get('keys_issued', 0)} keys handed out: {orphans} "
                             "were abandoned by the provisioner or their key never reached the machine (whether "
                             "headscale created those keys is not checked; unused, they expire).")
            if prov.get("keyed_but_stranded"):
                notes.append(f"N={n}, headscale {hs}: {prov['keyed_but_stranded']} machines got a key for their "
                             "token and still did not reach Running (the token is spent).")
            if prov.get("refused_scripts"):
                notes.append(f"N={n}, headscale {hs}: {prov['refused_scripts']} boot scripts were refusals "
                             f"(retried); key requests refused: {prov.get('key_refusals')}")
    lines += [""] + _findings(per)
    lines += [
        "Ratio = median join with the provisioner / median join with pre-made keys (same N, same run); "
        "the provisioner's share of the median join is the difference. Provisioner CPU is utime+stime from "
        "/proc/PID/stat over the whole storm; RSS is VmRSS sampled every 0.5 s (max) and VmHWM at the end. "
        "With headscale down: it is stopped (SIGTERM) once half the machines have asked (provisioner: half "
        "the machines have had a key request decided (issued or refused) in the audit log; pre-made: half "
        "the registrations (`POST /ts2021`) have passed the "
        "proxy), for the given time, and started again on the same ports and database.",
        "",
    ]
    for x in notes:
        lines.append(f"- {x}")
    if notes:
        lines.append("")
    runs = [r for rs in per.values() for r in rs]
    in_use = [r for r in runs if (r.get("key_refusals") or {}).get("boot_token_in_use")]
    if in_use:
        lines += [
            "Why provisioner machines are stranded in a large storm (as observed in the agents' and the "
            "provisioner's logs and headscale's request log): every machine asks for its key within a second or "
            "two, and the provisioner mints each through headscale's API, which answers them one after another "
            "while it is also registering the nodes that already have keys; under that load a "
            "`POST /api/v1/preauthkey` takes seconds. When a machine's request has waited longer than the "
            "agent's HTTP timeout, tailjoin gives up on that request and retries with the same boot "
            "token; while the provisioner still holds the token for the first request, the retry is "
            "refused with 409 (`boot_token_in_use`). Before commit 583b87e tailjoin treated that as final "
            "and the abandoned request kept the token reserved for ever; now an abandoned request gives the "
            "token back and tailjoin retries a 409 with backoff. "
            "Runs with such refusals: " + ", ".join(
                f"N={r['n']}{' (headscale down)' if r.get('outage_s') else ''}: "
                f"{r['key_refusals']['boot_token_in_use']}"
                for r in sorted(in_use, key=lambda r: (r["n"], bool(r.get("outage_s"))))) + ".",
            "",
        ]
    lines += [] if not plot else [
        "Before mint admission control and jittered retries (commit 4c8a8bb), the same bench stranded 132 "
        "of 200 provisioner machines at N=200 (9.55 mint calls per machine; 17 of 200 with headscale down "
        "30 s): 200 concurrent `POST /api/v1/preauthkey` calls slowed headscale past the provisioner's 10 s "
        "mint timeout (502) and past the machines' 30 s request timeout (keys minted for nobody), and every "
        "retry was another mint.",
        "",
    ]
    big = [r for r in runs if r["mode"] == "provisioner" and r.get("stranded")]
    if big:
        lines += [
            "Provisioner machines still stranded in this run: " + ", ".join(
                f"N={r['n']}{' (headscale down)' if r.get('outage_s') else ''}: {r['stranded']}"
                for r in sorted(big, key=lambda r: (r["n"], bool(r.get("outage_s"))))
            ) + " (their last words below).",
            "",
        ]
    used = [r for r in runs if r["mode"] == "premade" and any(
        "already used" in (d.get("summary") or "") for d in r.get("stranded_detail", []))]
    if used:
        lines += [
            "Why pre-made machines are stranded when headscale stops mid-storm (their status files): the "
            "registration reached headscale, which marked the single-use key used, but the answer was lost when "
            "headscale stopped; after the restart tailscaled retries with a *new node key* (until a first login "
            "completes it makes one per attempt), which headscale refuses for a used key: \"authkey already "
            "used\" (tests/real_peers/FINDINGS.md, \"A registration whose answer is lost\"). tailjoin reports the "
            "key rejected (exit 3, not restarted by tailjoin.service); nothing on the machine can recover a spent "
            "single-use key. The provisioner machines' keys are single-use too; see their stranded count in the "
            "same row.",
            "",
        ]
    pm = st.get("per_machine_rss_mib")
    ran = sorted(int(n) for n in per)
    stop = st.get("stopped")
    biggest = max((r.get("machine_rss_kib_sum", 0) for rs in per.values() for r in rs), default=0)
    lines += [f"Memory: one machine (tailscaled + tailjoin) is {pm:.0f} MiB RSS (median per run, largest N); "
              f"the largest fleet held {biggest / MIB / 1024:.1f} GiB RSS in all; the machine has "
              f"{st.get('mem_total_gib', 0):.0f} GiB. Before each N the bench projects per-machine RSS × N × "
              f"{storm_const('MEMORY_HEADROOM', 2)} "
              f"against MemAvailable. Ran N = {', '.join(map(str, ran))}. "
              + (stop + "." if stop else "Every N asked for fit: memory did not stop it.")
              + " All machines, headscale and the provisioner share this machine's 2 cores (with other jobs; "
              "load average in the header), so times at large N include their contention for CPU.", ""] if pm else []
    if plot:
        lines += [f"![storm: time until all Running vs N]({plots_rel}/storm.png)", ""]
    return lines


def _findings(per: dict) -> list[str]:
    out = []
    share = []
    stranded, burnt, total = [], [], 0
    for n in sorted(per, key=int):
        for outage in (False, True):
            prov, pre = _pair(per[n], outage)
            if prov is None or pre is None:
                continue
            total += 1
            tag = f"N={n}{' (headscale down)' if outage else ''}"
            if not outage and prov["median_join_s"] and pre["median_join_s"] and not prov["stranded"]:
                share.append(f"N={n}: {prov['median_join_s'] / pre['median_join_s']:.2f} "
                             f"({prov['median_join_s'] - pre['median_join_s']:+.2f} s of {prov['median_join_s']:.2f} s)")
            if prov["stranded"]:
                stranded.append(f"{tag}: {prov['stranded']} of {n}")
            if prov.get("tokens_burnt_without_key"):
                burnt.append(f"{tag}: {prov['tokens_burnt_without_key']}")
    if share:
        out.append("- The provisioner's share of the median join (ratio to pre-made keys, difference), where every "
                   "machine got Running: " + "; ".join(share) + ".")
    out.append("- Machines stranded with the provisioner (must be 0): "
               + ("; ".join(stranded) + " — **missed**." if stranded else f"0 in all {total} storms — met."))
    out.append("- Tokens burnt without a key (must be 0): "
               + ("; ".join(burnt) + " — **missed**." if burnt else f"0 in all {total} storms — met."))
    out.append("")
    return out


def _why(d: dict) -> str:
    """A stranded machine's last words, without what differs per machine (MAC, token label, port)."""
    text = d.get("summary") or d.get("state") or "?"
    text = re.sub(r"\(netboot token for [0-9a-f:]+ #[0-9a-f]+\)", "(its token)", text)
    text = re.sub(r"https://127\.0\.0\.1:\d+", "https://PROVISIONER", text)
    return text[:170] + ("…" if len(text) > 170 else "")


def storm_const(name: str, default):
    try:
        import storm
        return getattr(storm, name, default)
    except ImportError:
        return default


def storm_bound() -> float:
    return storm_const("BOUND_S", 900.0)


def netboot(res: dict) -> list[str]:
    nb = res["netboot"]
    b = nb["boots"]
    variants = [v for v in ("tailjoin", "tailjoin-tpm", "seed") if v in b]
    lines = [
        "## 7. Netboot: power-on → Running, diskless, under qemu",
        "",
        "One diskless image (`tests/boot/build-image.sh --netboot`: vmlinuz + an initrd carrying the whole "
        "tree as a squashfs under a tmpfs overlay) in two variants, each served by its own `tailjoin-provisioner` "
        "netboot listener, so both take the same path: qemu `-boot n` with Debian's iPXE ROM, DHCP, "
        "`/v1/boot.ipxe`, kernel and initrd over HTTP, the same kernel command line. **tailjoin**: the image's "
        "tailjoin (`kernel_cmdline` key source) fetches a freshly minted key from the provisioner with the "
        "boot token. **seed**: `--seed-autoconnect`, the seed's oneshot (`sleep 2`, `tailscale status | jq`, "
        "`tailscale up --authkey`) with a reusable ephemeral pre-auth key baked into the image; the one "
        "difference. **tailjoin-tpm** (where measured): the tailjoin variant on a machine with a TPM 2.0 "
        "(swtpm behind qemu's `tpm-tis`), its EK enrolled beforehand (`approve MAC --ek`), from a provisioner "
        "with `netboot.tpm = \"required\"`: the agent proves its TPM (challenge, TPM2_ActivateCredential, the "
        "key sealed to it) instead of presenting the boot token. "
        "Every boot is a fresh qemu process (power-on) with its own MAC; the variants alternate.",
        "",
        "Power-on → READY = host time from qemu's start to the guest kernel's banner on the serial console "
        "(`Linux version`, printed at once with `earlycon`) + the guest's CLOCK_MONOTONIC at READY "
        "(tailjoin.service `ActiveEnterTimestampMonotonic`, Type=notify, READY=1 once Running; the oneshot's "
        "`ExecMainExitTimestampMonotonic`). Cross-check: tailscaled's own `→ Running` journal line.",
        "",
        f"- accel: {nb['accel']}; {nb['runs']} boots per variant; kernel command line `{nb['cmdline']}`",
        "- downloaded per boot: " + "; ".join(
            f"{v}: vmlinuz {nb['sizes'][v]['vmlinuz'] / 1e6:.1f} MB, initrd {nb['sizes'][v]['netboot-initrd.img'] / 1e6:.1f} MB"
            for v in variants),
        "",
        "| variant | power-on → READY, s | power-on → kernel banner (host), s | kernel → READY (guest), s | "
        "kernel → tailscaled Running (guest), s |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for v in variants:
        rs = b[v]
        run_line = [r["guest_running_line_s"] for r in rs if r.get("guest_running_line_s") is not None]
        lines.append(
            f"| {v} | {_range([r['power_on_to_ready_s'] for r in rs], 1)} | "
            f"{_range([r['host_to_banner_s'] for r in rs], 1)} | {_range([r['guest_ready_s'] for r in rs], 2)} | "
            f"{_range(run_line, 2) if run_line else '—'} |")
    t = med([r["power_on_to_ready_s"] for r in b["tailjoin"]])
    s_ = med([r["power_on_to_ready_s"] for r in b["seed"]])
    g_t = med([r["guest_ready_s"] for r in b["tailjoin"]])
    g_s = med([r["guest_ready_s"] for r in b["seed"]])
    lines += [
        "",
        f"Ratio tailjoin / seed, power-on → READY (medians): **{t / s_:.3f}** ({t - s_:+.1f} s); "
        f"kernel → READY alone: {g_t / g_s:.3f} ({g_t - g_s:+.2f} s). "
        "Median (min–max).",
        "",
    ]
    if "tailjoin-tpm" in b:
        p_ = med([r["power_on_to_ready_s"] for r in b["tailjoin-tpm"]])
        g_p = med([r["guest_ready_s"] for r in b["tailjoin-tpm"]])
        lines += [
            f"Ratio tailjoin-tpm / tailjoin, power-on → READY (medians): **{p_ / t:.3f}** ({p_ - t:+.1f} s; "
            f"target ≤ 1.05); kernel → READY alone: {g_p / g_t:.3f} ({g_p - g_t:+.2f} s): the added cost of the "
            f"TPM round trip. {nb.get('tpm_issued', '?')} of {len(b['tailjoin-tpm'])} TPM boots got their key "
            "as `tpm_enrolled` in the provisioner's audit.",
            "",
        ]
    tj = [r["power_on_to_ready_s"] for r in b["tailjoin"]]
    sd = [r["power_on_to_ready_s"] for r in b["seed"]]
    if min(tj) <= max(sd) and min(sd) <= max(tj):
        lines += [
            "The two ranges overlap: on this host (TCG, 2 cores shared with other jobs; the load average is in the "
            "header) the run-to-run spread of one variant is larger than the difference between the variants, so "
            "this ratio does not separate them. Each boot's guest-side times are in results.json.",
            "",
        ]
    return lines
