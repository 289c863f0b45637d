#!/usr/bin/env bash
# Builds the boot-test disk image: a Debian bookworm root file system with systemd, the
# Go-built tailscaled/tailscale as a service and tailjoin with the unit rendered from
# modules/tailjoin-unit.json. The auth key is NOT in the image: it is handed to the guest
# at boot as a systemd credential (see run_boot.py).
#
#   tests/boot/build-image.sh [--config FILE] [--agent BIN] [--peers DIR] [--encrypted-credential]
#                             [--provisioner-ca PEM [--netboot [--seed-autoconnect KEYFILE]]]
#                             [--push-credential NAME]
#
#   --config FILE  tailjoin's JSON config for the guest [default: login server http://10.0.2.2:8080]
#   --agent BIN    the tailjoin binary      [default: $TAILJOIN_BIN, else agent/target/release/tailjoin]
#   --peers DIR    tailscaled + tailscale   [default: $TAILJOIN_PEERS_BIN, else tests/peers/build.sh]
#   --encrypted-credential
#                  the unit takes the key with LoadCredentialEncrypted= instead of LoadCredential=,
#                  and the image gets a host credential secret (/var/lib/systemd/credential.secret,
#                  made by the guest's own `systemd-creds setup`); a copy of it is kept beside the
#                  image for encrypt-credential.sh
#   --provisioner-ca PEM
#                  the netboot image: no key at all, the config's key source is kernel_cmdline
#                  (tailjoin.key_url= and tailjoin.boot_token= on the kernel command line), so the
#                  unit gets no credential directive but ProcSubset=all (what the NixOS module
#                  sets for that source: ProcSubset=pid hides /proc/cmdline and /proc/sys); PEM,
#                  the provisioner's CA certificate (public), goes to /etc/tailjoin/prov-ca.pem
#   --netboot      with --provisioner-ca: the diskless image. No disk.img; instead
#                  netboot-initrd.img, a busybox initrd that carries the whole tree as a squashfs
#                  and mounts it under a tmpfs overlay (netboot/make-initrd.sh), so the machine
#                  boots from the network alone and keeps nothing between boots
#   --seed-autoconnect KEYFILE
#                  with --netboot: the benchmark's baseline. The same diskless image, but instead of
#                  tailjoin the seed's classic oneshot (tailscale-autoconnect.service: sleep 2,
#                  `tailscale status -json | jq`, `tailscale up -authkey KEY`) with the key from
#                  KEYFILE baked into the image (/etc/tailscale/authkey), as the seed did
#   --push-credential NAME
#                  a push reporter's URL (it carries a token) comes as the system credential NAME:
#                  the unit gets a second LoadCredential=NAME and ProcSubset=all (what the NixOS
#                  module sets when push reporters are on: ProcSubset=pid hides /proc/sys, where
#                  the report's hostname and boot id are read); the config must name NAME
#
# Prints the image directory on its last line: disk.img (raw ext4, boot it with -snapshot),
# vmlinuz, initrd.img, manifest.json (and credential.secret with --encrypted-credential); with
# --netboot vmlinuz, netboot-initrd.img, netboot.json and manifest.json.
#
# Two cached stages under ${TAILJOIN_CACHE:-~/.cache/tailjoin}/boot/:
#   base-<hash>/     debootstrap tree + kernel + initramfs; the hash covers the suite, mirror,
#                    package list and everything in tests/boot/guest/base/ (minutes, once)
#   images/<hash>/   the tree hard-linked, the peers, the agent, its config and units added,
#                    then `mkfs.ext4 -d` (no mounting); the hash covers every input (seconds)
# Needs root (debootstrap, chroot, file ownership). Missing tools are installed with apt-get.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
cache=${TAILJOIN_CACHE:-$HOME/.cache/tailjoin}/boot

die() { echo "tests/boot/build-image.sh: $*" >&2; exit 1; }
log() { echo "build-image: $*" >&2; }

