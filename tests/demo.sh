#!/usr/bin/env bash
# The demo: builds what it needs, starts a local headscale and a tailscaled on loopback, and
# shows tailjoin joining the node, ending with `tailjoin status`, the health reports that reached a
# local webhook receiver and `curl /healthz`; then a netboot machine gets a
# freshly minted key from `tailjoin provision` via its kernel command line, and an unlisted
# machine and a replayed boot token are refused. Everything stays on 127.0.0.1
# and in a temporary directory that is removed afterwards.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
# shellcheck source=lib/ensure-deps.sh
. tests/lib/ensure-deps.sh

echo "==> building the agent (cargo build --release)"
(cd agent && cargo build --locked --release --quiet)
export TAILJOIN_BIN=$root/agent/target/release/tailjoin

echo "==> building the pinned tailscaled, tailscale and headscale (first run only)"
TAILJOIN_PEERS_BIN=$(tests/peers/build.sh | tail -n1)
export TAILJOIN_PEERS_BIN

exec python3 tests/real_peers/demo.py
