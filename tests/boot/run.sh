#!/usr/bin/env bash
# Runs the boot test: builds (or reuses) the Debian image and boots it with qemu once per
# scenario against headscale on the host's loopback (test_boot.py), then the diskless netboot:
# no disk, Debian's iPXE ROM, boot script and per-boot token from the real provisioner
# (test_netboot.py, scenario netboot), and the same with a TPM (swtpm) the provisioner requires
# (test_netboot_tpm.py, scenario netboot-tpm). Needs root (debootstrap).
#
#   tests/boot/run.sh [pytest args]      e.g. -k normal, or TAILJOIN_BOOT_SCENARIOS=normal
#
#   TAILJOIN_BIN        the agent binary        [agent/target/release/tailjoin, built if missing]
#   TAILJOIN_PEERS_BIN  tailscaled/tailscale/headscale directory [tests/peers/build.sh]
#   TAILJOIN_CACHE      cache root [~/.cache/tailjoin]; the image lives in boot/
#   TAILJOIN_BOOT_OUT   keep each boot's console, results and measurements.json here
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
die() { echo "tests/boot/run.sh: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "the boot test needs root (debootstrap, chroot, root-owned files in the image); run it with sudo"
# shellcheck source=deps.sh
. "$here/deps.sh"
tj_boot_need debootstrap:debootstrap mkfs.ext4:e2fsprogs qemu-system-x86_64:qemu-system-x86 python3:python3 \
  mksquashfs:squashfs-tools cpio:cpio swtpm:swtpm tpm2_createek:tpm2-tools \
  || die "cannot get the tools the boot test needs (see above)"
python3 -c 'import pytest' 2>/dev/null || die "pytest is missing (tests/lib/ensure-deps.sh installs it)"

if [ -z "${TAILJOIN_BIN:-}" ]; then
  TAILJOIN_BIN=$root/agent/target/release/tailjoin
  [ -x "$TAILJOIN_BIN" ] || (cd "$root/agent" && cargo build --locked --release) || die "cannot build the agent"
fi
[ -x "$TAILJOIN_BIN" ] || die "TAILJOIN_BIN=$TAILJOIN_BIN is not an executable"
# The provisioner is its own program, built beside the agent by the same cargo build.
TAILJOIN_PROVISIONER_BIN=${TAILJOIN_PROVISIONER_BIN:-$(dirname "$TAILJOIN_BIN")/tailjoin-provisioner}
[ -x "$TAILJOIN_PROVISIONER_BIN" ] || die "TAILJOIN_PROVISIONER_BIN=$TAILJOIN_PROVISIONER_BIN is not an executable (cd agent && cargo build --release builds it)"
if [ -z "${TAILJOIN_PEERS_BIN:-}" ]; then
  TAILJOIN_PEERS_BIN=$("$root/tests/peers/build.sh" | tail -n1) || die "tests/peers/build.sh failed"
fi
export TAILJOIN_BIN TAILJOIN_PROVISIONER_BIN TAILJOIN_PEERS_BIN

cd "$here"
exec python3 -m pytest -v -s -p no:cacheprovider test_boot.py test_netboot.py test_netboot_tpm.py test_demo_vm.py "$@"
