#!/usr/bin/env bash
# Runs every test: the agent's lints and unit tests, then the real-peer suite against
# tailscaled and headscale built from pinned sources. .ci/run calls exactly this.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

# shellcheck source=lib/ensure-deps.sh
. tests/lib/ensure-deps.sh

step() { printf '\n==> %s\n' "$*"; }

step "agent: format, lints, unit tests"
# network-tcti: the agent reaches the tests' swtpm over TCP (the release build reads device: only).
(cd agent && cargo fmt --check && cargo clippy --locked --workspace --all-targets -- -D warnings \
  && cargo clippy --locked --workspace --all-targets --all-features -- -D warnings \
  && cargo test --locked --workspace --features tailjoin/network-tcti)

step "agent: release build"
(cd agent && cargo build --locked --release)
export TAILJOIN_BIN=$root/agent/target/release/tailjoin
export TAILJOIN_PROVISIONER_BIN=$root/agent/target/release/tailjoin-provisioner

step "agent binary: no provisioner code, no database driver (the netbooted machines run it)"
tests/agent-binary-check.sh "$TAILJOIN_BIN" "$TAILJOIN_PROVISIONER_BIN"

step "real peers: build pinned tailscaled, tailscale, headscale (cached)"
TAILJOIN_PEERS_BIN=$(tests/peers/build.sh | tail -n1)
export TAILJOIN_PEERS_BIN

step "real-peer suite"
(cd tests/real_peers && python3 -m pytest -v -p no:cacheprovider)

step "nix: parse and lint every .nix file; evaluate the module when a nixpkgs lib is at hand"
# No registry carries nixpkgs' lib: the evaluation tests need a checkout of
# nix-community/nixpkgs.lib at $NIXPKGS_LIB, by default ~/.cache/tailjoin/nixpkgs-lib. Without
# it check.sh says loudly that they did not run, and fails when CI=true (as CI sets it).
tests/nix/check.sh

step "docs: every command in the README is exercised (the demo and nix flake init run here)"
python3 tests/docs/check_readme.py

step "fuzz: a short cargo-fuzz run of every parser that reads untrusted bytes (docs/FUZZING.md)"
tests/fuzz.sh --seconds "${TAILJOIN_FUZZ_SECONDS:-15}"

step "boot test: Debian 12 (systemd 252) under qemu joins headscale on the host; a diskless machine PXE-boots from the provisioner"
tests/boot/run.sh
