#!/usr/bin/env bash
# Makes the diskless boot test's initrd from an image tree: a busybox /init (netboot/init), the
# kernel modules it needs to mount the root (squashfs, loop, overlay, with their dependencies,
# where the kernel has them as modules) and the whole tree as root.squashfs, in one uncompressed
# newc cpio (the squashfs is compressed already; a second compression only costs the guest time).
#
#   tests/boot/netboot/make-initrd.sh TREE OUT_DIR
#
# Writes OUT_DIR/netboot-initrd.img and OUT_DIR/netboot.json (sizes, modules, compressor).
# Needs mksquashfs (squashfs-tools), cpio and a static busybox (busybox-static).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
die() { echo "tests/boot/netboot/make-initrd.sh: $*" >&2; exit 1; }
[ $# = 2 ] || die "usage: make-initrd.sh TREE OUT_DIR"
tree=$1 out=$2
[ -x "$tree/sbin/init" ] || [ -L "$tree/sbin/init" ] || die "$tree has no /sbin/init: not an image tree"
# shellcheck source=../deps.sh
. "$here/../deps.sh"
tj_boot_need mksquashfs:squashfs-tools cpio:cpio || die "cannot get squashfs-tools and cpio"
busybox=/bin/busybox
static_busybox() { [ -x "$busybox" ] && ! ldd "$busybox" >/dev/null 2>&1; }
if ! static_busybox; then
  echo "boot test: installing busybox-static" >&2
  apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends busybox-static >&2 \
    || die "cannot install busybox-static"
fi
static_busybox || die "$busybox is not a static busybox (apt-get install busybox-static)"

kver=$(basename "$(ls -d "$tree"/lib/modules/* | head -n1)")
moddir=$tree/lib/modules/$kver
config=$tree/boot/config-$kver
[ -s "$config" ] || die "no kernel config $config in the tree"
[ -s "$moddir/modules.dep" ] || die "no modules.dep in $moddir (run depmod in the tree)"

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage"/{bin,modules,dev}

# Modules in dependency order: each one after what it needs, once.
order=()
add_module() { # add_module RELATIVE_PATH (as modules.dep names it)
  local m=$1 dep line deps
  for dep in "${order[@]:-}"; do [ "$dep" = "$m" ] && return 0; done
  line=$(grep -m1 "^$m:" "$moddir/modules.dep") || die "$m is not in modules.dep"
  deps=${line#*:}
  for dep in $deps; do add_module "$dep"; done
  order+=("$m")
}
for opt in SQUASHFS:fs/squashfs/squashfs BLK_DEV_LOOP:drivers/block/loop OVERLAY_FS:fs/overlayfs/overlay; do
  sym=${opt%%:*} path=${opt#*:}
  case $(sed -n "s/^CONFIG_$sym=//p" "$config") in
    y) ;;
    m) rel=$(grep -o "^kernel/$path\.ko[^:]*" "$moddir/modules.dep" | head -n1)
       [ -n "$rel" ] || die "CONFIG_$sym=m but kernel/$path.ko is not in modules.dep"
       add_module "$rel" ;;
    *) die "the kernel has no CONFIG_$sym: it cannot mount a squashfs/overlay root" ;;
  esac
done
: >"$stage/modules/order"
for m in "${order[@]:-}"; do
  [ -n "$m" ] || continue
  name=$(basename "$m")
  case $name in
    *.ko) cp "$moddir/$m" "$stage/modules/$name" ;;
    *.ko.xz) xz -dc "$moddir/$m" >"$stage/modules/${name%.xz}"; name=${name%.xz} ;;
    *.ko.zst) zstd -qdc "$moddir/$m" >"$stage/modules/${name%.zst}"; name=${name%.zst} ;;
    *) die "unknown module format: $m" ;;
  esac
  echo "$name" >>"$stage/modules/order"
done

# The compressor the kernel can read, fastest to unpack first.
comp=""
for c in LZ4:lz4 ZSTD:zstd XZ:xz ZLIB:gzip; do
  if grep -q "^CONFIG_SQUASHFS_${c%%:*}=y" "$config"; then comp=${c#*:}; break; fi
done
[ -n "$comp" ] || die "the kernel's squashfs reads none of lz4, zstd, xz, gzip"

# The root: the whole tree but /boot (the kernel and its disk initrd travel separately).
# (Its warnings about the POSIX ACL xattrs of journal directories go to the log: harmless.)
mksquashfs "$tree" "$stage/root.squashfs" -comp "$comp" -noappend -no-progress -quiet \
  -e boot >"$stage/mksquashfs.log" 2>&1 || { tail -n 20 "$stage/mksquashfs.log" >&2; die "mksquashfs failed"; }
rm -f "$stage/mksquashfs.log"
install -m 0755 "$busybox" "$stage/bin/busybox"
install -m 0755 "$here/init" "$stage/init"
mkdir -p "$out"
(cd "$stage" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc --quiet -R 0:0) >"$out/netboot-initrd.img" \
  || die "cpio failed"
python3 - "$out/netboot.json" "$stage/root.squashfs" "$out/netboot-initrd.img" "$comp" "$kver" "$stage/modules/order" <<'PY'
import json, os, sys
dst, sq, initrd, comp, kver, order = sys.argv[1:]
json.dump({"squashfs_bytes": os.path.getsize(sq), "initrd_bytes": os.path.getsize(initrd),
           "compressor": comp, "kernel": kver,
           "modules": open(order).read().split()}, open(dst, "w"), indent=1)
PY
echo "$out/netboot-initrd.img"
