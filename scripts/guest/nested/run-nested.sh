#!/bin/bash
# Starts the nested guest (scripts/guest/nested-setup.sh builds it) in the background:
# a private dbus-daemon and QEMU (TCG) with a virtio-gpu-pci blob=true device shown by
# `-display dbus`. Meant to run INSIDE the guest tier (scripts/guest/run.sh), where
# /dev/udmabuf exists; blob=true needs it. See README.md next to this script.
#
#   run-nested.sh --dir DIR [--hugetlb] [--heads N] [--wait-done] [--timeout S] [--no-blob]
#   run-nested.sh --stop DIR
#
#   --dir DIR     where the bus, QMP socket, console.log, trace.log and pid files go
#                 (the guest tier's /tmp is guest-private: use the run directory or
#                 /var/tmp). Created if missing.
#   --hugetlb     guest RAM = 128 MiB memfd on 2 MiB hugetlb pages (the guest tier
#                 reserves 64) instead of a 256 MiB plain memfd
#   --heads N     virtio-gpu max_outputs=N, and fbtest.heads=N (fbtest drives N heads)
#   --wait-done   wait until console.log says "fbtest: done" (or ERROR, or QEMU exits);
#                 prints the seconds since QEMU started. Exit status 1 on failure.
#   --timeout S   for --wait-done (default 600)
#   --no-blob     blob=false (a host without /dev/udmabuf; for trying fbtest quickly)
#   --gl-on NODE  -display dbus,gl=on,rendernode=NODE with Mesa's software GBM
#                 (GBM_ALWAYS_SOFTWARE=1; in the guest tier NODE=/dev/dri/card1, vkms):
#                 blob scanouts then reach the display as ScanoutDMABUF (the udmabuf)
#   --stop DIR    kill the QEMU and dbus-daemon recorded in DIR
# Environment: NESTED_DISPLAY overrides "-display dbus,addr=unix:path=DIR/bus".
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../../.." && pwd)
G=$ROOT/target/guest

dir= hugetlb=0 heads=1 wait_done=0 timeout_s=600 blob=true stop= gl_node=
while (($#)); do
    case $1 in
        --dir) dir=$2; shift 2 ;;
        --hugetlb) hugetlb=1; shift ;;
        --heads) heads=$2; shift 2 ;;
        --wait-done) wait_done=1; shift ;;
        --timeout) timeout_s=$2; shift 2 ;;
        --no-blob) blob=false; shift ;;
        --gl-on) gl_node=$2; shift 2 ;;
        --stop) stop=$2; shift 2 ;;
        *) echo "run-nested: unknown argument $1" >&2; exit 2 ;;
    esac
done

if [[ -n $stop ]]; then
    for f in qemu.pid dbus.pid; do
        [[ -s $stop/$f ]] && kill "$(cat "$stop/$f")" 2>/dev/null || true
    done
    exit 0
fi

[[ -n $dir ]] || { echo "run-nested: --dir DIR is required" >&2; exit 2; }
[[ -f $G/nested/initramfs.img && -f $G/vmlinux ]] \
    || { echo "run-nested: run scripts/guest/nested-setup.sh first (on the host)" >&2; exit 1; }
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
rm -f "$dir/bus" "$dir/qmp" "$dir/console.log" "$dir/trace.log" "$dir/qemu.log"

display=${NESTED_DISPLAY:-}
dbus_pid=
if [[ -z $display ]]; then
    dbus-daemon --session --nofork --address="unix:path=$dir/bus" \
        >"$dir/dbus.log" 2>&1 </dev/null &
    dbus_pid=$!
    echo "$dbus_pid" >"$dir/dbus.pid"
    for _ in $(seq 100); do
        [[ -S $dir/bus ]] && break
        kill -0 "$dbus_pid" 2>/dev/null || { cat "$dir/dbus.log" >&2; echo "run-nested: dbus-daemon exited" >&2; exit 1; }
        sleep 0.1
    done
    [[ -S $dir/bus ]] || { echo "run-nested: no bus socket after 10 s" >&2; exit 1; }
    display="dbus,addr=unix:path=$dir/bus"
    if [[ -n $gl_node ]]; then
        [[ -e $gl_node ]] || { echo "run-nested: --gl-on $gl_node: no such node" >&2; exit 1; }
        display="dbus,gl=on,rendernode=$gl_node,addr=unix:path=$dir/bus"
        export GBM_ALWAYS_SOFTWARE=1
    fi
fi

if ((hugetlb)); then
    mem=(-object memory-backend-memfd,id=m,size=128M,hugetlb=on,hugetlbsize=2M -m 128M)
else
    mem=(-object memory-backend-memfd,id=m,size=256M -m 256M)
fi
gpu="virtio-gpu-pci,id=gpu,blob=$blob,xres=1024,yres=768"
# acpi=off: the nested guest needs PCI (virtio-gpu, MSI-X) and a serial port, no ACPI
# (ACPI's init is about 0.3 s of a 7 s boot one level down).
append="console=ttyS0 quiet panic=-1 acpi=off"
if ((heads > 1)); then
    gpu+=",max_outputs=$heads"
    append+=" fbtest.heads=$heads"
fi

cmd=(qemu-system-x86_64
    -machine pc,accel=tcg,memory-backend=m "${mem[@]}"
    -smp 1 -cpu max -nodefaults -no-user-config -no-reboot -vga none
    -device "$gpu"
    -display "$display"
    -qmp "unix:$dir/qmp,server=on,wait=off"
    -serial "file:$dir/console.log"
    -kernel "$G/vmlinux" -initrd "$G/nested/initramfs.img"
    -append "$append"
    -trace virtio_gpu_cmd_set_scanout_blob -trace virtio_gpu_cmd_res_create_blob
    -trace virtio_gpu_cmd_set_scanout -trace virtio_gpu_cmd_res_flush
    -D "$dir/trace.log")
printf '%q ' "${cmd[@]}" >"$dir/qemu.cmd"
echo >>"$dir/qemu.cmd"
start=$(date +%s.%N)
"${cmd[@]}" >"$dir/qemu.log" 2>&1 </dev/null &
qemu_pid=$!
echo "$qemu_pid" >"$dir/qemu.pid"
echo "$start" >"$dir/start-time"
echo "run-nested: qemu pid $qemu_pid${dbus_pid:+, dbus-daemon pid $dbus_pid}, dir $dir"
echo "run-nested: $(cat "$dir/qemu.cmd")"

((wait_done)) || exit 0
elapsed() { echo "$(date +%s.%N) $start" | awk '{ printf "%.1f", $1 - $2 }'; }
deadline=$((SECONDS + timeout_s))
while ((SECONDS < deadline)); do
    if grep -q 'fbtest: done' "$dir/console.log" 2>/dev/null; then
        echo "run-nested: fbtest done $(elapsed) s after QEMU started"
        exit 0
    fi
    if grep -q 'fbtest: ERROR' "$dir/console.log" 2>/dev/null; then
        echo "run-nested: fbtest failed after $(elapsed) s:" >&2
        grep 'fbtest: ERROR' "$dir/console.log" >&2
        exit 1
    fi
    if ! kill -0 "$qemu_pid" 2>/dev/null; then
        echo "run-nested: QEMU exited after $(elapsed) s" >&2
        cat "$dir/qemu.log" >&2
        tail -n 20 "$dir/console.log" >&2 2>/dev/null || true
        exit 1
    fi
    sleep 1
done
echo "run-nested: no 'fbtest: done' within $timeout_s s ($(elapsed) s)" >&2
tail -n 20 "$dir/console.log" >&2 2>/dev/null || true
exit 1
