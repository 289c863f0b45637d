#!/usr/bin/env bash
# The version matrix (not part of CI, which runs the pinned versions only): builds each
# tailscale/headscale combination from source through the Go module proxy and runs the
# real-peer scenarios against it, then writes docs/VERSION-MATRIX.md.
#
#   tests/matrix.sh                                 the combinations below
#   tests/matrix.sh v1.102.5/v0.29.0 ...            TAILSCALE/HEADSCALE pairs of your choice
#   TAILJOIN_MATRIX_TESTS="test_agent_scenarios.py" tests/matrix.sh    other test files
#
# A combination that needs a newer Go than the machine's is built with GOTOOLCHAIN=go1.27.3
# when its name ends in +go1.27.3 (the Go module proxy serves that toolchain).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
# shellcheck source=lib/ensure-deps.sh
. tests/lib/ensure-deps.sh
# shellcheck source=peers/versions.env
. tests/peers/versions.env
pinned="$TAILSCALE_VERSION/$HEADSCALE_VERSION"
combos=("$@")
[ ${#combos[@]} -gt 0 ] || combos=("$pinned" "v1.102.5/$HEADSCALE_VERSION" "$TAILSCALE_VERSION/v0.29.1" "v1.104.7/$HEADSCALE_VERSION+go1.27.3")
tests=${TAILJOIN_MATRIX_TESTS:-test_agent_scenarios.py test_prefs_rejoin.py test_blocking_reads.py test_minting.py test_provisioner.py test_netboot_provisioner.py test_http_key_source.py}
(cd agent && cargo build --locked --release >&2)
export TAILJOIN_BIN=$root/agent/target/release/tailjoin
export TAILJOIN_PROVISIONER_BIN=$root/agent/target/release/tailjoin-provisioner
out=$(mktemp -d)
results=$out/results.jsonl
for combo in "${combos[@]}"; do
  toolchain=""
  case $combo in *+go1.27.3) toolchain=go1.27.3; combo=${combo%+go1.27.3} ;; esac
  ts=${combo%/*} hs=${combo#*/}
  echo "==> tailscale $ts, headscale $hs${toolchain:+ (GOTOOLCHAIN=$toolchain)}" >&2
  if ! bin=$(env TAILJOIN_TAILSCALE_VERSION="$ts" TAILJOIN_HEADSCALE_VERSION="$hs" ${toolchain:+GOTOOLCHAIN=$toolchain} \
      nice -n 10 tests/peers/build.sh 2>"$out/build-$ts-$hs.log" | tail -n1); then
    printf '{"tailscale":"%s","headscale":"%s","toolchain":"%s","build":"failed","detail":%s}\n' "$ts" "$hs" "$toolchain" \
      "$(tail -n 5 "$out/build-$ts-$hs.log" | python3 -c 'import json,sys; print(json.dumps(sys.stdin.read()))')" >>"$results"
    continue
  fi
  for f in $tests; do
    log=$out/$ts-$hs-$f.log
    (cd tests/real_peers && TAILJOIN_PEERS_BIN=$bin python3 -m pytest -q -p no:cacheprovider "$f" >"$log" 2>&1) || true
    python3 - "$log" "$ts" "$hs" "$toolchain" "$f" >>"$results" <<'PY'
import json, re, sys
log, ts, hs, tc, f = sys.argv[1:]
text = open(log, errors="replace").read()
count = lambda w: sum(int(n) for n in re.findall(rf"(\d+) {w}", text.splitlines()[-1] if text.strip() else ""))
failed = re.findall(r"^FAILED (\S+)", text, re.M) + re.findall(r"^ERROR (\S+)", text, re.M)
print(json.dumps({"tailscale": ts, "headscale": hs, "toolchain": tc, "file": f, "build": "ok",
                  "passed": count("passed"), "failed": count("failed") + count("error"), "failures": failed}))
PY
    tail -n1 "$log" >&2
  done
done
# TAILJOIN_MATRIX_MERGE=FILE: earlier results (JSON lines) to render together with this run's.
if [ -n "${TAILJOIN_MATRIX_MERGE:-}" ]; then
  cat "$TAILJOIN_MATRIX_MERGE" "$results" >"$out/merged.jsonl"
  results=$out/merged.jsonl
fi
python3 tests/matrix_report.py "$results" "tests/matrix.sh${*:+ $*}" >docs/VERSION-MATRIX.md
echo "wrote docs/VERSION-MATRIX.md (logs in $out)" >&2
