#!/usr/bin/env bash
# The demo: builds what it needs, starts a local headscale and a tailscaled on loopback, and
# shows tailjoin joining the node, ending with `tailjoin status`, the health reports that reached a
# local webhook receiver and `curl /healthz`; then a netboot machine gets a
# freshly minted key from `tailjoin-provisioner` via its kernel command line, and an unlisted
# machine and a replayed boot token are refused; then a machine with a TPM (swtpm) is enrolled
# (pending, approve) and gets a key sealed to its TPM, which another TPM cannot get. Everything
# stays on 127.0.0.1 and in a temporary directory that is removed afterwards.
#
#   tests/demo.sh        the demo above
#   tests/demo.sh --vm   a real machine instead: the boot test's Debian 12 image boots under qemu
#                        against the demo's headscale and joins, its key handed over as a systemd
#                        credential (qemu fw_cfg); see tests/boot/demo_vm.py. Needs root
#                        (debootstrap on the first run, minutes) and takes one qemu boot
#                        (about 30-90 s under TCG)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
vm=0
case ${1:-} in
  "") ;;
  --vm) vm=1 ;;
  -h|--help) sed -n '2,/^set -e/p' "$0" | sed 's/^# \{0,1\}//;/^set -e/d'; exit 0 ;;
  *) echo "tests/demo.sh: unknown argument $1 (use --vm, or none)" >&2; exit 2 ;;
esac
if [ $vm = 1 ] && [ "$(id -u)" != 0 ]; then
  echo "tests/demo.sh --vm builds a Debian image with debootstrap and needs root: sudo tests/demo.sh --vm" >&2
  exit 2
fi
# shellcheck source=lib/ensure-deps.sh
. tests/lib/ensure-deps.sh

echo "==> building the agent (cargo build --release)"
(cd agent && cargo build --locked --release --quiet)
export TAILJOIN_BIN=$root/agent/target/release/tailjoin
export TAILJOIN_PROVISIONER_BIN=$root/agent/target/release/tailjoin-provisioner

echo "==> building the pinned tailscaled, tailscale and headscale (first run only)"
TAILJOIN_PEERS_BIN=$(tests/peers/build.sh | tail -n1)
export TAILJOIN_PEERS_BIN

if [ $vm = 1 ]; then
  # shellcheck source=boot/deps.sh
  . tests/boot/deps.sh
  tj_boot_need debootstrap:debootstrap mkfs.ext4:e2fsprogs qemu-system-x86_64:qemu-system-x86 \
    || { echo "tests/demo.sh --vm: cannot get the tools it needs (see above)" >&2; exit 1; }
  exec python3 tests/boot/demo_vm.py
fi
exec python3 tests/real_peers/demo.py