config="" agent=${TAILJOIN_BIN:-} peers=${TAILJOIN_PEERS_BIN:-} encrypted=0 prov_ca="" push_cred="" netboot=0 seed_key=""
while [ $# -gt 0 ]; do
  case $1 in
    --config) config=$2; shift 2 ;;
    --agent) agent=$2; shift 2 ;;
    --peers) peers=$2; shift 2 ;;
    --encrypted-credential) encrypted=1; shift ;;
    --provisioner-ca) prov_ca=$2; shift 2 ;;
    --push-credential) push_cred=$2; shift 2 ;;
    --netboot) netboot=1; shift ;;
    --seed-autoconnect) seed_key=$2; shift 2 ;;
    -h|--help) sed -n '2,/^set -e/p' "$0" | sed 's/^# \{0,1\}//;/^set -e/d'; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
done

[ "$(id -u)" = 0 ] || die "needs root (debootstrap, chroot and root-owned files in the image); run it with sudo"

# ------------------------------------------------------------------ tools
# shellcheck source=deps.sh
. "$here/deps.sh"
tj_boot_need debootstrap:debootstrap mkfs.ext4:e2fsprogs python3:python3 sha256sum:coreutils

# ------------------------------------------------------------------ inputs
[ -n "$agent" ] || agent=$root/agent/target/release/tailjoin
[ -x "$agent" ] || die "no tailjoin binary at $agent; build it (cd agent && cargo build --release) or set TAILJOIN_BIN"
if [ -z "$peers" ]; then
  peers=$("$root/tests/peers/build.sh" | tail -n1) || die "tests/peers/build.sh failed; set TAILJOIN_PEERS_BIN"
fi
for b in tailscaled tailscale; do
  [ -x "$peers/$b" ] || die "no $b in $peers (TAILJOIN_PEERS_BIN); run tests/peers/build.sh"
done

