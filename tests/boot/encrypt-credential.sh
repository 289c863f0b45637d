#!/usr/bin/env bash
# Encrypts a credential for an image built with `build-image.sh --encrypted-credential`, as a
# provisioner holding that machine's host key would: plaintext on stdin, the output of
# `systemd-creds encrypt --with-key=host --name=NAME` (base64 text) on stdout.
#
#   tests/boot/encrypt-credential.sh IMAGE_DIR [NAME] <plaintext >ciphertext
#
#   IMAGE_DIR  the directory build-image.sh printed (holds credential.secret, manifest.json)
#   NAME       the credential name sealed into the ciphertext [tailscale-auth-key]; systemd only
#              decrypts it for LoadCredentialEncrypted=NAME
#
# It runs the guest's own systemd-creds (Debian 12, systemd 252) chrooted into the cached base
# tree, in a private mount namespace where a copy of the image's secret is bind-mounted
# read-only at /mnt and SYSTEMD_CREDENTIAL_SECRET points at it. Nothing is written into the base
# tree. Why the chroot: the secret file records the machine id it was made for, and on a machine
# id mismatch systemd-creds deletes it and makes a new one; the host's systemd-creds would
# therefore encrypt with a fresh, useless key. The read-only mount turns that into an error.
# The plaintext is never on a command line.
set -euo pipefail
die() { echo "tests/boot/encrypt-credential.sh: $*" >&2; exit 1; }

[ $# -ge 1 ] && [ $# -le 2 ] || die "usage: encrypt-credential.sh IMAGE_DIR [NAME] <plaintext >ciphertext"
image=$1 name=${2:-tailscale-auth-key}
[ "$(id -u)" = 0 ] || die "needs root (unshare --mount, chroot)"
[ -s "$image/credential.secret" ] || die "$image has no credential.secret; build it with build-image.sh --encrypted-credential"
rootfs=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["base_rootfs"])' "$image/manifest.json") \
  || die "cannot read base_rootfs from $image/manifest.json"
[ -x "$rootfs/usr/bin/systemd-creds" ] || die "no systemd-creds in the base tree $rootfs"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
chmod 0700 "$tmp"
install -m 0400 "$image/credential.secret" "$tmp/credential.secret"

# shellcheck disable=SC2016
unshare --mount --propagation private -- sh -euc '
  mount --bind "$1" "$2/mnt"
  mount -o remount,bind,ro "$2/mnt"
  SYSTEMD_CREDENTIAL_SECRET=/mnt/credential.secret exec chroot "$2" \
    systemd-creds encrypt --with-key=host --name="$3" - -
' sh "$tmp" "$rootfs" "$name" 2>"$tmp/stderr" \
  || die "systemd-creds encrypt failed: $(cat "$tmp/stderr")"
# systemd-creds always warns that the secret is not on encrypted media; pass on anything else.
grep -v "not located on encrypted media" "$tmp/stderr" >&2 || true
