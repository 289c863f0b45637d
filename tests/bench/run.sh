#!/usr/bin/env bash
# The bench command: builds what it needs and writes docs/BENCHMARKS.md. Not part of CI.
#   tests/bench/run.sh [--runs N]
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"
# shellcheck source=../lib/ensure-deps.sh
. tests/lib/ensure-deps.sh
(cd agent && cargo build --locked --release --quiet)
export TAILJOIN_BIN=$root/agent/target/release/tailjoin
TAILJOIN_PEERS_BIN=$(tests/peers/build.sh | tail -n1)
export TAILJOIN_PEERS_BIN
exec python3 tests/bench/join_latency.py "$@"