suite=bookworm
# The mirror apt on this machine uses (deb822 or one-line sources), else Debian's CDN.
mirror=${TAILJOIN_DEBIAN_MIRROR:-}
if [ -z "$mirror" ]; then
  mirror=$(sed -n 's/^URIs:[[:space:]]*\(\S*debian\/\?\)$/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n1)
  [ -n "$mirror" ] || mirror=$(awk '$1=="deb" && $2 ~ /debian\/?$/ {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
  [ -n "$mirror" ] || mirror=http://deb.debian.org/debian
fi
# minbase + what a booting systemd machine needs. initramfs-tools builds the initrd (the
# Debian kernel has virtio_blk and ext4 as modules); kmod loads modules; iproute2 for
# debugging; ca-certificates because tailscaled expects a trust store; jq for the seed's classic
# autoconnect oneshot (the netboot benchmark's baseline, --seed-autoconnect); tpm2-tss's
# libraries, which the agent links (its TPM-proven key requests; the device TCTI is dlopened).
packages=systemd,systemd-sysv,dbus,udev,kmod,iproute2,linux-image-amd64,initramfs-tools,ca-certificates,jq
packages=$packages,libtss2-esys-3.0.2-0,libtss2-mu0,libtss2-sys1,libtss2-tctildr0,libtss2-tcti-device0

hash_files() { # stable hash of the named files/dirs (paths relative to $here)
  (cd "$here" && find "$@" -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum) | sha256sum | cut -c1-16
}
base_key=$( { echo "v1 $suite $mirror $packages"; sed -n '/^# >>> base stage/,/^# <<< base stage/p' "$0"; hash_files guest/base; } | sha256sum | cut -c1-16)
base=$cache/base-$base_key

# ------------------------------------------------------------------ base stage
# >>> base stage (this block is part of the base hash)
build_base() {
  local tmp=$cache/.base-$base_key.tmp.$$ t0 t1 rootfs
  rm -rf "$tmp"; mkdir -p "$tmp"
  rootfs=$tmp/rootfs
  log "debootstrap $suite from $mirror into $rootfs (first run only; takes minutes)"
  t0=$(date +%s)
  debootstrap --variant=minbase --include="$packages" "$suite" "$rootfs" "$mirror" >"$tmp/debootstrap.log" 2>&1 \
    || { tail -n 30 "$tmp/debootstrap.log" >&2; die "debootstrap failed (log: $tmp/debootstrap.log)"; }
  t1=$(date +%s)
  echo $((t1 - t0)) >"$tmp/debootstrap.seconds"

  # Files that go into every image (network, journald, initramfs module list, …).
  cp -a "$here/guest/base/." "$rootfs/"
  chown -R 0:0 "$rootfs/etc/systemd" "$rootfs/etc/initramfs-tools"
  echo bootvm >"$rootfs/etc/hostname"
  printf '127.0.0.1\tlocalhost\n127.0.1.1\tbootvm\n' >"$rootfs/etc/hosts"
  : >"$rootfs/etc/fstab"
  # A fixed machine id: no first-boot logic, and every boot of the snapshot starts equal.
  [ -s "$rootfs/etc/machine-id" ] || chroot "$rootfs" systemd-machine-id-setup >/dev/null
  chroot "$rootfs" systemctl enable systemd-networkd.service systemd-networkd-wait-online.service >/dev/null 2>&1
  # Nothing periodic or interactive that would compete with the test for a slow TCG CPU.
  chroot "$rootfs" systemctl disable apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer \
    fstrim.timer getty@tty1.service >/dev/null 2>&1 || true
  chroot "$rootfs" systemctl mask getty@tty1.service serial-getty@ttyS0.service serial-getty@ttyS1.service \
    systemd-firstboot.service >/dev/null 2>&1 || true

  # Drop what a test VM never uses (docs, locales, drivers for real hardware).
  rm -rf "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/locale/* \
    "$rootfs"/usr/share/info/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb \
    "$rootfs"/var/lib/apt/lists/*_Packages
  local kver
  kver=$(basename "$(ls -d "$rootfs"/lib/modules/* | head -n1)")
  local kd=$rootfs/lib/modules/$kver/kernel
  rm -rf "$kd"/drivers/{gpu,media,infiniband,net/wireless,net/ethernet,staging,isdn,bluetooth,iio,hid,usb,input/touchscreen,scsi,md,mmc,mtd,nfc,platform,hwmon,edac,thunderbolt,video} \
    "$kd"/{sound,net/bluetooth,net/mac80211,net/wireless} "$kd"/fs/{ocfs2,gfs2,nfs,nfsd,ceph,cifs,smb,xfs,btrfs,f2fs,ubifs,jfs,nilfs2,reiserfs}
  chroot "$rootfs" depmod -a "$kver"
  chroot "$rootfs" update-initramfs -u -k "$kver" >"$tmp/initramfs.log" 2>&1 \
    || { tail -n 30 "$tmp/initramfs.log" >&2; die "update-initramfs failed"; }
  cp "$rootfs/boot/vmlinuz-$kver" "$tmp/vmlinuz"
  cp "$rootfs/boot/initrd.img-$kver" "$tmp/initrd.img"
  echo "$kver" >"$tmp/kernel.version"
  chroot "$rootfs" dpkg-query -W -f '${Package} ${Version}\n' >"$tmp/packages.txt"
  chroot "$rootfs" systemctl --version | head -n1 >"$tmp/systemd.version"
  du -sm "$rootfs" | cut -f1 >"$tmp/rootfs.mb"
  echo $(( $(date +%s) - t0 )) >"$tmp/base.seconds"
  rm -rf "$base"
  mv "$tmp" "$base"
  log "base ready in $(cat "$base/base.seconds") s (debootstrap $(cat "$base/debootstrap.seconds") s), tree $(cat "$base/rootfs.mb") MB, $(cat "$base/systemd.version")"
}
# <<< base stage

mkdir -p "$cache"
if [ ! -s "$base/kernel.version" ]; then
  exec 9>"$cache/.base.lock"; flock 9
  [ -s "$base/kernel.version" ] || build_base
  flock -u 9
fi

# ------------------------------------------------------------------ image stage
tmpdir=$(mktemp -d)
trap 'rm -rf "$tmpdir"' EXIT
if [ -z "$config" ]; then
  config=$tmpdir/config.json
  printf '{"login_server":"http://10.0.2.2:8080","auth_key":{"credential":"tailscale-auth-key"},"hostname":"bootvm"}\n' >"$config"
fi
[ -s "$config" ] || die "config $config is empty or missing"
python3 -c 'import json,sys; json.load(open(sys.argv[1]))' "$config" || die "config $config is not JSON"
"$agent" check-config "$config" >/dev/null || die "tailjoin check-config rejects $config"
grep -qE 'tskey-|hskey-|"key"' "$config" && die "config $config seems to carry a key; the key must reach the guest as a credential only"
if [ -n "$prov_ca" ]; then
  [ "$encrypted" = 0 ] || die "--provisioner-ca and --encrypted-credential do not go together"
  grep -q 'BEGIN CERTIFICATE' "$prov_ca" 2>/dev/null || die "--provisioner-ca $prov_ca is not a PEM certificate"
  grep -q 'PRIVATE KEY' "$prov_ca" && die "--provisioner-ca $prov_ca holds a private key; only the CA certificate goes into the image"
  grep -q '"kernel_cmdline"' "$config" || die "--provisioner-ca wants a config whose auth_key is kernel_cmdline"
fi
[ -z "$seed_key" ] || [ "$netboot" = 1 ] || die "--seed-autoconnect goes with --netboot (it is the diskless benchmark's baseline)"
[ -z "$seed_key" ] || [ -s "$seed_key" ] || die "--seed-autoconnect $seed_key: no such key file"
[ "$netboot" = 0 ] || [ -n "$prov_ca" ] || die "--netboot is the keyless image: give --provisioner-ca (and a kernel_cmdline config)"
if [ -n "$push_cred" ]; then
  [ -z "$prov_ca" ] && [ "$encrypted" = 0 ] || die "--push-credential goes with the plain credential image only"
  [[ $push_cred =~ ^[A-Za-z0-9][A-Za-z0-9_.-]*$ ]] && [ "$push_cred" != tailscale-auth-key ] \
    || die "--push-credential $push_cred is not a credential name (or is the key's)"
  python3 -c 'import json, sys
def refs(v):
    if isinstance(v, dict):
        yield v.get("credential")
        for x in v.values(): yield from refs(x)
    elif isinstance(v, list):
        for x in v: yield from refs(x)
sys.exit(sys.argv[2] not in refs(json.load(open(sys.argv[1])).get("health")))' "$config" "$push_cred" \
    || die "--push-credential $push_cred: the config's health section does not name that credential"
fi

# The same renderer tests/nix/check.sh compares the NixOS module's unit against. The credential
# directive is what the NixOS module writes for `authKey.credential = { source = null; }`, or
# with `encrypted = true;` (LoadCredentialEncrypted=, same name, no path).
cred_directive=LoadCredential
[ "$encrypted" = 1 ] && cred_directive=LoadCredentialEncrypted
# With --provisioner-ca (the kernel_cmdline source) no credential at all, and ProcSubset=all as
# the NixOS module sets for that source; render-unit.py appends it after the JSON's
# ProcSubset=pid, and the last assignment wins (the guest checks `systemctl show -p ProcSubset`).
unit_sets=(--set "Service.$cred_directive=tailscale-auth-key")
[ -n "$prov_ca" ] && unit_sets=(--set "Service.ProcSubset=all")
# The kernel_cmdline source may prove the machine's TPM: the NixOS module then sets
# PrivateDevices=false (which would hide /dev/tpmrm0) and DeviceAllow=/dev/tpmrm0 rw
# (DevicePolicy=closed stays); appended after the JSON's PrivateDevices=true, the last one wins.
[ -n "$prov_ca" ] && unit_sets+=(--set "Service.PrivateDevices=false" --set "Service.DeviceAllow=/dev/tpmrm0 rw")
# With --push-credential a second LoadCredential= line (render-unit.py makes a repeated key a
# list, one line each, in the order given) and ProcSubset=all, appended like the above.
[ -n "$push_cred" ] && unit_sets+=(--set "Service.LoadCredential=$push_cred" --set "Service.ProcSubset=all")
python3 "$here/../lib/render-unit.py" "$here/../../modules/tailjoin-unit.json" \
  --set "Service.ExecStart=/usr/local/bin/tailjoin run --config /etc/tailjoin/config.json" \
  "${unit_sets[@]}" \
  -o "$tmpdir/tailjoin.service"

image_key=$( {
  echo "$base_key encrypted=$encrypted netboot=$netboot"
  [ -z "$seed_key" ] || sha256sum "$seed_key" | cut -d' ' -f1
  [ "$netboot" = 0 ] || hash_files netboot
  sha256sum "$agent" "$peers/tailscaled" "$peers/tailscale" "$config" "$tmpdir/tailjoin.service" | cut -d' ' -f1
  [ -z "$prov_ca" ] || sha256sum "$prov_ca" | cut -d' ' -f1
  hash_files guest/image
  [ ! -d "$peers/systemd" ] || sha256sum "$peers"/systemd/* | cut -d' ' -f1
  sed -n '/^# >>> image stage/,/^# <<< image stage/p' "$0"
} | sha256sum | cut -c1-16)
out=$cache/images/$image_key

# >>> image stage (this block is part of the image hash)
build_image() {
  local stage=$cache/images/.stage-$image_key.$$ r t0
  t0=$(date +%s%N)
  rm -rf "$stage"; mkdir -p "$stage"
  r=$stage/rootfs
  # Hard links: fast, and nothing below writes into a linked file (only new files are added).
  cp -al "$base/rootfs" "$r"
  install -D -m 0755 "$peers/tailscaled" "$r/usr/local/sbin/tailscaled"
  install -D -m 0755 "$peers/tailscale" "$r/usr/local/bin/tailscale"
  install -D -m 0755 "$agent" "$r/usr/local/bin/tailjoin"
  install -D -m 0644 "$config" "$r/etc/tailjoin/config.json"
  install -D -m 0644 "$tmpdir/tailjoin.service" "$r/etc/systemd/system/tailjoin.service"
  cp -a "$here/guest/image/." "$r/"
  # tailscale's own tailscale-online.target and tailscale-wait-online.service, unchanged, as a
  # distribution package installs them (their ExecStart is /usr/bin/tailscale).
  if [ -d "$peers/systemd" ]; then
    install -m 0644 "$peers"/systemd/* "$r/etc/systemd/system/"
    ln -sfn /usr/local/bin/tailscale "$r/usr/bin/tailscale"
  fi
  # The provisioner's CA certificate (public) for the kernel_cmdline source's ca_file.
  [ -z "$prov_ca" ] || install -D -m 0644 "$prov_ca" "$r/etc/tailjoin/prov-ca.pem"
  if [ "$encrypted" = 1 ]; then
    # The machine's host key for `systemd-creds encrypt --with-key=host`, made by the guest's
    # own systemd-creds for the guest's machine id (the secret records it, and systemd-creds
    # replaces a secret made for another machine id). A new file (mode 0400, one link), not
    # one of the base tree's hard links. The copy beside the image is what a provisioner keeps.
    chroot "$r" systemd-creds setup >"$stage/credential-setup.log" 2>&1 \
      || die "systemd-creds setup failed in the image: $(cat "$stage/credential-setup.log")"
    [ "$(stat -c '%a %h' "$r/var/lib/systemd/credential.secret")" = "400 1" ] \
      || die "credential.secret in the image is not mode 0400 with one link"
    install -m 0400 "$r/var/lib/systemd/credential.secret" "$stage/credential.secret"
  fi
  # The agent must run on the guest's libc (an agent built on a newer distribution may not).
  chroot "$r" /usr/local/bin/tailjoin --version >/dev/null 2>"$stage/agent-check.log" \
    || die "the agent $agent does not run in Debian $suite: $(cat "$stage/agent-check.log"); build it on $suite or link it statically"
  chown -R 0:0 "$r/usr/local" "$r/etc/tailjoin" "$r/etc/systemd/system"
  # The benchmark's baseline: the seed's oneshot with its key in the image, and no tailjoin.
  local units="tailscaled.service tailjoin.service tailjoin-collect.service tailjoin-test-late-tailscaled.service tailjoin-test-online-user.service tailjoin-test-after-tailjoin.service"
  if [ -n "$seed_key" ]; then
    units="tailscaled.service tailscale-autoconnect.service tailjoin-collect.service"
    install -D -m 0600 "$seed_key" "$r/etc/tailscale/authkey"
    python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["login_server"])' "$config" >"$r/etc/tailscale/login-server"
  fi
  # Enable the units the way `systemctl enable` would (WantedBy= symlinks), without chroot.
  local u wants
  for u in $units; do
    wants=$(sed -n 's/^WantedBy=//p' "$r/etc/systemd/system/$u")
    for w in $wants; do
      mkdir -p "$r/etc/systemd/system/$w.wants"
      ln -sfn "/etc/systemd/system/$u" "$r/etc/systemd/system/$w.wants/$u"
    done
  done
  local mb
  mb=$(du -sm "$r" | cut -f1)
  if [ "$netboot" = 1 ]; then
    # The initrd maker reads the kernel config and modules.dep from the tree's /boot and
    # /lib/modules (the squashfs leaves /boot out).
    "$here/netboot/make-initrd.sh" "$r" "$stage" >/dev/null || die "netboot/make-initrd.sh failed"
    rm -rf "$r"
    ln "$base/vmlinuz" "$stage/vmlinuz" 2>/dev/null || cp "$base/vmlinuz" "$stage/vmlinuz"
  else
    truncate -s $((mb + mb / 4 + 256))M "$stage/disk.img"
    mkfs.ext4 -q -F -L bootroot -E root_owner=0:0 -d "$r" "$stage/disk.img" \
      || die "mkfs.ext4 -d failed (e2fsprogs >= 1.43 needed)"
    rm -rf "$r"
    ln "$base/vmlinuz" "$stage/vmlinuz" 2>/dev/null || cp "$base/vmlinuz" "$stage/vmlinuz"
    ln "$base/initrd.img" "$stage/initrd.img" 2>/dev/null || cp "$base/initrd.img" "$stage/initrd.img"
  fi
  python3 - "$stage/manifest.json" <<EOF
import json, sys
json.dump({
  "image_key": "$image_key", "base_key": "$base_key", "suite": "$suite", "mirror": "$mirror",
  "kernel": open("$base/kernel.version").read().strip(),
  "systemd": open("$base/systemd.version").read().strip(),
  "debootstrap_seconds": int(open("$base/debootstrap.seconds").read()),
  "base_seconds": int(open("$base/base.seconds").read()),
  "rootfs_mb": $mb, "netboot": bool($netboot),
  "disk_bytes": $( [ "$netboot" = 1 ] && echo 0 || stat -c %s "$stage/disk.img"),
  "disk_used_bytes": $( [ "$netboot" = 1 ] && du -B1 "$stage/netboot-initrd.img" | cut -f1 || du -B1 "$stage/disk.img" | cut -f1),
  "image_seconds": round(($(date +%s%N) - $t0) / 1e9, 2),
  "agent": "$agent", "peers": "$peers",
  "credential": "none (kernel_cmdline)" if "$prov_ca" else "encrypted" if $encrypted else "plain",
  "push_credential": "$push_cred" or None,
  "base_rootfs": "$base/rootfs",
}, open(sys.argv[1], "w"), indent=1)
EOF
  rm -rf "$out"
  mv "$stage" "$out"
}
# <<< image stage

if [ ! -s "$out/manifest.json" ]; then
  mkdir -p "$cache/images"
  build_image
  log "image ready: $out ($(python3 -c 'import json,sys; m=json.load(open(sys.argv[1])); print("%s MB tree, %s MB on disk, %s s" % (m["rootfs_mb"], m["disk_used_bytes"] >> 20, m["image_seconds"]))' "$out/manifest.json"))"
  # Keep the eight newest images (a full run uses seven: netboot-tpm builds the netboot image
  # for its own headscale).
  ls -1dt "$cache"/images/*/ 2>/dev/null | tail -n +9 | xargs -r rm -rf
else
  # Newest again: the pruning above keeps the eight newest, so an image reused by this run must
  # not look older than the ones it builds afterwards (a run uses up to seven).
  touch "$out"
  log "image cached: $out"
fi
echo "$out"
