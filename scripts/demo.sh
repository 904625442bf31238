#!/bin/bash
# The main job of guestfb: the viewer showing the built-in demo guest.
#
#   scripts/demo.sh [viewer options...]      (e.g. --size 1280x720 --format XBGR8888)
#
# Installs what it needs (scripts/setup-host.sh, as root on Debian 12), builds the
# viewer, and runs it. With a Wayland compositor (WAYLAND_DISPLAY set) the window
# appears there and runs until closed. Without one it starts its own headless weston,
# shows 120 frames, and writes two screenshots under target/demo/: what the compositor
# shows (screenshot-compositor.png) and what the viewer presented (screenshot-viewer.png).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
if ! command -v cargo >/dev/null 2>&1 && [[ -f $HOME/.cargo/env ]]; then
    # shellcheck source=/dev/null
    source "$HOME/.cargo/env"
fi

scripts/setup-host.sh
cargo build --release --example viewer
VIEWER=$ROOT/target/release/examples/viewer
OUT=$ROOT/target/demo
mkdir -p "$OUT"

if [[ -n ${WAYLAND_DISPLAY:-} ]]; then
    echo "demo: showing the demo guest on $WAYLAND_DISPLAY (close the window to end)"
    exec "$VIEWER" --screenshot "$OUT/screenshot-viewer.png" "$@"
fi

FRAMES=120
SIZE=1024x768
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
    case ${args[i]} in
        --size) SIZE=${args[i + 1]:-$SIZE} ;;
        --size=*) SIZE=${args[i]#--size=} ;;
    esac
done
# The output matches the guest, so the picture is shown 1:1.
width=${SIZE%[xX]*} height=${SIZE#*[xX]}

echo "demo: no WAYLAND_DISPLAY: starting a headless weston (${width}x${height}, GL renderer)"
eval "$(scripts/weston-headless.sh start --kiosk --renderer gl --width "$width" --height "$height" --name guestfb-demo)"
cleanup() {
    [[ -n ${viewer_pid:-} ]] && kill "$viewer_pid" 2>/dev/null || true
    scripts/weston-headless.sh stop "$XDG_RUNTIME_DIR" >/dev/null 2>&1 || true
}
trap cleanup EXIT

log=$OUT/viewer.log
rm -f "$OUT"/screenshot-*.png
: >"$log"
"$VIEWER" --frames "$FRAMES" --hold --screenshot "$OUT/screenshot-viewer.png" "$@" >"$log" 2>&1 &
viewer_pid=$!
for _ in $(seq 1 600); do
    grep -q "^viewer: presented $FRAMES frames" "$log" && break
    kill -0 "$viewer_pid" 2>/dev/null || { cat "$log"; echo "demo: the viewer failed" >&2; exit 1; }
    sleep 0.1
done
grep -q "^viewer: presented $FRAMES frames" "$log" || { cat "$log"; echo "demo: the viewer did not finish" >&2; exit 1; }
sleep 0.2
scripts/weston-headless.sh screenshot "$OUT/screenshot-compositor.png"
kill "$viewer_pid" && wait "$viewer_pid" 2>/dev/null || true
viewer_pid=
cat "$log"
echo "demo: the compositor's screenshot: $OUT/screenshot-compositor.png"
echo "demo: the viewer's own picture:    $OUT/screenshot-viewer.png"
