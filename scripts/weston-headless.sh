#!/bin/sh
# A headless weston (14, bookworm-backports) for trying the Wayland presenters by hand.
#
#   eval "$(scripts/weston-headless.sh start [--width W] [--height H] [--scale S]
#                                             [--renderer gl|pixman] [--kiosk] [--name NAME])"
#       starts weston in its own process group with a fresh 0700 XDG_RUNTIME_DIR, waits
#       until its socket accepts clients, and prints WAYLAND_DISPLAY, XDG_RUNTIME_DIR,
#       WESTON_PID and WESTON_PGID as shell assignments. W and H are logical pixels (the
#       output mode is W*S x H*S).
#   scripts/weston-headless.sh screenshot OUT.png
#       captures the output (uses WAYLAND_DISPLAY and XDG_RUNTIME_DIR from the environment).
#   scripts/weston-headless.sh stop [RUNTIME_DIR]
#       ends weston's whole process group (the desktop shell starts helpers) and removes
#       the runtime folder (default: $XDG_RUNTIME_DIR).
set -eu

die() { echo "weston-headless: $*" >&2; exit 1; }

start() {
    width=800 height=600 scale=1 renderer=pixman shell=desktop name="guestfb-$$"
    while [ $# -gt 0 ]; do
        case "$1" in
            --width) width=$2; shift 2 ;;
            --height) height=$2; shift 2 ;;
            --scale) scale=$2; shift 2 ;;
            --renderer) renderer=$2; shift 2 ;;
            --kiosk) shell=kiosk; shift ;;
            --name) name=$2; shift 2 ;;
            *) die "unknown option $1" ;;
        esac
    done
    command -v weston >/dev/null || die "weston is not installed (apt-get install -t bookworm-backports weston)"
    runtime=$(mktemp -d "${TMPDIR:-/tmp}/weston-$name.XXXXXX")
    chmod 0700 "$runtime"
    # setsid: weston leads its own process group, so `stop` can end all of it.
    XDG_RUNTIME_DIR=$runtime setsid weston --backend=headless --socket="$name" \
        --width="$width" --height="$height" --scale="$scale" --renderer="$renderer" \
        --shell="$shell" --debug --idle-time=0 --no-config \
        </dev/null >"$runtime/weston.log" 2>&1 &
    pid=$!
    echo "$pid" >"$runtime/weston.pid"
    # The socket file exists from bind(); a client is accepted only after listen().
    tries=0
    until [ -S "$runtime/$name" ] &&
        XDG_RUNTIME_DIR=$runtime WAYLAND_DISPLAY=$name wayland-info >/dev/null 2>&1; do
        if ! kill -0 "$pid" 2>/dev/null; then
            cat "$runtime/weston.log" >&2
            die "weston exited during start-up (log above)"
        fi
        tries=$((tries + 1))
        [ "$tries" -lt 200 ] || { stop_dir "$runtime"; die "weston did not start in 10 s"; }
        sleep 0.05
    done
    pgid=$(ps -o pgid= -p "$pid" | tr -d ' ')
    echo "WAYLAND_DISPLAY=$name XDG_RUNTIME_DIR=$runtime WESTON_PID=$pid WESTON_PGID=$pgid"
    echo "export WAYLAND_DISPLAY XDG_RUNTIME_DIR WESTON_PID WESTON_PGID"
}

stop_dir() {
    runtime=$1
    [ -f "$runtime/weston.pid" ] || die "$runtime/weston.pid not found"
    pid=$(cat "$runtime/weston.pid")
    # weston was started by setsid, so its pid is its process group id.
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "-$pid" 2>/dev/null || true
        i=0
        while kill -0 "$pid" 2>/dev/null && [ $i -lt 60 ]; do sleep 0.05; i=$((i + 1)); done
    fi
    kill -KILL "-$pid" 2>/dev/null || true
    rm -rf "$runtime"
}

screenshot() {
    out=${1:?usage: screenshot OUT.png}
    : "${WAYLAND_DISPLAY:?set WAYLAND_DISPLAY}" "${XDG_RUNTIME_DIR:?set XDG_RUNTIME_DIR}"
    # File names have one-second resolution: one fresh folder per shot.
    shot=$(mktemp -d "${TMPDIR:-/tmp}/weston-shot.XXXXXX")
    (cd "$shot" && weston-screenshooter) || true
    png=$(find "$shot" -name '*.png' | head -n 1)
    # weston-screenshooter exits 0 even when weston (without --debug) refuses it.
    [ -n "$png" ] || { rm -rf "$shot"; die "no screenshot written (is weston running with --debug?)"; }
    mv "$png" "$out"
    rm -rf "$shot"
    echo "$out"
}

case "${1:-}" in
    start) shift; start "$@" ;;
    stop) stop_dir "${2:-${XDG_RUNTIME_DIR:?give the runtime folder}}" ;;
    screenshot) screenshot "${2:-}" ;;
    *) die "usage: $0 start [options] | stop [RUNTIME_DIR] | screenshot OUT.png" ;;
esac
