#!/bin/bash
# Prepares the guest tier: a Debian 6.12 kernel (CONFIG_UDMABUF=y), its modules, an
# out-of-tree vkms with writeback clones enabled, and a busybox initramfs whose /init
# runs a command file from the host (see scripts/guest/init and run.sh).
#
# Everything is cached under target/guest/. Idempotent: a second run checks one stamp
# (a hash of this script, the init script and the vkms patch) and returns at once. The
# kernel ABI is the one current when the cache was made; GUESTFB_GUEST_REFRESH=1 (or
# deleting target/guest/) picks up a newer Debian kernel.
#
# Only `apt-get download` + `dpkg-deb -x`: never installs a linux-* package on the host.
# Needs: apt-get, dpkg-deb, depmod/modinfo (kmod), busybox-static, cpio, gzip, xz, make,
# gcc, patch, pahole (scripts/setup-host.sh installs them).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
G=$ROOT/target/guest
STAMP=$G/setup.stamp
# The kernel series the guest runs; the exact ABI comes from the archive's metapackage.
SERIES=6.12

log() { echo "guest setup: $*"; }
die() {
    echo "guest setup: ERROR: $*" >&2
    exit 1
}

want_stamp=$(cat "$HERE/setup.sh" "$HERE/init" "$HERE/vkms-writeback-clones.patch" | sha256sum | cut -d' ' -f1)
up_to_date() {
    [[ ${GUESTFB_GUEST_REFRESH:-0} != 1 && -f $STAMP && $(cat "$STAMP") == "$want_stamp" \
        && -f $G/vmlinuz && -f $G/vmlinux && -f $G/initramfs.img ]]
}
up_to_date && exit 0

mkdir -p "$G/debs"
# One setup at a time (two test runs started together); the second finds it done.
exec 9>"$G/setup.lock"
flock 9
up_to_date && exit 0

start=$SECONDS
rm -f "$STAMP"

# --- ABI -----------------------------------------------------------------------------
if [[ -n ${GUESTFB_GUEST_ABI:-} ]]; then
    ABI=$GUESTFB_GUEST_ABI
