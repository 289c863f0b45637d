#!/usr/bin/env bash
# Fuzzes the parsers that read untrusted bytes (agent/fuzz: the IPN bus line, tailscaled's
# status JSON, the config loader and validator, the kernel command line, the HTTP key response,
# the status file) with cargo-fuzz (libFuzzer), from the committed seeds in agent/fuzz/seeds/.
#
#   tests/fuzz.sh                     30 s per target (the smoke run)
#   tests/fuzz.sh --seconds 600       longer
#   tests/fuzz.sh --runs 2000000      a fixed number of executions per target
#   tests/fuzz.sh --targets config,kernel_cmdline
#
# Needs the nightly Rust toolchain (rustup's; this project's machines have it) and cargo-fuzz,
# which it installs from crates.io into ${TAILJOIN_CACHE:-~/.cache/tailjoin}/tools if missing.
# Fails on any crash, timeout or out-of-memory, naming the target and the reproducer.
# Prints one line per target: executions, seconds, corpus size.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
die() { echo "tests/fuzz.sh: $*" >&2; exit 1; }
seconds=30 runs="" targets=""
while [ $# -gt 0 ]; do
  case $1 in
    --seconds) seconds=$2; shift 2 ;;
    --runs) runs=$2; shift 2 ;;
    --targets) targets=${2//,/ }; shift 2 ;;
    -h|--help) sed -n '2,/^set -e/p' "$0" | sed 's/^# \{0,1\}//;/^set -e/d'; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
done
for d in "$HOME/.cargo/bin"; do [ -d "$d" ] && export PATH="$d:$PATH"; done
command -v rustup >/dev/null 2>&1 || die "rustup is not installed: cargo-fuzz needs a nightly toolchain from rustup"
rustup toolchain list | grep -q '^nightly' \
  || die "no nightly Rust toolchain (cargo-fuzz needs one): rustup toolchain install nightly"
cache=${TAILJOIN_CACHE:-$HOME/.cache/tailjoin}
tools=$cache/tools
export PATH="$tools/bin:$PATH"
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "installing cargo-fuzz from crates.io into $tools" >&2
  cargo install --quiet --locked --root "$tools" cargo-fuzz >&2 || die "cargo install cargo-fuzz failed"
fi
cd "$root/agent"
[ -n "$targets" ] || targets=$(cargo +nightly fuzz list)
work=$cache/fuzz
mkdir -p "$work"
export CARGO_TARGET_DIR=$cache/fuzz-target
status=0
for t in $targets; do
  corpus=$work/corpus/$t
  mkdir -p "$corpus" "$work/artifacts/$t"
  cp -n fuzz/seeds/"$t"/* "$corpus"/ 2>/dev/null || true
  limit=(-max_total_time="$seconds")
  [ -z "$runs" ] || limit=(-runs="$runs")
  log=$work/$t.log
  t0=$(date +%s)
  if cargo +nightly fuzz run --release "$t" "$corpus" -- "${limit[@]}" -timeout=5 -rss_limit_mb=512 \
      -artifact_prefix="$work/artifacts/$t/" -print_final_stats=1 >"$log" 2>&1; then
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n1)
    echo "fuzz $t: ok, ${execs:-?} executions in $(( $(date +%s) - t0 )) s, corpus $(ls "$corpus" | wc -l)"
  else
    echo "fuzz $t: FAILED (log $log; reproducers in $work/artifacts/$t/)" >&2
    grep -E "ERROR|SUMMARY|panicked|Test unit written" "$log" | head -n 20 >&2 || tail -n 40 "$log" >&2
    status=1
  fi
done
exit $status
