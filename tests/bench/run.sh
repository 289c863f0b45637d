#!/usr/bin/env bash
# The bench command (not part of CI): installs what it needs, builds tailjoin, the pinned peers
# and containerboot, runs every measurement on loopback and writes docs/BENCHMARKS.md,
# docs/bench/results.json and docs/bench/*.png.
#
#   tests/bench/run.sh                    # the full bench, 10 runs per figure (about 40 min)
#   tests/bench/run.sh --runs 15          # more runs
#   tests/bench/run.sh --quick            # smoke run (a few minutes), written to a temp dir
#   tests/bench/run.sh --sections fleet   # re-measure some sections, keep the others
#   tests/bench/run.sh --render-only      # rewrite the Markdown and plots from results.json
#   tests/bench/run.sh --help             # every option
#
# TAILJOIN_BIN=/path/to/tailjoin uses that binary instead of building agent/ with cargo.
# Everything runs at nice 10, so that the bench yields to other work on the machine.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"

case " $* " in
  *" -h "* | *" --help "*) exec python3 tests/bench/bench.py --help ;;
esac

command="${TAILJOIN_BIN:+TAILJOIN_BIN=$TAILJOIN_BIN }tests/bench/run.sh${*:+$(printf ' %q' "$@")}"

# A Python that can import matplotlib: the one on PATH, or Debian's (where python3-matplotlib goes).
find_plot_python() {
  local py
  for py in python3 /usr/bin/python3; do
    if command -v "$py" >/dev/null 2>&1 && "$py" -c 'import matplotlib' 2>/dev/null; then
      command -v "$py"
      return 0
    fi
  done
  return 1
}

case " $* " in
  *" --render-only "*) # no measurement, so no builds: only the plots need something installed
    TAILJOIN_BENCH_PLOT_PYTHON=$(find_plot_python) || {
      echo "tests/bench/run.sh: --render-only needs matplotlib; run the bench once, or apt-get install python3-matplotlib" >&2
      exit 1
    }
    export TAILJOIN_BENCH_PLOT_PYTHON
    exec python3 tests/bench/bench.py "$@" ;;
esac

# -- dependencies: Go, Rust, Python (tests/lib/ensure-deps.sh), plus jq for the baseline scripts,
#    binutils' strip for the size section and matplotlib for the plots.
# shellcheck source=../lib/ensure-deps.sh
. tests/lib/ensure-deps.sh
command -v jq >/dev/null 2>&1 || tj_apt jq
command -v strip >/dev/null 2>&1 || tj_apt binutils
if ! plot_python=$(find_plot_python); then
  tj_apt python3-matplotlib
  plot_python=$(find_plot_python) || tj_die "python3-matplotlib is installed but cannot be imported"
fi
export TAILJOIN_BENCH_PLOT_PYTHON=$plot_python

# -- binaries
if [ -n "${TAILJOIN_BIN:-}" ]; then
  [ -x "$TAILJOIN_BIN" ] || tj_die "TAILJOIN_BIN=$TAILJOIN_BIN is not an executable"
else
  (cd agent && cargo build --locked --release --quiet)
  export TAILJOIN_BIN=$root/agent/target/release/tailjoin
fi
export TAILJOIN_PROVISIONER_BIN=${TAILJOIN_PROVISIONER_BIN:-$(dirname "$TAILJOIN_BIN")/tailjoin-provisioner}
[ -x "$TAILJOIN_PROVISIONER_BIN" ] || tj_die "TAILJOIN_PROVISIONER_BIN=$TAILJOIN_PROVISIONER_BIN is not an executable"
TAILJOIN_PEERS_BIN=$(tests/peers/build.sh | tail -n1)
TAILJOIN_CONTAINERBOOT_BIN=$(tests/bench/build-containerboot.sh | tail -n1)
export TAILJOIN_PEERS_BIN TAILJOIN_CONTAINERBOOT_BIN
export TAILJOIN_BENCH_COMMAND=$command

exec nice -n 10 python3 tests/bench/bench.py "$@"