else
    image_pkg=$(apt-cache depends "linux-image-$SERIES-amd64" 2>/dev/null \
        | awk '/Depends: linux-image-/ { print $2; exit }')
    [[ -n $image_pkg ]] || die "apt-cache knows no linux-image-$SERIES-amd64 (run scripts/setup-host.sh, apt-get update)"
    ABI=${image_pkg#linux-image-}
    ABI=${ABI%-amd64}
fi
KREL=$ABI-amd64
log "kernel ABI $ABI (release $KREL)"

# --- Download ------------------------------------------------------------------------
kbuild_pkg=linux-kbuild-$ABI
if ! apt-cache show "$kbuild_pkg" >/dev/null 2>&1; then
    kbuild_pkg=linux-kbuild-$SERIES
    apt-cache show "$kbuild_pkg" >/dev/null 2>&1 || die "no linux-kbuild package for $ABI"
fi
packages=(
    "linux-image-$KREL-unsigned"
    "linux-headers-$KREL"
    "linux-headers-$ABI-common"
    "$kbuild_pkg"
    "linux-source-$SERIES"
)
deb_of() { ls "$G/debs/$1"_*.deb 2>/dev/null | head -n1; }
missing=()
for pkg in "${packages[@]}"; do
    [[ -n $(deb_of "$pkg") ]] || missing+=("$pkg")
done
if ((${#missing[@]})); then
    log "downloading ${missing[*]}"
    (cd "$G/debs" && apt-get download -q "${missing[@]}" 2>&1 | grep -v -e '^W: Download is performed unsandboxed' -e '^Get:' -e '^Fetched' || true)
    for pkg in "${missing[@]}"; do
        [[ -n $(deb_of "$pkg") ]] || die "apt-get download $pkg failed"
    done
fi

# --- Kernel image and modules ---------------------------------------------------------
KROOT=$G/kernel-$KREL
if [[ ! -f $KROOT/.done ]]; then
    log "unpacking the kernel image"
    rm -rf "$KROOT"
    mkdir -p "$KROOT"
    dpkg-deb -x "$(deb_of "linux-image-$KREL-unsigned")" "$KROOT"
    depmod -b "$KROOT" "$KREL"
    grep -q '^CONFIG_UDMABUF=y' "$KROOT/boot/config-$KREL" || die "kernel $KREL lacks CONFIG_UDMABUF=y"
    touch "$KROOT/.done"
fi
MODDIR=$KROOT/lib/modules/$KREL

# --- Headers ---------------------------------------------------------------------------
HROOT=$G/headers-$KREL
HDIR=$HROOT/usr/src/linux-headers-$KREL
if [[ ! -f $HROOT/.done ]]; then
    log "unpacking kernel headers and kbuild"
    rm -rf "$HROOT"
    mkdir -p "$HROOT"
    for pkg in "linux-headers-$KREL" "linux-headers-$ABI-common" "$kbuild_pkg"; do
        dpkg-deb -x "$(deb_of "$pkg")" "$HROOT"
    done
    # The -amd64 Makefile includes the -common one by absolute path.
    grep -q "/usr/src/linux-headers-$ABI-common" "$HDIR/Makefile" \
        || die "unexpected $HDIR/Makefile: no include of linux-headers-$ABI-common"
    sed -i "s|/usr/src/linux-headers-$ABI-common|$HROOT/usr/src/linux-headers-$ABI-common|g" "$HDIR/Makefile"
    touch "$HROOT/.done"
fi

# --- vkms (not built by Debian) ----------------------------------------------------------
VKMS=$G/vkms-$KREL
if [[ ! -f $VKMS/vkms.ko ]]; then
    log "extracting vkms from linux-source-$SERIES"
    rm -rf "$VKMS" "$G/src"
    mkdir -p "$G/src"
    dpkg-deb --fsys-tarfile "$(deb_of "linux-source-$SERIES")" \
        | tar -xO "./usr/src/linux-source-$SERIES.tar.xz" \
        | tar -xJ -C "$G/src" --wildcards "linux-source-$SERIES/drivers/gpu/drm/vkms/*"
    mv "$G/src/linux-source-$SERIES/drivers/gpu/drm/vkms" "$VKMS"
    rm -rf "$G/src"
    log "patching vkms: writeback encoder clones"
    if ! patch -d "$VKMS" -p5 --forward --batch --no-backup-if-mismatch \
        <"$HERE/vkms-writeback-clones.patch"; then
        die "scripts/guest/vkms-writeback-clones.patch does not apply to vkms of $ABI; update it"
    fi
    grep -q 'output->wb_connector.encoder.possible_clones = clones' "$VKMS/vkms_output.c" \
        || die "vkms patch did not take effect"
    log "building vkms.ko"
    make -s -C "$HDIR" M="$VKMS" CONFIG_DRM_VKMS=m modules >"$G/vkms-build.log" 2>&1 \
        || { tail -n 30 "$G/vkms-build.log" >&2; die "vkms build failed (log: $G/vkms-build.log)"; }
    [[ -f $VKMS/vkms.ko ]] || die "vkms build made no vkms.ko"
fi

# --- initramfs -------------------------------------------------------------------------
BUSYBOX=/bin/busybox
[[ -x $BUSYBOX ]] && file_is_static=$(ldd "$BUSYBOX" 2>&1 | grep -c 'not a dynamic' || true)
[[ -x $BUSYBOX && ${file_is_static:-0} -ge 1 ]] || die "need a static /bin/busybox (busybox-static)"

log "building the initramfs"
IR=$G/initramfs-root
rm -rf "$IR"
mkdir -p "$IR"/{bin,sbin,usr/bin,usr/sbin,dev,proc,sys,lower,upper,newroot,run,lib/modules}
cp "$BUSYBOX" "$IR/bin/busybox"
ln -s busybox "$IR/bin/sh"
install -m 0755 "$HERE/init" "$IR/init"

# Module closure in load order (dependencies first), from modules.dep and vkms' modinfo.
declare -A seen=()
order=()
deps_of() {
    local name=$1
    if [[ $name == vkms ]]; then
        modinfo -F depends "$VKMS/vkms.ko" | tr ',' ' '
        return
    fi
    local line
    line=$(grep -E "/${name}\.ko(\.xz)?:" "$MODDIR/modules.dep" | head -n1) \
        || die "module $name not in modules.dep"
    for dep in ${line#*:}; do
        dep=${dep##*/}
        echo "${dep%%.ko*}"
    done
}
visit() {
    local name=${1//-/_}
    [[ -n ${seen[$name]:-} ]] && return
    seen[$name]=1
    local dep
    for dep in $(deps_of "$name"); do
        visit "$dep"
    done
    order+=("$name")
}
for m in netfs 9pnet 9pnet_virtio 9p overlay drm drm_kms_helper drm_shmem_helper vgem vkms; do
    visit "$m"
done
: >"$IR/lib/modules/load"
for name in "${order[@]}"; do
    if [[ $name == vkms ]]; then
        cp "$VKMS/vkms.ko" "$IR/lib/modules/vkms.ko"
        echo "vkms enable_writeback=1" >>"$IR/lib/modules/load"
        continue
    fi
    path=$(grep -E "/${name}\.ko(\.xz)?:" "$MODDIR/modules.dep" | head -n1 | cut -d: -f1)
    case $path in
        *.xz) xz -dc "$MODDIR/$path" >"$IR/lib/modules/$name.ko" ;;
        *) cp "$MODDIR/$path" "$IR/lib/modules/$name.ko" ;;
    esac
    echo "$name" >>"$IR/lib/modules/load"
done
log "modules: ${order[*]}"
(cd "$IR" && find . | LC_ALL=C sort | cpio -o -H newc --quiet -R 0:0 | gzip -6) >"$G/initramfs.img.tmp"
mv "$G/initramfs.img.tmp" "$G/initramfs.img"
cp "$KROOT/boot/vmlinuz-$KREL" "$G/vmlinuz"
# The same kernel as the uncompressed ELF inside the bzImage (zstd). It carries a PVH
# entry note (CONFIG_PVH), so QEMU's -kernel starts it directly: no real-mode setup, no
# decompression under TCG. Measured: a quarter of a nested boot (9.6 s -> 7.1 s one level
# down), 1-2 s of each guest-tier boot. run.sh and nested/run-nested.sh boot this file.
offset=$(LC_ALL=C grep -obUaP '\x28\xb5\x2f\xfd' "$G/vmlinuz" | head -n1 | cut -d: -f1)
[[ -n $offset ]] || die "no zstd stream in $G/vmlinuz (the kernel is not zstd-compressed?)"
# zstd stops at the end of its frame and complains about the bzImage's trailer after it.
tail -c +"$((offset + 1))" "$G/vmlinuz" | zstd -dcq 2>/dev/null >"$G/vmlinux.tmp" || true
readelf -n "$G/vmlinux.tmp" 2>/dev/null | grep -q 'Xen.*0x00000012' \
    || die "$G/vmlinux.tmp from $G/vmlinuz is not an ELF kernel with a PVH entry note"
mv "$G/vmlinux.tmp" "$G/vmlinux"
echo "$KREL" >"$G/kernel-release"

echo "$want_stamp" >"$STAMP"
log "ready in $((SECONDS - start)) s: $G/vmlinuz, $G/vmlinux, $G/initramfs.img ($(du -h "$G/initramfs.img" | cut -f1))"
