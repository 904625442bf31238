#!/bin/bash
# Installs what guestfb's commands need on a Debian 12 (bookworm) machine, as root.
# Idempotent: a second run only checks and returns in well under a second.
#
# - bookworm-backports is added with the same mirror the machine already uses (read
#   from its apt sources), so nothing here names a mirror.
# - From backports: QEMU 10 (guest tier), weston 14 + Mesa 25 (headless compositor,
#   EGL dma-buf import on the software device), and QEMU's D-Bus display module
#   (ui-dbus.so, in qemu-system-modules-opengl) for the QEMU frame source tests.
# - dbus-daemon for a private session bus per QEMU test; seabios + ipxe-qemu so that
#   `-vga std -nodefaults` shows the firmware screen (VGA BIOS, option ROMs).
# - g++ for libFuzzer, which the fuzz targets link (built by the test command).
# - Never installs a linux-image/linux-headers package: the guest kernel is unpacked
#   under target/ by scripts/guest/setup.sh.
set -euo pipefail

STAMP=/var/lib/guestfb/setup-host.v5
if [[ -f $STAMP ]]; then
    exit 0
fi
if [[ $(id -u) != 0 ]]; then
    echo "setup-host: must run as root to install packages" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive

if ! grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
    mirror=$(cat /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null \
        | grep -E '^(URIs:|deb )' | grep -v security \
        | sed -E 's/^URIs:[[:space:]]*//; s/^deb (\[[^]]*\] )?//' \
        | awk '{print $1}' | grep -E '/debian/?$' | head -n1 || true)
    if [[ -z $mirror ]]; then
        echo "setup-host: no Debian mirror found in apt sources to add bookworm-backports" >&2
        exit 1
    fi
    echo "setup-host: adding bookworm-backports from $mirror"
    cat >/etc/apt/sources.list.d/guestfb-backports.sources <<SRC
Types: deb
URIs: $mirror
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
fi

apt-get update -qq
apt-get install -y -qq --no-install-recommends -t bookworm-backports \
    qemu-system-x86 weston wayland-utils libgbm-dev libegl-mesa0 libgl1-mesa-dri \
    libegl1 libgles2 libwayland-egl1 qemu-system-modules-opengl seabios >/dev/null
apt-get install -y -qq --no-install-recommends \
    dbus-daemon ipxe-qemu xvfb xdotool busybox-static pahole kmod cpio xz-utils zstd gzip libpixman-1-dev pkg-config \
    patch make gcc g++ >/dev/null

# QEMU's D-Bus display lives in a module; without it `-display dbus` fails at run time.
if ! dpkg -L qemu-system-modules-opengl | grep -q '/ui-dbus\.so$'; then
    echo "setup-host: qemu-system-modules-opengl has no ui-dbus.so (QEMU -display dbus)" >&2
    exit 1
fi

mkdir -p "$(dirname "$STAMP")"
touch "$STAMP"
echo "setup-host: packages installed"
