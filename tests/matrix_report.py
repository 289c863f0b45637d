"""Renders tests/matrix.sh's results (JSON lines) as docs/VERSION-MATRIX.md."""

import datetime
import json
import sys

rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
command = sys.argv[2]
combos: dict = {}
for r in rows:
    combos.setdefault((r["tailscale"], r["headscale"], r.get("toolchain", "")), []).append(r)
out = ["# Version matrix", "",
       f"The real-peer scenarios against each tailscale/headscale combination, built from source "
       f"through the Go module proxy. Written by `{command}` on {datetime.date.today()}; CI runs the "
       "pinned pair only (tests/peers/versions.env). What differs between versions is in "
       "tests/real_peers/FINDINGS.md (Version differences).", "",
       "| tailscale | headscale | Go | test file | passed | failed | failures |", "|---|---|---|---|---:|---:|---|"]
for (ts, hs, tc), rs in combos.items():
    for r in rs:
        if r["build"] != "ok":
            out.append(f"| {ts} | {hs} | {tc or 'machine'} | (build) | | | build failed: {r['detail'].strip().splitlines()[-1] if r['detail'].strip() else ''} |")
            continue
        out.append(f"| {ts} | {hs} | {tc or 'machine'} | `{r['file']}` | {r['passed']} | {r['failed']} | "
                   f"{', '.join(f.split('::')[-1] for f in r['failures']) or '—'} |")
print("\n".join(out))
