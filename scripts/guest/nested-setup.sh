#!/bin/bash
# Builds the nested guest of the guest tier: a tiny initramfs (virtio-gpu DRM modules and
# a static /init, scripts/guest/nested/fbtest.c) for the guest tier's own kernel
# (target/guest/vmlinuz), booted by a QEMU *inside* the guest tier
# (scripts/guest/nested/run-nested.sh). See scripts/guest/nested/README.md.
#
# Output: target/guest/nested/initramfs.img (gzip newc cpio). Idempotent: a stamp (hash
# of this script, fbtest.c and the guest tier's setup stamp) skips the work when nothing
# changed. Needs what scripts/guest/setup.sh needs, plus gcc with a static libc.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
G=$ROOT/target/guest
N=$G/nested
STAMP=$N/setup.stamp
SRC=$HERE/nested/fbtest.c

log() { echo "nested setup: $*"; }
die() {
    echo "nested setup: ERROR: $*" >&2
    exit 1
}

"$HERE/setup.sh"

want_stamp=$(cat "$HERE/nested-setup.sh" "$SRC" "$G/setup.stamp" "$G/kernel-release" | sha256sum | cut -d' ' -f1)
up_to_date() {
    [[ -f $STAMP && $(cat "$STAMP") == "$want_stamp" && -f $N/initramfs.img ]]
}
if up_to_date; then
    log "up to date: $N/initramfs.img ($(stat -c %s "$N/initramfs.img") bytes)"
    exit 0
fi

mkdir -p "$N"
exec 9>"$N/setup.lock"
flock 9
up_to_date && exit 0
rm -f "$STAMP"

KREL=$(cat "$G/kernel-release")
MODDIR=$G/kernel-$KREL/lib/modules/$KREL
HDR=$G/headers-$KREL/usr/src/linux-headers-${KREL%-amd64}-common/include/uapi/drm
[[ -f $MODDIR/modules.dep ]] || die "no $MODDIR/modules.dep (scripts/guest/setup.sh)"
[[ -f $HDR/drm_mode.h ]] || die "no DRM uapi headers in $HDR"

# DRM uapi headers: the host's linux-libc-dev (6.1) ships none; take the guest kernel's
# (not headers_install'ed: -D__user= stands in for the scrubbing).
INC=$N/include
rm -rf "$INC"
mkdir -p "$INC/drm"
cp "$HDR/drm.h" "$HDR/drm_mode.h" "$HDR/drm_fourcc.h" "$INC/drm/"

log "compiling fbtest.c (static)"
gcc -static -O2 -Wall -Wextra -Wno-sign-compare -Wno-missing-field-initializers \
    -D__user= -I"$INC" -o "$N/fbtest" "$SRC"
strip "$N/fbtest"

# Module closure in load order (dependencies first), from modules.dep.
declare -A seen=()
order=()
dep_line() {
    grep -E "(^|/)${1}\.ko(\.xz)?:" "$MODDIR/modules.dep" | head -n1
}
visit() {
    local name=$1 line dep
    [[ -n ${seen[$name]:-} ]] && return
    seen[$name]=1
    line=$(dep_line "$name") || die "module $name not in modules.dep"
    for dep in ${line#*:}; do
        dep=${dep##*/}
        visit "${dep%%.ko*}"
    done
    order+=("$name")
}
for m in drm drm_kms_helper drm_shmem_helper virtio_dma_buf virtio-gpu; do
    visit "$m"
done

IR=$N/initramfs-root
rm -rf "$IR"
mkdir -p "$IR"/{dev,proc,sys,lib/modules}
install -m 0755 "$N/fbtest" "$IR/init"
: >"$IR/lib/modules/load"
for name in "${order[@]}"; do
    path=$(dep_line "$name" | cut -d: -f1)
    case $path in
        *.xz) xz -dc "$MODDIR/$path" >"$IR/lib/modules/$name.ko" ;;
        *) cp "$MODDIR/$path" "$IR/lib/modules/$name.ko" ;;
    esac
    echo "$name" >>"$IR/lib/modules/load"
    log "module $name ($path, depends: $(modinfo -F depends "$IR/lib/modules/$name.ko"))"
done
(cd "$IR" && find . | LC_ALL=C sort | cpio -o -H newc --quiet -R 0:0 | gzip -9) >"$N/initramfs.img.tmp"
mv "$N/initramfs.img.tmp" "$N/initramfs.img"

echo "$want_stamp" >"$STAMP"
log "built $N/initramfs.img ($(stat -c %s "$N/initramfs.img") bytes; /init $(stat -c %s "$N/fbtest") bytes; modules: ${order[*]}) for kernel $KREL ($G/vmlinuz)"
