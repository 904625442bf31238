#!/bin/bash
# Boots the nested guest inside the guest tier and checks its final picture.
#
#   scripts/guest/nested/verify.sh [NAME] [run-nested.sh options: --hugetlb, --heads N]
#
# On the host: builds (nested-setup.sh), then runs itself in the guest tier
# (scripts/guest/run.sh, GUESTFB_GUEST_TIMEOUT=900, run directory kept) and copies
# console.log, trace.log, qemu.cmd and the screendumps to target/guest/nested/last-run/NAME/.
# In the guest: run-nested.sh --wait-done, QMP screendump of every head (PNG + PPM),
# pixel check against fbtest's final picture (qmp-shot.py), trace check for
# set_scanout_blob / res_create_blob (unless --no-blob).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../../.." && pwd)

name=${1:-default}
shift || true
heads=1 blob=1
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
    [[ ${args[i]} == --heads ]] && heads=${args[i + 1]}
    [[ ${args[i]} == --no-blob ]] && blob=0
done

if [[ ${GUESTFB_IN_GUEST:-0} != 1 ]]; then
    "$ROOT/scripts/guest/nested-setup.sh"
    out=$ROOT/target/guest/nested/last-run/$name
    rc=0
    log=$(mktemp)
    GUESTFB_GUEST_KEEP=1 GUESTFB_GUEST_TIMEOUT=${GUESTFB_GUEST_TIMEOUT:-900} \
        "$ROOT/scripts/guest/run.sh" "$HERE/verify.sh" "$name" "$@" 2>&1 | tee "$log" || rc=$?
    run=$(sed -n 's/^verify: run directory \(.*\)$/\1/p' "$log" | head -n1)
    rm -f "$log"
    if [[ -n $run && -d $run/nested ]]; then
        rm -rf "$out"
        mkdir -p "$out"
        cp "$run"/nested/{console.log,trace.log,qemu.cmd,qemu.log,run-nested.log,*.png,*.ppm,times} "$out/" 2>/dev/null || true
        cp "$run"/stdout "$out/verify.log" 2>/dev/null || true
        echo "verify: results in $out"
    fi
    ((rc == 0)) && echo "verify: PASS" || echo "verify: FAIL (rc $rc)"
    exit "$rc"
fi

# --- in the guest tier ------------------------------------------------------------------
run=
for arg in $(cat /proc/cmdline); do
    case $arg in guestfb.run=*) run=${arg#*=} ;; esac
done
[[ -n $run ]] || { echo "verify: no guestfb.run= (not in the guest tier?)" >&2; exit 1; }
echo "verify: run directory $run"
D=$run/nested
mkdir -p "$D"
[[ -c /dev/udmabuf ]] && echo "verify: /dev/udmabuf present" || echo "verify: no /dev/udmabuf"
echo "verify: hugepages free: $(cat /proc/sys/vm/nr_hugepages) reserved, $(awk '/HugePages_Free/ {print $2}' /proc/meminfo) free"

t0=$SECONDS
rc=0
"$HERE/run-nested.sh" --dir "$D" --wait-done --timeout 700 "$@" 2>&1 | tee "$D/run-nested.log" || true
rc=${PIPESTATUS[0]}
if ((rc != 0)); then
    echo "verify: run-nested failed (rc $rc)"
    tail -n 30 "$D/console.log" 2>/dev/null || true
    "$HERE/run-nested.sh" --stop "$D"
    exit 1
fi
fail=0
for ((h = 0; h < heads; h++)); do
    # The final picture is at fbtest's second mode (800x600 on QEMU's mode list).
    # (No process substitution: the guest tier's devtmpfs has no /dev/fd.)
    mode=$(grep -o "fbtest: head $h mode [0-9]*x[0-9]*" "$D/console.log" | tail -n1)
    mode=${mode##* }
    W=${mode%x*} H=${mode#*x}
    /usr/bin/python3 "$HERE/qmp-shot.py" "$D/qmp" "$D/head$h.png" --head "$h" --check "$h" "$W" "$H" \
        || fail=1
done
echo "verify: trace: $(grep -c virtio_gpu_cmd_res_create_blob "$D/trace.log" || true) res_create_blob," \
    "$(grep -c virtio_gpu_cmd_set_scanout_blob "$D/trace.log" || true) set_scanout_blob," \
    "$(grep -c 'virtio_gpu_cmd_set_scanout ' "$D/trace.log" || true) set_scanout," \
    "$(grep -c virtio_gpu_cmd_res_flush "$D/trace.log" || true) res_flush"
if ((blob)); then
    grep -q virtio_gpu_cmd_set_scanout_blob "$D/trace.log" || { echo "verify: no set_scanout_blob"; fail=1; }
    grep -q virtio_gpu_cmd_res_create_blob "$D/trace.log" || { echo "verify: no res_create_blob"; fail=1; }
fi
# Still flipping after "done"?
n1=$(grep -c . "$D/trace.log")
sleep 3
n2=$(grep -c . "$D/trace.log")
echo "verify: trace lines grew $n1 -> $n2 in 3 s after the screendumps"
grep -E 'fbtest: (head .* mode|done|connector)' "$D/console.log"
{
    grep 'fbtest done' "$D/run-nested.log" || true
    grep -o 'fbtest: done ([0-9]* s after start)' "$D/console.log" | head -n1 || true
    echo "verify: total $((SECONDS - t0)) s in the guest tier"
} | tee "$D/times"
"$HERE/run-nested.sh" --stop "$D"
exit "$fail"
